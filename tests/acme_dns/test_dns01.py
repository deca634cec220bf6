"""dns01.make_publisher and GatewayPublisher on loopback; the TSIG secret file; acme-dns metrics."""

from __future__ import annotations

import base64
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from wiregate.acme.dns01 import GatewayLink, GatewayPublisher, Rfc2136Publisher, make_publisher, read_tsig_secret
from wiregate.acme.errors import AcmeError
from wiregate.dnsserver.channel import PublishHandler, SiteGrant
from wiregate.dnsserver.server import AcmeDnsService, AcmeDnsSpec, PublishServer
from wiregate.errors import ConfigError
from wiregate.metrics import StatusCollector
from wiregate.status import AcmeDnsStatus, NodeStatus, from_json
from wiregate.testing.peers import free_port

ZONE = "acme.vps.example.net"
V = "v" * 43
SECRET = base64.b64encode(bytes(range(32))).decode()


def _secret(tmp: Path, text: str, mode: int = 0o600) -> Path:
    p = tmp / "tsig.key"
    p.write_text(text)
    p.chmod(mode)
    return p


def test_tsig_secret_file_plain_or_bind_key_block_and_never_echoed(tmp_path: Path) -> None:
    assert read_tsig_secret(_secret(tmp_path, SECRET + "\n")) == bytes(range(32))
    block = f'key "wiregate." {{\n\talgorithm hmac-sha256;\n\tsecret "{SECRET}";\n}};\n'  # tsig-keygen output
    assert read_tsig_secret(_secret(tmp_path, block)) == bytes(range(32))
    with pytest.raises(ConfigError) as exc:
        read_tsig_secret(_secret(tmp_path, "not base64 at all!"))
    assert "does not hold a base64 TSIG secret" in str(exc.value) and "at all" not in str(exc.value)
    with pytest.raises(ConfigError, match="mode 0640"):
        read_tsig_secret(_secret(tmp_path, SECRET, 0o640))


def test_make_publisher_picks_the_provider(tmp_path: Path) -> None:
    link = GatewayLink("192.0.2.1")
    assert isinstance(make_publisher(SimpleNamespace(dns_provider="gateway"), tmp_path, gateway=link),
                      GatewayPublisher)
    with pytest.raises(AcmeError, match="no gateway link"):
        make_publisher(SimpleNamespace(dns_provider="gateway"), tmp_path, gateway=None)
    _secret(tmp_path, SECRET)
    r = SimpleNamespace(server="198.51.100.53", zone="example.org", tsig_key_name="wiregate.",
                        tsig_algorithm="hmac-sha256", tsig_secret_file="tsig.key")
    pub = make_publisher(SimpleNamespace(dns_provider="rfc2136", rfc2136=r), tmp_path, gateway=None)
    assert isinstance(pub, Rfc2136Publisher) and pub.server == ("198.51.100.53", 53)
    assert SECRET not in repr(pub)
    with pytest.raises(AcmeError, match="needs the \\[acme.rfc2136\\] table"):
        make_publisher(SimpleNamespace(dns_provider="rfc2136", rfc2136=None), tmp_path, gateway=None)
    with pytest.raises(AcmeError, match="tsig_algorithm"):
        make_publisher(SimpleNamespace(dns_provider="rfc2136", rfc2136=SimpleNamespace(
            **{**vars(r), "tsig_algorithm": "hmac-md4"})), tmp_path, gateway=None)


async def test_gateway_publisher_publishes_reports_refusals_and_unreachable_gateways() -> None:
    site = SiteGrant("home", "127.0.0.1", "K=", ("example.org",))
    handler = PublishHandler(ZONE, "vps.example.net", {"127.0.0.1": site})
    srv = PublishServer(handler, "127.0.0.1", 0)
    await srv.start()
    try:
        pub = GatewayPublisher(GatewayLink("127.0.0.1", srv.bound_port()))
        await pub.publish("*.example.org", [V])  # the wildcard's challenge is at the base name
        assert list(handler.store.records(0.0).values()) == [(V,)]
        with pytest.raises(AcmeError) as exc:
            await pub.publish("other.example.org", [V])
        assert str(exc.value) == ("other.example.org: DNS-01 via the gateway: refused: other.example.org: not in "
                                  "the acme_names of site home on the gateway")
        await pub.clear("example.org")
        assert handler.store.records(0.0) == {}
    finally:
        await srv.close()
    with pytest.raises(AcmeError, match="example.org: DNS-01 via the gateway: cannot reach its publish channel"):
        await GatewayPublisher(GatewayLink("127.0.0.1", free_port(), timeout=2)).publish("example.org", [V])
    await GatewayPublisher(GatewayLink("127.0.0.1", free_port(), timeout=2)).clear("example.org")  # no raise


def test_acme_dns_counters_are_exported_as_metrics() -> None:
    import dns.message

    spec = AcmeDnsSpec(zone=ZONE, nameserver="vps.example.net", listen=(("127.0.0.1", 0),),
                       publish_address="127.0.0.1", publish_port=0, device=None, sites=(), record_ttl=60.0,
                       max_names_per_site=4)
    svc = AcmeDnsService(spec, clock=lambda: 0.0)  # not started: only its counters are read
    svc.responder.respond(dns.message.make_query(ZONE, "SOA").to_wire(), {})
    svc.responder.respond(b"junk", {})
    reg = CollectorRegistry()
    reg.register(StatusCollector(lambda: NodeStatus(role="gateway", name="gw",
                                                 acme_dns=from_json(AcmeDnsStatus, svc.status()))))
    text = generate_latest(reg).decode()
    assert 'wiregate_acme_dns_queries_total{outcome="answered"} 1.0' in text
    assert 'wiregate_acme_dns_queries_total{outcome="dropped"} 1.0' in text
    assert "wiregate_acme_dns_records 0.0" in text

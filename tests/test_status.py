"""The typed status (wiregate.status): one to_json/from_json pair, a round trip for any status, clear errors for a
bad reply, and the parts' real status dicts read without losing a key."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import types
import typing
from dataclasses import fields, is_dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.certs.test_manager import _cfg, _closed_port
from tests.certs.test_storage import _cert
from wiregate.testing.peers import free_port
from wiregate.status import (
    AcmeDnsStatus,
    CertificateStatus,
    GatewayEndpoint,
    GatewayStatus,
    ListenerStatus,
    NodeStatus,
    ProbeStatus,
    RelayStatus,
    StatusError,
    TunnelStatus,
    from_json,
    to_json,
)

pytestmark = pytest.mark.timeout(60)


def strategy(tp: Any) -> st.SearchStrategy[Any]:
    """Any value of a status type, read off its type hints (so a new field is covered without touching this)."""
    origin = typing.get_origin(tp)
    if origin is types.UnionType or origin is typing.Union:
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return st.none() | strategy(inner)
    if is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        return st.builds(tp, **{f.name: strategy(hints[f.name]) for f in fields(tp)})
    if origin is tuple:
        return st.lists(strategy(typing.get_args(tp)[0]), max_size=2).map(tuple)
    if origin is dict:
        return st.dictionaries(st.text(max_size=8), strategy(typing.get_args(tp)[1]), max_size=2)
    if tp is float:  # a producer's round() may give an int where a float is typed
        return st.floats(allow_nan=False, allow_infinity=False) | st.integers(-2**53, 2**53)
    return {int: st.integers(-2**63, 2**64), str: st.text(max_size=12), bool: st.booleans()}[tp]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(strategy(NodeStatus))
def test_any_node_status_survives_the_trip_through_json(status: NodeStatus) -> None:
    wire = json.loads(json.dumps(to_json(status)))
    assert from_json(NodeStatus, wire, strict=True) == status


def test_the_wire_keeps_the_shape_the_control_socket_always_had() -> None:
    """Absent keys stay absent (a UDP service has no balance, a gateway no `gateways`), no tunnel is {}."""
    gw = NodeStatus(role="gateway", name="gw", relay=RelayStatus(services={}))
    wire = to_json(gw)
    assert wire["tunnel"] == {} and "gateways" not in wire and "probe" not in wire and "warnings" not in wire
    assert "ingress" not in wire and "certificates" not in wire and wire["relay"]["services"] == {}
    assert from_json(NodeStatus, wire).tunnel is None
    t = TunnelStatus(mode="kernel", interface="wg0", error="tunnel: `wg show wg0`: No such device")
    home = NodeStatus(role="home", name="h", gateways=(GatewayStatus(
        name="gateway", interface="wg0", address="192.0.2.2/24", gateway_address="192.0.2.1",
        gateway_endpoint=GatewayEndpoint("vps.example:51820", "-"), tunnel=t),))
    g = to_json(home)["gateways"][0]
    assert "probe" not in g and "warnings" not in g and g["tunnel"]["error"].startswith("tunnel: `wg show")
    assert "error" not in to_json(TunnelStatus(mode="builtin", interface="wg0"))


def test_a_reply_of_the_wrong_shape_is_one_line_naming_where() -> None:
    bad = {"role": "gateway", "name": "gw", "relay": {"services": {"web": {"kind": "tcp", "open": "3"}}}}
    with pytest.raises(StatusError, match=r'^status\.relay\.services\.web\.open: "3": expected an integer$'):
        from_json(NodeStatus, bad)
    with pytest.raises(StatusError, match=r"^status: .*: 'role' is missing$"):
        from_json(NodeStatus, {"name": "gw"})
    with pytest.raises(StatusError, match=r"^status\.uptime: true: expected a number$"):
        from_json(NodeStatus, {"role": "home", "name": "h", "uptime": True})
    with pytest.raises(StatusError, match=r"^status\.gateways: .*: expected a list$"):
        from_json(NodeStatus, {"role": "home", "name": "h", "gateways": {"a": 1}})


def test_an_older_node_missing_keys_reads_with_defaults_and_unknown_keys_are_ignored() -> None:
    old = {"role": "home", "name": "h", "tunnel": {"mode": "external", "interface": "wg0", "peers": []},
           "ingress": {"https": {"listen": "192.0.2.2:443", "open": 2, "refused": {"untrusted_header": 1}}},
           "something_newer": {"x": 1}}
    st_ = from_json(NodeStatus, old)
    assert st_.ingress == {"https": ListenerStatus(listen="192.0.2.2:443", open=2, refused={"untrusted_header": 1})}
    assert st_.tunnel == TunnelStatus(mode="external", interface="wg0") and st_.reloads.ok == 0
    with pytest.raises(StatusError, match=r"^status\.something_newer: .*: unknown key \(not in NodeStatus\)$"):
        from_json(NodeStatus, old, strict=True)


# -- the parts' own status dicts, read strictly: a key a part adds without a field here fails these -------------
async def test_relay_status_of_tcp_and_udp_services_reads_without_losing_a_key() -> None:
    from wiregate.relay import Backend, HealthCheck, Relay, RelayConfig, TCPService, UDPService

    tcp, udp = free_port("127.0.0.1", socket.SOCK_STREAM), free_port("127.0.0.1", socket.SOCK_DGRAM)
    cfg = RelayConfig((
        TCPService("web", (("127.0.0.1", tcp),), (Backend("127.0.0.1", _closed_port(), name="home"),),
                   health=HealthCheck(interval=30, timeout=1, rise=1, fall=1)),
        UDPService("dns", (("127.0.0.1", udp),), (Backend("127.0.0.1", 53, name="home"),))))
    relay = Relay(cfg)
    await relay.start()
    try:
        raw = relay.status()
    finally:
        await relay.close(0.1)
    typed = from_json(RelayStatus, raw, "relay", strict=True)
    assert to_json(typed) == json.loads(json.dumps(raw))
    assert typed.services["web"].balance and typed.services["dns"].max_flows
    assert typed.services["web"].backends[0].name == "home"


async def test_ingress_status_of_tcp_and_udp_listeners_reads_without_losing_a_key() -> None:
    from wiregate.ingress import Ingress, IngressConfig, Listener, Route

    routes = (Route("app", ("127.0.0.1", 8080), sni=("app.example",)), Route("web", ("127.0.0.1", 8081)))
    ing = Ingress(IngressConfig((
        Listener("https", ("127.0.0.1", 0), trusted=("127.0.0.1",), routes=routes, default_route="web"),
        Listener("dns", ("127.0.0.1", 0), protocol="udp", routes=(Route("dns", ("127.0.0.1", 53)),),
                 default_route="dns"))))
    await ing.start()
    try:
        raw = ing.status()
    finally:
        await ing.close(0.1)
    typed = {name: from_json(ListenerStatus, ln, f"ingress.{name}", strict=True) for name, ln in raw.items()}
    assert to_json(typed) == json.loads(json.dumps(raw))
    assert typed["https"].routes["app"].sni == ("app.example",) and typed["dns"].protocol == "udp"


def test_acme_dns_status_reads_without_losing_a_key() -> None:
    import dns.message

    from wiregate.dnsserver.channel import SiteGrant
    from wiregate.dnsserver.server import AcmeDnsService, AcmeDnsSpec

    zone = "acme.example.net"
    spec = AcmeDnsSpec(zone=zone, nameserver="vps.example.net", listen=(("127.0.0.1", 0),),
                       publish_address="127.0.0.1", publish_port=0, device=None,
                       sites=(SiteGrant("home", "192.0.2.2", "k" * 44, ("app.example",)),), record_ttl=60.0,
                       max_names_per_site=4)
    svc = AcmeDnsService(spec, clock=lambda: 0.0)  # not started: its counters and records are what is read
    svc.responder.respond(dns.message.make_query(zone, "SOA").to_wire(), {})
    svc.handler.handle("192.0.2.2", json.dumps({"op": "publish", "name": "app.example", "values": ["v" * 43]})
                       .encode(), 0.0)
    raw = svc.status()
    typed = from_json(AcmeDnsStatus, raw, "acme_dns", strict=True)
    assert to_json(typed) == json.loads(json.dumps(raw))
    assert typed.records and typed.records[0].site == "home", raw


async def test_certificate_status_reads_without_losing_a_key(tmp_path) -> None:
    from wiregate.acme.book import Book
    from wiregate.acme.manager import AcmeManager, CertSpec
    from wiregate.acme.storage import Store, new_private_key

    names = ("app.example",)
    key = new_private_key("ec256")
    Store(tmp_path / "acme").save(names, _cert(names, key, days=3), key)
    mgr = AcmeManager(_cfg(tmp_path, _closed_port()), [CertSpec(names, "tls-alpn-01", ("app",)),
                                                       CertSpec(("b.example",), "http-01", ("b",))], Book(),
                      clock=lambda: 0.0, rng=random.Random(1))
    await mgr.start()
    try:
        raw = mgr.status()
    finally:
        await mgr.close()
    typed = tuple(from_json(CertificateStatus, c, f"certificates[{i}]", strict=True) for i, c in enumerate(raw))
    assert to_json(typed) == json.loads(json.dumps(raw))
    assert typed[0].not_after is not None and typed[1].not_after is None


def test_tunnel_status_read_with_wg_show_reads_without_losing_a_key() -> None:
    from wiregate.tunnel import ExternalTunnel, PeerSpec, TunnelSpec

    spec = TunnelSpec(mode="external", interface="wg9", private_key=bytes(32), address="192.0.2.2/24",
                      listen_port=0, mtu=1420, peers=(PeerSpec(public_key=bytes(range(32)),
                                                               allowed_ips=("192.0.2.1/32",), label="gateway"),))
    t = ExternalTunnel(spec)
    for state in ({"error": "tunnel: `wg show wg9`: No such device", "peers": []},
                  {"listen_port": 51820, "peers": [{"public_key": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
                                                    "endpoint": "203.0.113.1:51820", "last_handshake": 1700000000,
                                                    "rx_bytes": 10, "tx_bytes": 20}]}):
        t.cache.state = state  # what `wg show wg9 dump` gave (tunnel.wg_show_dump's shape)
        raw = t.status()
        typed = from_json(TunnelStatus, raw, "tunnel", strict=True)
        assert to_json(typed) == raw
    assert typed.peers[0].name == "gateway" and typed.peers[0].last_handshake == 1700000000


# -- over the control socket ---------------------------------------------------------------------------------------
async def test_control_socket_sends_the_typed_status_and_the_client_reads_it_back(tmp_path) -> None:
    from wiregate.control import ControlServer, node_status

    status = NodeStatus(role="home", name="h", pid=7, uptime=1.5, probe=ProbeStatus(sent=3, replies=2, rtt_ms=1.25),
                        tunnel=TunnelStatus(mode="builtin", interface="wg0", listen_port=51820))

    async def handler(req: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "status": status}
    srv = await ControlServer.start(tmp_path / "run" / "h.ctl", handler)
    try:
        typed, raw = await asyncio.to_thread(node_status, srv.path)
    finally:
        await srv.close()
    assert typed == status and raw == to_json(status)

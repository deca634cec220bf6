"""`[acme_dns]` and `acme_names` in the gateway file, `wiregate check`, and `wiregate acme-dns records`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.system.conftest import HOME_KEY, gateway_text, wiregate, write_key
from wiregate.config import GatewayConfig, loads
from wiregate.dnsserver.channel import challenge_label
from wiregate.errors import ConfigError
from wiregate.runner import acme_dns_spec
from wiregate.wireguard import keys

HOME_PUB = keys.encode_key(keys.public_key(HOME_KEY))
ACME = """
[acme_dns]
zone = "acme.vps.example.net"
nameserver = "vps.example.net"
listen = ["198.51.100.1:53"]
"""


def gw_text() -> str:
    """The sample gateway file with its UDP service moved off port 53 (where [acme_dns] answers)."""
    return gateway_text().replace('listen = ["0.0.0.0:53"]', 'listen = ["0.0.0.0:5300"]')


def with_names(text: str, names: str = '["example.org", "*.example.org"]') -> str:
    return text.replace('address = "192.0.2.2"\n', f'address = "192.0.2.2"\nacme_names = {names}\n', 1)


def _err(text: str) -> str:
    with pytest.raises(ConfigError) as exc:
        loads(text, Path("/cfg"))
    return str(exc.value)


def test_acme_dns_table_and_site_names_are_read() -> None:
    cfg = loads(with_names(gw_text() + ACME), Path("/cfg"))
    assert isinstance(cfg, GatewayConfig)
    a = cfg.acme_dns
    assert a.zone == "acme.vps.example.net" and a.nameserver == "vps.example.net"
    assert a.listen == (("198.51.100.1", 53),) and a.publish_port == 51818 and a.record_ttl == 1800.0
    assert cfg.sites[0].acme_names == ("example.org", "*.example.org")
    spec = acme_dns_spec(cfg)
    assert spec.publish_address == "192.0.2.1" and spec.device == "wg0"
    assert [(s.name, s.address, s.acme_names) for s in spec.sites] == [("home", "192.0.2.2", cfg.sites[0].acme_names)]
    assert loads(gw_text(), Path("/cfg")).acme_dns is None  # off unless set


@pytest.mark.parametrize("text,expected", [
    (with_names(gw_text()), ('sites[0].acme_names: ["example.org", "*.example.org"]: needs [acme_dns] with a '
                             'zone on this gateway')),
    (gw_text() + ACME.replace('nameserver = "vps.example.net"\n', ""), "acme_dns.nameserver: missing"),
    (gw_text() + ACME.replace('"vps.example.net"', '"ns.acme.vps.example.net"'),
     'acme_dns.nameserver: "ns.acme.vps.example.net": must be a name outside the zone'),
    (gw_text() + ACME.replace('"198.51.100.1:53"', '"198.51.100.1:5300"'),
     'acme_dns.listen[0]: "198.51.100.1:5300": is already a udp listener of service \'dns\''),
    (gateway_text() + ACME, 'acme_dns.listen[0]: "198.51.100.1:53": is already a udp listener'),
    (gw_text() + ACME.replace('zone = "acme.vps.example.net"', 'zone = "*.example.net"'),
     'acme_dns.zone: "*.example.net": is a zone name, not a wildcard'),
    (with_names(gw_text() + ACME, '["x.acme.vps.example.net"]'),
     'sites[0].acme_names[0]: "x.acme.vps.example.net": is inside the challenge zone'),
    (with_names(gw_text() + ACME, '["exa mple.org"]'), 'sites[0].acme_names[0]: "exa mple.org": not a host'),
    (gw_text() + ACME + "publish_port = 0\n", "acme_dns.publish_port: 0: out of range 1..65535"),
])
def test_bad_acme_dns_settings_name_the_key_and_value(text: str, expected: str) -> None:
    assert expected in _err(text)


def test_check_and_records_from_the_gateway_file(tmp_path: Path) -> None:
    write_key(tmp_path / "gateway.key", bytes(range(1, 33)))
    gw = tmp_path / "gateway.toml"
    gw.write_text(with_names(gw_text() + ACME))
    r = wiregate("check", str(gw))
    assert r.returncode == 0 and "acme-dns zone acme.vps.example.net" in r.stdout, r.stderr
    r = wiregate("acme-dns", "records", str(gw), "--name", "www.example.org", "--name", "evil.example.com")
    assert r.returncode == 0, r.stderr
    label = challenge_label(HOME_PUB, "example.org")
    www = challenge_label(HOME_PUB, "www.example.org")
    lines = [ln for ln in r.stdout.splitlines() if not ln.startswith(";")]
    assert lines == ["acme.vps.example.net.  IN NS  vps.example.net.",
                     f"_acme-challenge.example.org.  IN CNAME  {label}.acme.vps.example.net.",
                     f"_acme-challenge.www.example.org.  IN CNAME  {www}.acme.vps.example.net."]
    gw.write_text(gw_text() + ACME.replace('"vps.example.net"', '"ns.acme.vps.example.net"'))
    r = wiregate("check", str(gw))
    assert r.returncode == 2 and "acme_dns.nameserver" in r.stderr and "Traceback" not in r.stderr

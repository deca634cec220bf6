"""The config schema and `wiregate check`: defaults, cross-key checks, and error messages that name key and value."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.system.conftest import gateway_text, home_text, wiregate
from wiregate.config import GatewayConfig, HomeConfig, load, loads, schema
from wiregate.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def _err(text: str) -> str:
    with pytest.raises(ConfigError) as exc:
        loads(text, Path("/cfg"))
    return str(exc.value)


def test_gateway_defaults_are_filled_and_paths_resolved(gw_file):
    cfg = load(gw_file)
    assert isinstance(cfg, GatewayConfig)
    assert cfg.tunnel.mode == "auto" and cfg.tunnel.listen_port == 51820 and cfg.tunnel.mtu == 1420
    assert cfg.tunnel.endpoint == ("vps.example.net", 51820)
    assert cfg.tunnel.private_key_file == gw_file.parent / "gateway.key"
    https, dns = cfg.services
    assert https.listen == (("0.0.0.0", 443), ("::", 443)) and https.port == 443
    assert https.proxy_protocol == "v2" and https.health.enabled and https.health.fall == 3
    assert dns.protocol == "udp" and dns.port == 53
    assert cfg.service_sites(https) == cfg.sites
    assert cfg.control_socket == Path("/run/wiregate/gw.ctl")
    assert cfg.metrics_listen == ("127.0.0.1", 9851)


def test_home_tunnel_keyword_and_default_trust(home_file):
    cfg = load(home_file)
    assert isinstance(cfg, HomeConfig)
    (ln,) = cfg.listeners
    assert ln.listen == ("192.0.2.2", 443)
    assert ln.trusted == ("192.0.2.1/32",)
    assert [r.name for r in ln.routes] == ["blog", "web"]
    assert ln.routes[0].sni == ("blog.example.org",) and ln.routes[0].target == ("192.168.1.10", 443)


@pytest.mark.parametrize("old,new,expected", [
    ('listen = ["0.0.0.0:53"]', 'listen = ["0.0.0.0:99999"]',
     'services[1].listen[0]: "0.0.0.0:99999": port out of range'),
    ('listen = ["0.0.0.0:53"]', 'listen = ["example.com:53"]',
     'services[1].listen[0]: "example.com:53": address must be an IP address'),
    ('protocol = "udp"', 'protocol = "sctp"', 'services[1].protocol: "sctp": must be one of tcp, udp'),
    ('address = "192.0.2.2"', 'address = "198.51.100.7"',
     'sites[0].address: "198.51.100.7": is outside the tunnel prefix 192.0.2.0/24'),
    ('address = "192.0.2.2"', 'address = "192.0.2.1"', 'sites[0].address: "192.0.2.1": is taken'),
    ('endpoint = "vps.example.net"', 'endpoint = "vps..net"',
     'tunnel.endpoint: "vps..net": host is neither an IP address nor a DNS name'),
    ('name = "dns"', 'name = "https"', 'services[1].name: "https": is used by another service'),
    ('listen = ["0.0.0.0:53"]', 'listen = ["0.0.0.0:53"]\nproxy_protocol = "v1"',
     'services[1].proxy_protocol: "v1": UDP needs'),
    ('listen = ["0.0.0.0:53"]', 'listen = ["0.0.0.0:53"]\nsites = ["cabin"]',
     'services[1].sites[0]: "cabin": is not a site of this gateway'),
    ('listen = ["0.0.0.0:53"]', 'listen = ["0.0.0.0:53"]\nlisten_port = 5',
     'services[1].listen_port: unknown key'),
    ('listen = ["0.0.0.0:53"]', 'listen = ["0.0.0.0:53"]\n[services.health]\nrise = 0',
     'services[1].health.rise: 0: out of range 1..100'),
    ('[tunnel]', '[tunnel]\nmode = "magic"', 'tunnel.mode: "magic": must be one of auto, builtin, kernel, external'),
    ('listen = ["0.0.0.0:53"]', 'listen = ["0.0.0.0:53"]\nproxy_tlvs = ["crc32c"]',
     'services[1].proxy_tlvs: ["crc32c"]: needs a TCP service with proxy_protocol = "v2"'),
    ('listen = ["0.0.0.0:443", "[::]:443"]', 'listen = ["0.0.0.0:443"]\nproxy_tlvs = ["crc"]',
     'services[0].proxy_tlvs[0]: "crc": must be one of crc32c, unique-id'),
])
def test_gateway_errors_name_key_path_and_value(old, new, expected):
    text = gateway_text()
    assert old in text
    msg = _err(text.replace(old, new, 1))
    assert msg.startswith(expected), msg


@pytest.mark.parametrize("old,new,expected", [
    ('listen = "tunnel:443"', 'listen = "tunnel:0"', 'listeners[0].listen: "tunnel:0": port out of range'),
    ('target = "192.168.1.11:443"', 'target = "192.168.1.11"',
     'listeners[0].routes[1].target: "192.168.1.11": missing \':port\''),
    ('default_route = "web"', 'default_route = "wbe"', 'listeners[0].default_route: "wbe": is not a route'),
    ('send_proxy = "v1"', 'send_proxy = "v3"', 'listeners[0].routes[1].send_proxy: "v3": must be one of'),
    ('gateway_address = "192.0.2.1"', 'gateway_address = "192.0.2.2"',
     'tunnel.gateway_address: "192.0.2.2": is this site\'s own tunnel address'),
    ('address = "192.0.2.2/24"', 'address = "192.0.2.0/24"',
     'tunnel.address: "192.0.2.0/24": is the network or broadcast address'),
    ('gateway_public_key = "', 'gateway_public_key = "x',
     'tunnel.gateway_public_key: "x'),
    ('sni = ["blog.example.org"]', 'sni = ["blog example"]', 'listeners[0].routes[0].sni[0]: "blog example"'),
])
def test_home_errors_name_key_path_and_value(old, new, expected):
    text = home_text()
    assert old in text
    msg = _err(text.replace(old, new, 1))
    assert msg.startswith(expected), msg


def test_missing_required_key_and_table_are_named():
    assert _err('role = "home"\nname = "h"\n') == "tunnel: missing table [tunnel]"
    assert _err('name = "h"\n') == 'role: missing (required): "gateway" or "home"'
    assert _err(gateway_text().replace('endpoint = "vps.example.net"\n', "")) == "tunnel.endpoint: missing (required)"


def test_unknown_key_suggests_the_near_one():
    assert "did you mean 'listen_port'" in _err(gateway_text().replace("[tunnel]", "[tunnel]\nlisten-port = 1"))


def test_bad_toml_is_one_clean_error():
    assert _err("role = ").startswith("not valid TOML")


def test_check_cli_reports_ok_and_key_path_errors(gw_file, tmp_path):
    r = wiregate("check", str(gw_file))
    assert r.returncode == 0 and "ok (gateway 'gw': 1 site(s), 2 service(s)" in r.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(gateway_text().replace('listen = ["0.0.0.0:53"]', 'listen = ["0.0.0.0:99999"]'))
    r = wiregate("check", str(bad))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == f'wiregate: error: {bad}: services[1].listen[0]: "0.0.0.0:99999": port out of range'


def test_check_refuses_group_readable_key_file(gw_file):
    os.chmod(gw_file.parent / "gateway.key", 0o640)
    r = wiregate("check", str(gw_file))
    assert r.returncode == 2 and r.stdout == ""  # the same convention as config errors: stderr, status 2
    assert r.stderr.startswith(f"wiregate: error: {gw_file}: tunnel.private_key_file: ")
    assert "mode 0640" in r.stderr and "chmod 600" in r.stderr
    key_text = (gw_file.parent / "gateway.key").read_text().strip()
    assert key_text not in r.stdout + r.stderr  # a secret is never echoed


def test_docs_config_md_is_generated_from_the_schema():
    assert (ROOT / "docs" / "config.md").read_text() == schema.render_markdown(), \
        "docs/config.md is stale: run `wiregate check --schema > docs/config.md`"


def test_home_listener_bounds_and_compat_mode_reach_the_ingress(tmp_path):
    from wiregate.runner import ingress_config

    text = home_text().replace('listen = "tunnel:443"',
                               'listen = "tunnel:443"\nproxy_optional = true\nmax_header_bytes = 256\n'
                               'max_sniff_bytes = 2048', 1)
    (ln,) = ingress_config(loads(text, tmp_path)).listeners
    assert (ln.proxy_optional, ln.max_header_bytes, ln.max_sniff_bytes) == (True, 256, 2048)
    (default,) = ingress_config(loads(home_text(), tmp_path)).listeners
    assert (default.proxy_optional, default.max_header_bytes, default.max_sniff_bytes) == (False, 4096, 16384)
    msg = _err(home_text().replace('listen = "tunnel:443"', 'listen = "tunnel:443"\nmax_header_bytes = 70000', 1))
    assert msg.startswith('listeners[0].max_header_bytes: 70000'), msg

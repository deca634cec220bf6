"""What `wiregate run` builds from a file before anything runs: tunnel peers and relay services (pure)."""

from __future__ import annotations

import json

import pytest

from tests.system.conftest import GW_KEY, HOME_KEY
from wiregate.config import load
from wiregate.errors import ConfigError
from wiregate.resolver import hosts_override, resolve_sync
from wiregate.runner import relay_config, tunnel_spec
from wiregate.tunnel import kernel_has_wireguard, resolve_mode
from wiregate.wireguard import keys


def test_gateway_tunnel_has_one_peer_per_site_with_its_address(gw_file):
    spec = tunnel_spec(load(gw_file))
    assert spec.private_key == GW_KEY and spec.listen_port == 51820 and spec.address == "192.0.2.1/24"
    (peer,) = spec.peers
    assert peer.public_key == keys.public_key(HOME_KEY) and peer.allowed_ips == ("192.0.2.2/32",)
    assert peer.endpoint is None and peer.label == "home"
    assert keys.encode_key(GW_KEY) not in repr(spec)  # the private key stays out of logs


def test_home_tunnel_peer_is_the_gateway_at_the_resolved_endpoint(home_file):
    spec = tunnel_spec(load(home_file), ("198.51.100.1", 51820))
    (gw,) = spec.peers
    assert gw.public_key == keys.public_key(GW_KEY) and gw.allowed_ips == ("192.0.2.1/32",)
    assert gw.endpoint == ("198.51.100.1", 51820) and gw.persistent_keepalive == 25


def test_relay_services_forward_to_site_tunnel_addresses(gw_file):
    text = gw_file.read_text().replace('listen = ["0.0.0.0:53"]', 'listen = ["0.0.0.0:53"]\nport = 5353\n'
                                       '[services.health]\nenabled = false')
    text = text.replace('"[::]:443"]', '"[::]:443"]\nproxy_tlvs = ["unique-id", "crc32c"]')
    gw_file.write_text(text)
    rc = relay_config(load(gw_file))
    https, dns = rc.services
    assert [(b.host, b.port, b.name) for b in https.backends] == [("192.0.2.2", 443, "home")]
    assert https.listen == (("0.0.0.0", 443), ("::", 443)) and https.proxy_protocol == "v2"
    assert https.health is not None and https.health.fall == 3
    assert https.proxy_tlvs == ("unique-id", "crc32c")
    assert [(b.host, b.port) for b in dns.backends] == [("192.0.2.2", 5353)]
    assert dns.proxy_protocol == "v2"  # the default on both transports: home learns the client address


def test_service_without_sites_is_skipped_not_fatal(gw_file):
    text = gw_file.read_text()
    start = text.index("[[sites]]")
    gw_file.write_text(text[:start] + text[text.index("[[services]]"):])
    assert relay_config(load(gw_file)).services == ()


def test_world_readable_key_is_refused_when_building(gw_file):
    (gw_file.parent / "gateway.key").chmod(0o644)
    with pytest.raises(ConfigError, match="tunnel.private_key_file: .*mode 0644"):
        tunnel_spec(load(gw_file))


def test_hosts_override_file_wins_and_is_reread(tmp_path, monkeypatch):
    hosts = tmp_path / "hosts"
    hosts.write_text("# comment\n198.51.100.7 gw.example.test other\n")
    monkeypatch.setenv("WIREGATE_HOSTS", str(hosts))
    assert resolve_sync("GW.example.test.", 51820) == ("198.51.100.7", 51820)
    hosts.write_text("198.51.100.9 gw.example.test\n")
    assert hosts_override("gw.example.test") == "198.51.100.9"
    assert resolve_sync("192.0.2.5", 1) == ("192.0.2.5", 1)
    assert hosts_override("absent.example.test") is None


def test_auto_mode_picks_kernel_only_when_the_kernel_has_wireguard():
    assert resolve_mode("builtin") == "builtin" and resolve_mode("external") == "external"
    assert resolve_mode("auto") == ("kernel" if kernel_has_wireguard() else "builtin")


def test_status_finds_the_socket_from_a_file_a_name_or_a_path(gw_file, tmp_path):
    from pathlib import Path

    from wiregate.runner import find_control_socket

    assert find_control_socket(str(gw_file)) == Path("/run/wiregate/gw.ctl")
    assert find_control_socket("cabin") == Path("/run/wiregate/cabin.ctl")
    assert find_control_socket(str(tmp_path / "x.ctl")) == tmp_path / "x.ctl"


def test_saved_site_endpoints_are_read_back_and_bad_entries_skipped(gw_file, tmp_path):
    from wiregate.runner import load_site_endpoints, sites_file

    cfg = load(gw_file)
    path = tmp_path / "gw.sites"
    home_pub = cfg.sites[0].public_key
    path.write_text(json.dumps({home_pub: "198.51.100.2:40000", "other": "[fd00::2]:51820",
                                "bad1": "example.com:1", "bad2": "198.51.100.9:0", "bad3": 7}))
    known = load_site_endpoints(path)
    assert known == {home_pub: ("198.51.100.2", 40000), "other": ("fd00::2", 51820)}
    (peer,) = tunnel_spec(cfg, site_endpoints=known).peers
    assert peer.endpoint == ("198.51.100.2", 40000)  # the restarted gateway can handshake with the site at once
    path.write_text("{not json")
    assert load_site_endpoints(path) == {} and load_site_endpoints(tmp_path / "missing") == {}
    assert sites_file(cfg) == cfg.control_socket.with_suffix(".sites")

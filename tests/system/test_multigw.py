"""A home with several gateways, without namespaces: join on an existing home file, the [[gateways]] checks, what
the runner builds from it (tunnels, ingress listeners), status, metrics and the classic exports."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.system.conftest import wiregate
from wiregate.config import load, loads
from wiregate.config.pairing import add_gateway, init_gateway, join, site_add
from wiregate.errors import ConfigError


def _gateways(tmp_path: Path, b_address: str = "198.51.100.129/25") -> tuple[str, str, Path]:
    init_gateway(tmp_path / "a", "203.0.113.1")
    init_gateway(tmp_path / "b", "203.0.113.9", address=b_address)
    ta = site_add(tmp_path / "a" / "gateway.toml", "home").token
    tb = site_add(tmp_path / "b" / "gateway.toml", "home").token
    return ta, tb, join(ta, tmp_path / "home")


def test_join_on_an_existing_home_file_adds_a_gateway_with_its_own_interface_key_and_address(tmp_path):
    ta, tb, home = _gateways(tmp_path)
    one = home.read_text()
    r = wiregate("join", tb, "--config-dir", str(tmp_path / "home"))
    assert r.returncode == 0, r.stderr
    assert "added gateway gateway2 (interface wg-home2)" in r.stdout and "wiregate-home" in r.stdout
    text = home.read_text()
    assert text.startswith(one)  # the one-gateway file is kept as it was, the new gateway appended
    key = tmp_path / "home" / "home-gateway2.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    cfg = load(home)
    a, b = cfg.links
    assert (a.name, a.where, a.interface, a.address) == ("gateway", "tunnel", "wg-home", "192.0.2.2/24")
    assert (b.name, b.where, b.interface, b.address) == ("gateway2", "gateways[0]", "wg-home2", "198.51.100.130/25")
    assert b.gateway_endpoint == ("203.0.113.9", 51820) and b.gateway_address == "198.51.100.129"
    assert b.private_key_file == key and b.persistent_keepalive == 25
    r = wiregate("check", str(home))
    assert r.returncode == 0 and "2 gateways (gateway, gateway2)" in r.stdout, r.stdout + r.stderr


def test_joining_the_same_gateway_twice_is_refused_and_changes_nothing(tmp_path):
    ta, tb, home = _gateways(tmp_path)
    add_gateway(tb, home)
    before = home.read_text()
    for tok in (ta, tb):
        r = wiregate("join", tok, "--config-dir", str(tmp_path / "home"))
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert "is already gateway" in r.stderr and "each gateway is joined once" in r.stderr, r.stderr
    assert home.read_text() == before
    assert sorted(p.name for p in (tmp_path / "home").iterdir()) == ["home-gateway2.key", "home.key", "home.toml"]


def test_a_gateway_whose_tunnel_prefix_overlaps_is_refused_with_what_to_do(tmp_path):
    ta, tb, home = _gateways(tmp_path, b_address="192.0.2.1/24")  # both left at init's default prefix
    before = home.read_text()
    with pytest.raises(ConfigError, match=r"overlaps 192.0.2.2/24 of gateway 'gateway' \(tunnel.address\): each "
                                          r"gateway needs its own tunnel prefix"):
        add_gateway(tb, home)
    assert home.read_text() == before and not (tmp_path / "home" / "home-gateway2.key").exists()


def _two(tmp_path: Path) -> Path:
    ta, tb, home = _gateways(tmp_path)
    add_gateway(tb, home)
    return home


@pytest.mark.parametrize("edit, error", [
    (('interface = "wg-home2"', 'interface = "wg-home"'),
     'gateways[0].interface: "wg-home": is the interface of gateway \'gateway\' (tunnel); each gateway has its own'),
    (('name = "gateway2"', 'name = "gateway"'), 'gateways[0].name: "gateway": is the name of gateway'),
    (('address = "198.51.100.130/25"', 'address = "192.0.2.9/24"'),
     'gateways[0].address: "192.0.2.9/24": overlaps tunnel.address 192.0.2.2/24'),
    (('gateway_address = "198.51.100.129"', 'gateway_address = "198.51.100.130"'),
     "gateways[0].gateway_address: \"198.51.100.130\": is this site's own tunnel address"),
    (('gateway_endpoint = "203.0.113.9:51820"\n', ''), "gateways[0].gateway_endpoint: missing (required)"),
    (('[[gateways]]\nname', '[[gateways]]\nnmae = "x"\nname'), "gateways[0].nmae: unknown key (did you mean 'name'?)"),
])
def test_gateways_tables_are_checked_with_the_key_and_value_named(tmp_path, edit, error):
    home = _two(tmp_path)
    text = home.read_text()
    assert edit[0] in text
    bad = text.replace(edit[0], edit[1], 1) if edit[0].startswith("[[") else \
        text[:text.index("[[gateways]]")] + text[text.index("[[gateways]]"):].replace(edit[0], edit[1], 1)
    with pytest.raises(ConfigError) as exc:
        loads(bad, home.parent)
    assert error in str(exc.value)


def test_the_same_gateway_key_in_two_tables_is_refused(tmp_path):
    home = _two(tmp_path)
    cfg = load(home)
    text = home.read_text().replace(cfg.links[1].gateway_public_key, cfg.links[0].gateway_public_key)
    with pytest.raises(ConfigError, match=r"gateways\[0\].gateway_public_key: .*: is the key of gateway 'gateway' "
                                          r"\(tunnel\): that gateway is joined already"):
        loads(text, home.parent)


def test_key_files_of_every_gateway_are_checked(tmp_path):
    home = _two(tmp_path)
    os.chmod(tmp_path / "home" / "home-gateway2.key", 0o644)
    r = wiregate("check", str(home))
    assert r.returncode == 2 and "gateways[0].private_key_file" in r.stderr and "mode 0644" in r.stderr, r.stderr


LISTENERS = """
[[listeners]]
name = "https"
listen = "tunnel:443"
[[listeners.routes]]
name = "web"
target = "192.168.1.10:443"

[[listeners]]
name = "lan-dns"
protocol = "udp"
listen = "0.0.0.0:53"
[[listeners.routes]]
name = "dns"
target = "192.168.1.2:53"
"""


def test_a_tunnel_listener_listens_on_each_gateway_address_trusting_that_gateway_on_its_interface(tmp_path):
    from wiregate.runner import ingress_config, tunnel_spec

    home = _two(tmp_path)
    home.write_text(home.read_text() + LISTENERS)
    cfg = load(home)
    https, https2, dns = ingress_config(cfg).listeners
    assert (https.name, https.listen, https.trusted, https.trusted_interface) == (
        "https", ("192.0.2.2", 443), ("192.0.2.1/32",), "wg-home")
    assert (https2.name, https2.listen, https2.trusted, https2.trusted_interface) == (
        "https@gateway2", ("198.51.100.130", 443), ("198.51.100.129/32",), "wg-home2")
    # a listener elsewhere (here every address) trusts both gateways, each only on a tunnel interface
    assert set(dns.trusted) == {"192.0.2.1/32", "198.51.100.129/32"}
    assert dns.trusted_interface == ("wg-home", "wg-home2")
    first, second = (tunnel_spec(cfg, ("203.0.113.1", 51820), link=g) for g in cfg.links)
    assert (first.interface, first.address, second.interface, second.address) == (
        "wg-home", "192.0.2.2/24", "wg-home2", "198.51.100.130/25")
    assert first.private_key != second.private_key  # each gateway's token carried a key of its own
    assert second.peers[0].allowed_ips == ("198.51.100.129/32",) and second.peers[0].label == "gateway2"


def test_a_one_gateway_home_builds_what_it_always_did(home_file):
    from wiregate.runner import ingress_config

    cfg = load(home_file)
    assert len(cfg.links) == 1 and cfg.gateways == ()
    for ln in ingress_config(cfg).listeners:
        assert ln.trusted_interface in (None, cfg.tunnel.interface) and "@" not in ln.name


def test_export_wg_quick_writes_one_file_per_gateway_and_the_others_listen_on_each_tunnel_address(tmp_path):
    from wiregate.config.export import nginx, systemd, traefik, wg_quick

    home = _two(tmp_path)
    home.write_text(home.read_text() + LISTENERS.split("[[listeners]]\nname = \"lan-dns\"")[0])
    cfg = load(home)
    files = wg_quick(cfg)
    assert sorted(files) == ["wg-home.conf", "wg-home2.conf"]
    assert "Address = 198.51.100.130/25" in files["wg-home2.conf"]
    assert "Endpoint = 203.0.113.9:51820" in files["wg-home2.conf"]
    assert "AllowedIPs = 198.51.100.129/32" in files["wg-home2.conf"]
    conf = nginx(cfg)["nginx.conf"]
    assert "listen 192.0.2.2:443 proxy_protocol;" in conf and "listen 198.51.100.130:443 proxy_protocol;" in conf
    static = traefik(cfg)["traefik.toml"]
    assert '[entryPoints.https-gateway2]\naddress = "198.51.100.130:443"' in static
    assert "wg-quick@wg-home.service wg-quick@wg-home2.service" in systemd(cfg)["wiregate-classic.target"]


def test_status_and_metrics_show_each_gateway():
    from wiregate.cli.status import render
    from wiregate.metrics import StatusCollector
    from wiregate.status import NodeStatus, from_json

    def gw(name, iface, reachable, rtt):
        return {"name": name, "interface": iface, "address": "x", "gateway_address": "y", "reachable": reachable,
                "gateway_endpoint": {"configured": f"{name}.example:51820", "resolved": "203.0.113.1:51820"},
                "tunnel": {"interface": iface, "mode": "builtin", "address": "x", "listen_port": 1,
                           "peers": [{"name": name, "public_key": "k" * 44, "endpoint": "203.0.113.1:51820",
                                      "last_handshake": 1.0, "rx_bytes": 10, "tx_bytes": 20}]},
                "probe": {"sent": 3, "replies": 2, "rtt_ms": rtt, "last_reply_ago": 0.1, "handshake_restarts": 0}}
    st = {"role": "home", "name": "home", "pid": 1, "config": "c", "uptime": 1, "reloads": {"ok": 0, "refused": 0},
          "gateways": [gw("gateway", "wg-home", True, 1.5), gw("gateway2", "wg-home2", False, None)]}
    text = render(from_json(NodeStatus, st))
    assert "gateway gateway (reachable): tunnel wg-home" in text
    assert "gateway gateway2 (NOT answering probes): tunnel wg-home2" in text
    fams = {f.name: f for f in StatusCollector(lambda: from_json(NodeStatus, st)).collect()}
    assert {s.labels["peer"] for s in fams["wiregate_tunnel_rx_bytes"].samples if s.name.endswith("_total")} == {
        "gateway", "gateway2"}
    reach = {s.labels["gateway"]: s.value for s in fams["wiregate_gateway_reachable"].samples}
    assert reach == {"gateway": 1, "gateway2": 0}


def test_install_service_warns_about_a_further_gateways_key_file_the_unit_cannot_see(tmp_path):
    from wiregate.cli.install_service import unit_problems

    home = _two(tmp_path)  # under /tmp, which the unit's PrivateTmp hides
    problems = unit_problems(load(home), home, "/usr/bin/wiregate")
    assert any(p.startswith("gateways[0].private_key_file") for p in problems), problems

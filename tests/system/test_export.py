"""`wiregate export`: each classic-stack config is accepted by the real program (haproxy, nginx, wg-quick, systemd)."""

from __future__ import annotations

import stat
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.system.conftest import GW_KEY, HOME_KEY, wiregate
from wiregate.config import load
from wiregate.config.export import export
from wiregate.errors import ConfigError
from wiregate.testing.peers import need, which
from wiregate.wireguard import keys

HOME_EXTRA = """
[[listeners]]
name = "http"
listen = "tunnel:80"

[[listeners.routes]]
name = "site"
host = ["www.example.org"]
path_prefix = "/app"
target = "192.168.1.12:8080"
http_headers = true

[[listeners]]
name = "dns"
listen = "tunnel:53"
protocol = "udp"

[[listeners.routes]]
name = "dns"
target = "192.168.1.1:53"
"""


@pytest.fixture
def home_full(home_file):
    home_file.write_text(home_file.read_text() + HOME_EXTRA)
    return home_file


def _write(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def test_haproxy_export_is_valid_for_haproxy_and_sends_proxy_v2(gw_file, tmp_path):
    need("haproxy")
    gw_file.write_text(gw_file.read_text().replace('"[::]:443"]', '"[::]:443"]\nproxy_tlvs = ["crc32c", "unique-id"]'))
    out = _write(tmp_path / "x", export("haproxy", load(gw_file)))
    text = (out / "haproxy.cfg").read_text()
    assert ("server home 192.0.2.2:443 send-proxy-v2 proxy-v2-options crc32c,unique-id check inter 2s rise 2 "
            "fall 3 check-send-proxy") in text
    assert "unique-id-format " in text
    assert "bind [::]:443 v6only" in text and "does not relay UDP" in text
    r = subprocess.run([which("haproxy"), "-c", "-f", str(out / "haproxy.cfg")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("side", ["gateway", "home"])
def test_nginx_export_passes_nginx_t(side, gw_file, home_full, tmp_path):
    need("nginx")
    cfg = load(gw_file if side == "gateway" else home_full)
    out = _write(tmp_path / "x", export("nginx", cfg))
    conf = out / "nginx.conf"
    text = conf.read_text()
    if side == "gateway":
        assert "listen 0.0.0.0:53 udp;" in text and "proxy_protocol on;" in text
    else:
        assert "ssl_preread on;" in text and "blog.example.org https_blog;" in text
        assert "proxy_set_header X-Forwarded-For $proxy_protocol_addr;" in text and "location /app" in text
    r = subprocess.run([which("nginx"), "-t", "-c", str(conf), "-g", f"pid {tmp_path}/nginx.pid;"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "test is successful" in r.stderr


@pytest.mark.parametrize("side", ["gateway", "home"])
def test_wg_quick_export_is_read_by_wg_quick_strip(side, gw_file, home_file, tmp_path):
    need("wg-quick", "wg")
    path = gw_file if side == "gateway" else home_file
    r = wiregate("export", "wg-quick", str(path), "-o", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    conf = tmp_path / "out" / "wg0.conf"
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600  # holds the private key
    r = subprocess.run([which("wg-quick"), "strip", str(conf)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    stripped = r.stdout
    assert "Address" not in stripped and "MTU" not in stripped  # wg-quick-only keys gone: `wg setconf` input
    own, peer = (GW_KEY, HOME_KEY) if side == "gateway" else (HOME_KEY, GW_KEY)
    assert f"PrivateKey = {keys.encode_key(own)}" in stripped
    assert f"PublicKey = {keys.encode_key(keys.public_key(peer))}" in stripped
    if side == "home":
        assert "Endpoint = vps.example.net:51820" in stripped and "AllowedIPs = 192.0.2.1/32" in stripped
    else:
        assert "ListenPort = 51820" in stripped and "AllowedIPs = 192.0.2.2/32" in stripped


def test_traefik_export_routes_by_sni_and_host_with_trusted_proxy_protocol(home_full):
    files = export("traefik", load(home_full))
    static = tomllib.loads(files["traefik.toml"])
    dyn = tomllib.loads(files["dynamic.toml"])
    assert static["entryPoints"]["https"] == {"address": "192.0.2.2:443",
                                              "proxyProtocol": {"trustedIPs": ["192.0.2.1/32"]}}
    assert static["entryPoints"]["dns"]["address"] == "192.0.2.2:53/udp"
    blog = dyn["tcp"]["routers"]["https-blog"]
    assert blog["rule"] == "HostSNI(`blog.example.org`)" and blog["tls"] == {"passthrough": True}
    assert dyn["tcp"]["services"]["https-blog"]["loadBalancer"]["serversTransport"] == "https-blog"
    assert dyn["tcp"]["serversTransports"]["https-blog"] == {"proxyProtocol": {"version": 2},
                                                             "terminationDelay": "3600s"}
    assert dyn["tcp"]["routers"]["https-web"]["rule"] == "HostSNI(`*`)"  # the default route catches the rest
    assert dyn["http"]["routers"]["http-site"]["rule"] == "(Host(`www.example.org`)) && (PathPrefix(`/app`))"
    assert dyn["udp"]["services"]["dns-dns"]["loadBalancer"]["servers"] == [{"address": "192.168.1.1:53"}]


def test_systemd_export_units_pass_systemd_analyze(gw_file, tmp_path):
    if not which("systemd-analyze"):
        pytest.skip("needs systemd-analyze (package systemd)")
    out = _write(tmp_path / "u", export("systemd", load(gw_file)))
    text = (out / "haproxy.service.d" / "10-after-wireguard.conf").read_text()
    assert "After=wg-quick@wg0.service" in text
    r = subprocess.run([which("systemd-analyze"), "verify", str(out / "wiregate-classic.target")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_export_for_the_wrong_side_says_which_side_fits(home_file, gw_file):
    with pytest.raises(ConfigError, match="give the gateway file"):
        export("haproxy", load(home_file))
    r = wiregate("export", "traefik", str(gw_file))
    assert r.returncode == 2 and "give the home file" in r.stderr and "Traceback" not in r.stderr


def test_tls_terminating_route_loads_builds_and_exports_for_nginx_and_traefik(home_file, tmp_path):
    from wiregate.runner import ingress_config
    from wiregate.testing.samples import make_cert

    cert, key = make_cert("secure.example.org", tmp_path / "certs")
    home_file.write_text(home_file.read_text() + f"""
[[listeners]]
name = "tls"
listen = "tunnel:8443"

[[listeners.routes]]
name = "secure"
sni = ["secure.example.org"]
tls_cert = "{cert}"
tls_key = "{key}"
target = "192.168.1.13:8080"
""")
    cfg = load(home_file)
    ing = ingress_config(cfg)  # the ingress accepts the route as the home file states it
    route = ing.listeners[-1].routes[0]
    assert route.sni == ("secure.example.org",) and route.tls_cert == str(cert)
    dyn = tomllib.loads(export("traefik", cfg)["dynamic.toml"])
    assert dyn["http"]["routers"]["tls-secure"]["rule"] == "(Host(`secure.example.org`))"
    assert dyn["http"]["routers"]["tls-secure"]["tls"] == {}
    need("nginx")
    out = _write(tmp_path / "x", export("nginx", cfg))
    text = (out / "nginx.conf").read_text()
    assert "listen 192.0.2.2:8443 ssl proxy_protocol;" in text and "server_name secure.example.org;" in text
    r = subprocess.run([which("nginx"), "-t", "-c", str(out / "nginx.conf"), "-g", f"pid {tmp_path}/nginx.pid;"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_tls_cert_without_sni_names_is_refused_naming_the_key(home_file, tmp_path):
    (tmp_path / "c.pem").write_text("x")
    home_file.write_text(home_file.read_text().replace(
        'name = "web"\n', f'name = "web"\ntls_cert = "{tmp_path}/c.pem"\ntls_key = "{tmp_path}/c.pem"\n'))
    with pytest.raises(ConfigError) as e:
        load(home_file)
    assert "listeners[0].routes[1].tls_cert" in str(e.value) and "sni" in str(e.value)


def _three_tcp_services(gw_file):
    gw_file.write_text(gw_file.read_text() + "".join(
        f'\n[[services]]\nname = "s{i}"\nlisten = ["0.0.0.0:{7000 + i}"]\n' for i in range(2)))
    return load(gw_file)


@pytest.mark.parametrize("limit, maxconn", [(20000, 9872), (1024, 384), (None, 30000), (1_000_000, 30000)])
def test_haproxy_maxconn_fits_the_descriptor_limit_and_says_what_it_assumes(gw_file, monkeypatch, limit, maxconn):
    """Issue 10 defect 3: three services of 10000 connections made `maxconn 30000`, which needs ~60,000
    descriptors; HAProxy refuses to start below that (the real HAProxy runs in test_export_run.py)."""
    import wiregate.config.export as ex

    monkeypatch.setattr(ex, "fd_hard_limit", lambda: limit)
    text = export("haproxy", _three_tcp_services(gw_file))["haproxy.cfg"]
    assert f"\n    maxconn {maxconn}\n" in text.split("defaults")[0]  # global
    assert text.split("defaults")[1].count(f"    maxconn {min(10000, maxconn)}\n") == 3  # each frontend, <= global
    assert f"# global maxconn {maxconn}: the services' max_connections add up to 30000" in text
    assert f"exported on ({limit or 'unlimited'}, less 256" in text


def test_haproxy_maxconn_of_the_default_services_fits_this_host(gw_file):
    import resource

    text = export("haproxy", _three_tcp_services(gw_file))["haproxy.cfg"]
    maxconn = int(text.split("global\n    maxconn ", 1)[1].split()[0])
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert hard == resource.RLIM_INFINITY or 2 * maxconn + 256 <= hard


def test_nginx_exports_half_close_and_the_home_answers_an_unknown_host_404(gw_file, home_full):
    """Issue 10 defect 4 (the real nginx carries traffic through these in test_export_run.py)."""
    gw = export("nginx", load(gw_file))["nginx.conf"]
    assert gw.count("proxy_half_close on;") == 1  # the TCP service; UDP has no half-close
    home = export("nginx", load(home_full))["nginx.conf"]
    assert home.count("proxy_half_close on;") == 1  # the SNI stream listener
    http = home.split("http {", 1)[1]
    default = http.split("    server {")[1]
    assert "listen 192.0.2.2:80 proxy_protocol default_server;" in default
    assert 'return 404 "no such site\\n";' in default
    assert "proxy_set_header X-Real-IP $proxy_protocol_addr;" in http
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in http and "proxy_ignore_client_abort on;" in http
    assert http.count("default_server") == 1


def test_traefik_export_names_the_dynamic_file_by_absolute_path(home_file, tmp_path):
    static = tomllib.loads(export("traefik", load(home_file), tmp_path / "out")["traefik.toml"])
    assert static["providers"]["file"]["filename"] == str(tmp_path / "out" / "dynamic.toml")
    assert static["global"] == {"checkNewVersion": False, "sendAnonymousUsage": False}
    default = tomllib.loads(export("traefik", load(home_file))["traefik.toml"])
    assert default["providers"]["file"]["filename"] == "/etc/traefik/dynamic.toml"
    r = wiregate("export", "traefik", str(home_file), "-o", str(tmp_path / "cli"))
    assert r.returncode == 0, r.stderr
    written = tomllib.loads((tmp_path / "cli" / "traefik.toml").read_text())
    assert written["providers"]["file"]["filename"] == str(tmp_path / "cli" / "dynamic.toml")

"""README "Getting started", walked as a new user walks it, in network namespaces.

The files are exactly what `wiregate init`, `site add` and `join` write (defaults untouched: tunnel mode "auto",
interface, control socket in /run/wiregate, metrics on loopback); the only edits are the [[services]] and
[[listeners]] the README tells the user to add. Each side is its own host with its own /run
(wiregate.testing.userhost), as on two machines. The gateway runs before the site is added, so "after `site add`,
reload the gateway" is exercised with SIGHUP; the home starts with the tunnel alone, then a listener is added and
the home reloaded. Then traffic from a client namespace (TLS by SNI, UDP), the real client address checked at the
service, `wiregate status` with no argument on both hosts, and the metrics.

client 203.0.113.2 ── 203.0.113.1 vps 198.51.100.1 ── 198.51.100.2 home; vps.example.net -> 198.51.100.1 through
$WIREGATE_HOSTS (the name stays in the files as the README writes it).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pytest

from wiregate.testing.system import wait_for
from wiregate.testing.userhost import UserHost

pytestmark = [pytest.mark.netns, pytest.mark.timeout(90)]

CLIENT_IP, VPS_PUBLIC_IP, VPS_IP, HOME_IP = "203.0.113.2", "203.0.113.1", "198.51.100.1", "198.51.100.2"

# what README "Getting started" shows the user adding, with the home targets on this lab's loopback
README_SERVICES = """
[[services]]
name = "https"
listen = ["0.0.0.0:443", "[::]:443"]

[[services]]
name = "dns"
protocol = "udp"
listen = ["0.0.0.0:53"]
proxy_protocol = "v2"
"""

README_LISTENERS = """
[[listeners]]
name = "https"
listen = "tunnel:443"   # the home tunnel address

[[listeners.routes]]
name = "blog"
sni = ["blog.example.org"]
target = "127.0.0.1:8443"
send_proxy = "v2"      # the service reads PROXY v2

[[listeners.routes]]
name = "wiki"
sni = ["wiki.example.org"]
target = "127.0.0.1:8443"
send_proxy = "v2"

[[listeners]]
name = "dns"
protocol = "udp"
listen = "tunnel:53"

[[listeners.routes]]
name = "dns"
target = "127.0.0.1:5353"
send_proxy = "v2"
"""

CLIENT = r"""
import socket, ssl, sys
host = sys.argv[1]
def tls(name):
    ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, 443), timeout=5) as s, ctx.wrap_socket(s, server_hostname=name) as t:
            t.sendall(b"hello\n")
            return t.recv(200).decode().strip()
    except (OSError, ssl.SSLError) as e:
        return f"FAILED {type(e).__name__}"
def udp():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.settimeout(1)
        for _ in range(5):
            u.sendto(b"ping", (host, 53))
            try:
                return u.recv(2000).decode()
            except socket.timeout:
                pass
        return "no answer"
for name in sys.argv[2:]:
    print(name, "=", udp() if name == "udp" else tls(name), flush=True)
"""


def _client(client_ns, *which: str) -> dict[str, str]:
    r = client_ns.run([sys.executable, "-c", CLIENT, VPS_PUBLIC_IP, *which], check=False, timeout=60)
    return dict(line.split(" = ", 1) for line in r.stdout.splitlines() if " = " in line)


def _status(host: UserHost) -> dict:
    r = host.cli("status", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _metrics(host: UserHost, port: int) -> str:
    code = f"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{port}/metrics', timeout=5)" \
           ".read().decode())"
    r = host.run([sys.executable, "-c", code])
    assert r.returncode == 0, r.stderr
    return r.stdout


def _reload(proc: subprocess.Popen, host: UserHost, ok: int) -> None:
    """SIGHUP, as `systemctl reload` sends it; then wait until the node counts `ok` applied reloads."""
    proc.send_signal(signal.SIGHUP)
    wait_for(lambda: _status(host)["reloads"]["ok"] >= ok or _status(host)["reloads"]["refused"] > 0, 10, 0.1)
    assert _status(host)["reloads"] == {"ok": ok, "refused": 0}


def test_readme_getting_started_with_the_files_init_site_add_and_join_write(lab, tmp_path):
    t0 = time.monotonic()
    hosts = tmp_path / "hosts"
    hosts.write_text(f"{VPS_IP} vps.example.net\n")
    env = {"WIREGATE_HOSTS": str(hosts)}
    client = lab.netns("c")
    vps, home = UserHost.make(lab, "v", tmp_path, env), UserHost.make(lab, "h", tmp_path, env)
    lab.link(client, f"{CLIENT_IP}/24", vps.ns, f"{VPS_PUBLIC_IP}/24")
    lab.link(vps.ns, f"{VPS_IP}/24", home.ns, f"{HOME_IP}/24")
    etc_vps, etc_home = tmp_path / "vps-etc", tmp_path / "home-etc"
    gw_log, home_log = tmp_path / "gateway.log", tmp_path / "home.log"

    # on the VPS: init, add [[services]], run; then site add and reload the running gateway
    r = vps.cli("init", "gateway", "--endpoint", "vps.example.net", "--config-dir", str(etc_vps))
    assert r.returncode == 0, r.stderr
    gw_file = etc_vps / "gateway.toml"
    gw_file.write_text(gw_file.read_text() + README_SERVICES)
    assert vps.cli("check", str(gw_file)).returncode == 0
    gw = vps.start_node(gw_file, gw_log, "--access-log")
    r = vps.cli("site", "add", "home", "--config-dir", str(etc_vps))
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert "systemctl reload wiregate-gateway" in r.stderr  # the unit install-service writes for this file
    _reload(gw, vps, ok=1)  # fails while mode = "auto" is compared with the resolved mode

    # at home: join, run (the tunnel alone), add [[listeners]], check, reload
    r = home.cli("join", token, "--config-dir", str(etc_home))
    assert r.returncode == 0, r.stderr
    home_file = etc_home / "home.toml"
    h = home.start_node(home_file, home_log)
    home_file.write_text(home_file.read_text() + README_LISTENERS)
    r = home.cli("check", str(home_file))
    assert r.returncode == 0 and "2 listener(s)" in r.stdout, r.stdout + r.stderr
    samples = lab.spawn(home.ns, [sys.executable, "-m", "wiregate.testing.samples", "--tls", "127.0.0.1:8443",
                                  "--certdir", str(tmp_path / "certs"), "--names", "blog.example.org,wiki.example.org",
                                  "--udp", "127.0.0.1:5353", "--proxy"], stdout=subprocess.PIPE, text=True)
    assert samples.stdout.readline().strip() == "ready"
    _reload(h, home, ok=1)

    # traffic from the client: the services see the client's own address
    seen: dict[str, str] = {}

    def served() -> bool:
        seen.update(_client(client, "blog.example.org", "wiki.example.org", "udp"))
        return all(not v.startswith(("FAILED", "no answer")) for v in seen.values())
    wait_for(served, 30, 0.3)  # the gateway's health checks bring the site up once the home listens
    assert seen["blog.example.org"].startswith(f"tls blog.example.org client {CLIENT_IP}:"), seen
    assert seen["wiki.example.org"].startswith(f"tls wiki.example.org client {CLIENT_IP}:"), seen
    assert seen["udp"].startswith(f"udp client {CLIENT_IP}:") and seen["udp"].endswith("ping"), seen
    # two SNI routes and no default_route: any other name is refused, not served
    assert _client(client, "other.example.org")["other.example.org"].startswith("FAILED")

    # status with no argument finds the one node of each host, in words
    for host, role in ((vps, "gateway"), (home, "home")):
        r = host.cli("status")
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(f"{role} {role} (pid ") and "reloads ok 1 refused 0" in r.stdout, r.stdout
        assert "handshake never" not in r.stdout and " ago" in r.stdout, r.stdout
    st = _status(vps)
    assert [b["state"] for b in st["relay"]["services"]["https"]["backends"]] == ["up"]

    # metrics on loopback in each host, at the default ports init and join wrote
    m = _metrics(vps, 9851)
    assert 'wiregate_reloads_total{node="gateway",result="ok"} 1.0' in m, m
    assert 'wiregate_backend_up{backend="home",service="https"} 1.0' in m.splitlines(), m
    accepted = re.search(r'^wiregate_service_events_total\{event="accepted",service="https"\} (\d+)\.0$', m, re.M)
    assert accepted and int(accepted.group(1)) >= 2, m  # blog and wiki at least
    m = _metrics(home, 9852)
    assert 'wiregate_reloads_total{node="home",result="ok"} 1.0' in m, m
    accepted = re.search(r'^wiregate_listener_events_total\{event="accepted",listener="https"\} (\d+)\.0$', m, re.M)
    assert accepted and int(accepted.group(1)) >= 2, m

    # what the logs say: the real client at home and (with --access-log) at the gateway; no error, no traceback
    home_text, gw_text = home_log.read_text(), gw_log.read_text()
    assert f"listener https: client {CLIENT_IP}:" in home_text
    assert re.search(rf" INFO wiregate\.relay\.access: https: {CLIENT_IP}:\d+ -> home via {VPS_PUBLIC_IP}:443\n",
                     gw_text), gw_text
    assert re.search(rf" INFO wiregate\.relay\.access: dns: UDP flow {CLIENT_IP}:\d+ -> home via {VPS_PUBLIC_IP}:53\n",
                     gw_text), gw_text
    for text in (home_text, gw_text):
        assert " ERROR " not in text and "Traceback" not in text, text
    print(f"README getting started walked in {time.monotonic() - t0:.1f}s")

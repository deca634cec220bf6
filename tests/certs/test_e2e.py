"""ACME end to end with a real CA (pebble): pebble -> gateway relay -> tunnel -> home ingress answers TLS-ALPN-01
and HTTP-01; the issued chain verifies with pebble's root; curl and Python ssl see the certificate through the
gateway; the key exists only at home; renewal swaps the certificate under an open connection; a stopped CA keeps
the old certificate; a restart reuses stored certificates without a new order."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.certs.conftest import HOME, AcmeLab
from tests.system.conftest import wiregate
from wiregate.testing.acme import AcmeSystem
from wiregate.testing.peers import which
from wiregate.testing.system import CLIENT_IP, VPS_PUBLIC_IP, wait_for

pytestmark = [pytest.mark.netns, pytest.mark.peer, pytest.mark.timeout(240)]

# In the client namespace: TLS to the gateway verified with pebble's root; prints the serial and the first answer.
# Then, for each line on stdin, sends it on the SAME connection and prints the echo (a connection held open).
HOLD = r"""
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
s = ctx.wrap_socket(socket.create_connection((sys.argv[2], 443), timeout=10), server_hostname=sys.argv[3])
print(s.getpeercert()["serialNumber"], flush=True)
print(s.recv(200).decode().strip(), flush=True)
for line in sys.stdin:
    s.sendall(line.encode())
    print(s.recv(200).decode().strip(), flush=True)
"""

GET = r"""
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
with ctx.wrap_socket(socket.create_connection((sys.argv[2], 443), timeout=10), server_hostname=sys.argv[3]) as s:
    serial = s.getpeercert()["serialNumber"]
    s.sendall(b"GET / HTTP/1.1\r\nHost: " + sys.argv[3].encode() + b"\r\nConnection: close\r\n\r\n")
    data = b""
    while (c := s.recv(4096)):
        data += c
print(serial, data.split(b"\r\n\r\n", 1)[-1].decode().strip())
"""


def _once(al: AcmeSystem, root: str) -> subprocess.CompletedProcess:
    """One TLS connection to app.example through the gateway: serial, then the echo service's greeting."""
    return al.sl.client.run([sys.executable, "-c", HOLD, root, VPS_PUBLIC_IP, "app.example"], input="", check=False)


def _root(al: AcmeSystem, tmp_path) -> str:
    root = al.pb.root_pem()
    assert root.startswith(b"-----BEGIN CERTIFICATE-----")
    p = tmp_path / "pebble-root.pem"
    p.write_bytes(root)
    return str(p)


def _chain_verifies(chain_file, root_file, name: str) -> None:
    from cryptography import x509
    from cryptography.x509.verification import PolicyBuilder, Store

    certs = x509.load_pem_x509_certificates(Path(chain_file).read_bytes())
    roots = Store(x509.load_pem_x509_certificates(Path(root_file).read_bytes()))
    verifier = PolicyBuilder().store(roots).build_server_verifier(x509.DNSName(name))
    verifier.verify(certs[0], certs[1:])  # raises when the chain does not lead to pebble's root


def _files_route(home_dir, marker) -> str:
    """A passthrough route whose certificate is written to files, with a deploy hook that leaves a marker."""
    hook = shlex.join([sys.executable, "-c", "import sys; open(sys.argv[1], 'w').write('deployed')", str(marker)])
    return f"""
[[listeners.routes]]
name = "files"
sni = ["files.example"]
target = "127.0.0.1:7007"
acme_cert_file = "{home_dir / 'deploy' / 'files.pem'}"
acme_key_file = "{home_dir / 'deploy' / 'files.key'}"
acme_deploy_hook = {json.dumps(hook)}
"""


def test_tls_alpn_01_and_http_01_through_the_gateway_then_restart_reuses_them(lab, tmp_path):
    marker = tmp_path / "deployed"
    home_dir = tmp_path / "sys" / "home"
    al = AcmeLab(lab, tmp_path, home=HOME.replace("[[listeners]]\nname = \"http\"",
                                                  _files_route(home_dir, marker) + "\n[[listeners]]\nname = \"http\""))
    sl = al.sl
    assert sl.home_dir == home_dir
    t0 = time.monotonic()
    sl.start_home()
    took = al.wait_issued(3)
    print(f"\nacme: 3 certificates issued {time.monotonic() - t0:.1f}s after `wiregate run` (wait {took:.1f}s)")
    certs = {c["names"][0]: c for c in al.certificates()}
    assert certs["app.example"]["challenge"] == "tls-alpn-01" and certs["web.example"]["challenge"] == "http-01"
    st = wiregate("status", str(sl.dir / "home.ctl"))
    assert "app.example (tls-alpn-01): expires" in st.stdout and "web.example (http-01): expires" in st.stdout
    root = _root(al, tmp_path)
    store = sl.home_dir / "acme"
    chains = sorted(store.glob("*/fullchain.pem"))
    assert len(chains) == 3
    for chain in chains:
        _chain_verifies(chain, root, chain.parent.name.split("-")[0])
    # the passthrough route's files: the same chain, the key 0600, and the deploy hook ran
    deployed = home_dir / "deploy"
    _chain_verifies(deployed / "files.pem", root, "files.example")
    assert (deployed / "files.key").stat().st_mode & 0o777 == 0o600
    wait_for(marker.exists, 10)
    assert marker.read_text() == "deployed"
    # Python ssl with pebble's root as CA, through the gateway, to the TLS-ALPN-01 route (echo service)
    r = _once(al, root)
    assert r.returncode == 0, r.stderr
    serial_app, answer = r.stdout.splitlines()[:2]
    assert answer.startswith(f"echo client {CLIENT_IP}:")
    # ... and to the HTTP-01 route (plain HTTP service behind TLS termination, client address kept)
    r = sl.client_python(GET, root, VPS_PUBLIC_IP, "web.example")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split(" ", 1)[1].strip() == f"http web.example client {CLIENT_IP}"
    # curl, pebble's root as CA
    r = sl.client.run([which("curl"), "-sS", "--cacert", root, "--resolve", f"web.example:443:{VPS_PUBLIC_IP}",
                       "https://web.example/"], check=False)
    assert r.returncode == 0 and r.stdout.strip() == f"http web.example client {CLIENT_IP}", r.stderr
    # normal traffic on the same listener is untouched: an unknown name is refused as before, no challenge answer
    # the certificate keys exist only in the home config directory
    keys = {p.read_bytes() for p in store.glob("*/privkey.pem")}
    assert len(keys) == 3
    everywhere = [p for p in tmp_path.rglob("*") if p.is_file() and p.stat().st_size < 65536 and
                  p.read_bytes() in keys]
    assert everywhere and all(sl.home_dir in p.parents for p in everywhere), everywhere
    assert all((p.stat().st_mode & 0o077) == 0 for p in everywhere)
    # a restart reuses the stored certificates: no new order, the same certificate served
    sl.stop_home()
    sl.start_home()
    marker.unlink()
    wait_for(lambda: len(al.certificates()) == 3, 20)
    assert all(c["orders"] == 0 and c["not_after"] for c in al.certificates()), al.certificates()
    r = _once(al, root)
    assert r.stdout.splitlines()[0] == serial_app
    assert "account registered" not in sl.log_tail("home", 100000).split("ready")[-1]
    assert not marker.exists()  # nothing new to deploy


def test_short_lived_certificate_renews_under_an_open_connection_and_a_stopped_ca_keeps_it(lab, tmp_path):
    home = HOME.split("[[listeners.routes]]\nname = \"web\"")[0]  # the TLS-ALPN-01 route only
    al = AcmeLab(lab, tmp_path, validity=30, home=home)
    sl = al.sl
    sl.start_home()
    al.wait_issued(1)
    root = _root(al, tmp_path)
    hold = sl.lab.spawn(sl.client, [sys.executable, "-c", HOLD, root, VPS_PUBLIC_IP, "app.example"],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = hold.stdout.readline().strip()
    assert hold.stdout.readline().startswith(f"echo client {CLIENT_IP}:")
    # renewal at 2/3 of 30 s: a new certificate for new connections
    al.wait_issued(1, timeout=60, issued=2)
    r = _once(al, root)
    second = r.stdout.splitlines()[0]
    assert second != first
    # the connection opened on the old certificate still carries data
    hold.stdin.write("still here\n")
    hold.stdin.flush()
    assert hold.stdout.readline().strip() == "still here"
    hold.stdin.close()
    # the CA goes away: renewal fails with one clear line, the current certificate stays in service
    chain = next((sl.home_dir / "acme").glob("*/fullchain.pem"))
    kept = chain.read_bytes()
    al.pb.stop()
    wait_for(lambda: any(c["last_error"] for c in al.certificates()), 60)
    (c,) = al.certificates()
    assert "app.example" in c["last_error"] and "unreachable" in c["last_error"], c["last_error"]
    log = sl.log_tail("home", 200000)
    lines = [ln for ln in log.splitlines() if "acme: certificate for app.example failed" in ln]
    assert lines and "keeping the certificate valid until" in lines[0] and "Traceback" not in log
    assert chain.read_bytes() == kept
    r = _once(al, root)  # still valid for ~10 s after the failed renewal at 20 s
    assert r.returncode == 0 and r.stdout.splitlines()[0] == second, r.stderr


def test_a_failing_challenge_gives_one_clear_line_and_other_names_are_unaffected(lab, tmp_path):
    # bad.example asks for HTTP-01 but this home has no listener on port 80: the gateway's port 80 leads nowhere
    home = HOME.split("[[listeners.routes]]\nname = \"web\"")[0] + """
[[listeners]]
name = "lan"
listen = "127.0.0.1:9443"

[[listeners.routes]]
name = "bad"
sni = ["bad.example"]
target = "127.0.0.1:7007"
tls = "acme"
acme_challenge = "http-01"
"""
    al = AcmeLab(lab, tmp_path, home=home)
    sl = al.sl
    sl.start_home()

    al.wait_issued_and_failed("app.example", "bad.example")
    bad = next(c for c in al.certificates() if c["names"] == ["bad.example"])
    assert bad["not_after"] is None and "bad.example" in bad["last_error"] and "http-01 failed" in bad["last_error"]
    lines = [ln for ln in sl.log_tail("home", 200000).splitlines() if "acme: certificate for bad.example failed" in ln]
    print("\n" + lines[0])
    assert len(lines) == 1 and "no certificate yet" in lines[0] and "retry in" in lines[0]
    assert "Traceback" not in sl.log_tail("home", 200000)


INTERNAL = """
[[listeners]]
name = "https"
listen = "0.0.0.0:443"

[[listeners.routes]]
name = "lan"
sni = ["lan.example"]
target = "127.0.0.1:7007"
send_proxy = "v2"
tls = "acme"
internal_only = true
"""


def test_internal_only_route_gets_a_public_certificate_but_refuses_public_clients(lab, tmp_path):
    al = AcmeLab(lab, tmp_path, home=INTERNAL)
    sl = al.sl
    sl.start_home()
    al.wait_issued(1)  # the CA's TLS-ALPN-01 validation came from the internet, through the gateway
    root = _root(al, tmp_path)
    # a LAN client (here: the home namespace itself) reaches the service with the public certificate
    r = sl.home.run([sys.executable, "-c", HOLD, root,
                     "127.0.0.1", "lan.example"], input="", check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[1].startswith("echo client 127.0.0.1:")
    # a public client through the gateway is refused, with the reason in the log
    r = sl.client.run([sys.executable, "-c", HOLD, root, VPS_PUBLIC_IP, "lan.example"], input="", check=False)
    assert r.returncode != 0 and "echo client" not in r.stdout
    lines = [ln for ln in sl.log_tail("home", 200000).splitlines() if "not_internal" in ln]
    assert lines and f"client {CLIENT_IP}" in lines[0] and "internal_only" in lines[0], lines


# An earlier run that made an order and stopped before answering its challenges (as if killed there).
PRE_ORDER = r"""
import asyncio, sys
from wiregate.acme.client import AcmeClient
from wiregate.acme.storage import Store, load_or_create_account_key, new_private_key
from wiregate.config import load

a = load(sys.argv[1]).acme
names = ("app.example",)

async def main():
    st = Store(a.storage_dir)
    st.ensure()
    cl = AcmeClient(a.directory, load_or_create_account_key(a.account_key_file), ca_bundle=str(a.ca_bundle),
                    email=a.email, agree_tos=True)
    st.save_account_url(a.directory, await cl.connect(st.account_url(a.directory)))
    key = new_private_key(a.key_type)

    def killed(url):
        st.save_pending(names, url, key)
        print(url)
        raise SystemExit(0)

    async def nothing(tasks):
        pass

    await cl.issue(names, key, "tls-alpn-01", nothing, nothing, on_order=killed)

asyncio.run(main())
"""


def test_an_order_left_by_an_interrupted_run_is_continued_not_duplicated(lab, tmp_path):
    home = HOME.split("[[listeners.routes]]\nname = \"web\"")[0]
    al = AcmeLab(lab, tmp_path, home=home)
    sl = al.sl
    r = sl.home.run([sys.executable, "-c", PRE_ORDER, str(sl.home_file)], check=False)
    assert r.returncode == 0 and r.stdout.startswith("https://"), r.stderr
    assert al.pb.log_tail(100000).count("Added order") == 1
    sl.start_home()
    al.wait_issued(1)
    assert "continuing the order of an earlier run (pending)" in sl.log_tail("home", 100000)
    assert al.pb.log_tail(100000).count("Added order") == 1  # no second order at the CA
    assert not list((sl.home_dir / "acme").glob("*/pending*"))


def test_a_reload_adding_an_acme_route_orders_only_the_new_certificate(lab, tmp_path):
    from wiregate.control import request

    home = HOME.split("[[listeners.routes]]\nname = \"web\"")[0]
    al = AcmeLab(lab, tmp_path, home=home)
    sl = al.sl
    sl.start_home()
    al.wait_issued(1)
    root = _root(al, tmp_path)
    first = _once(al, root).stdout.splitlines()[0]
    text = sl.home_file.read_text()
    sl.home_file.write_text(text.replace('tls = "acme"\n', 'tls = "acme"\n\n[[listeners.routes]]\nname = "app2"\n'
                                         'sni = ["app2.example"]\ntarget = "127.0.0.1:7007"\nsend_proxy = "v2"\n'
                                         'tls = "acme"\n', 1))
    assert request(sl.dir / "home.ctl", {"cmd": "reload"})["ok"]

    def both() -> bool:
        c = {x["names"][0]: x for x in al.certificates()}
        return set(c) == {"app.example", "app2.example"} and c["app2.example"]["issued"] == 1
    wait_for(both, 60)
    assert {x["names"][0]: x["orders"] for x in al.certificates()} == {"app.example": 0, "app2.example": 1}
    assert _once(al, root).stdout.splitlines()[0] == first  # the running certificate was kept
    r = sl.client.run([sys.executable, "-c", HOLD, root, VPS_PUBLIC_IP, "app2.example"], input="", check=False)
    assert r.returncode == 0 and r.stdout.splitlines()[1].startswith(f"echo client {CLIENT_IP}:"), r.stderr


def test_an_account_the_ca_does_not_know_is_registered_again(lab, tmp_path):
    home = HOME.split("[[listeners.routes]]\nname = \"web\"")[0]
    al = AcmeLab(lab, tmp_path, home=home)
    sl = al.sl
    # a stored account URL this CA never issued (a reset CA, a deactivated account)
    (sl.home_dir / "acme").mkdir(mode=0o700)
    (sl.home_dir / "acme" / "account.json").write_text(json.dumps(
        {"directory": al.pb.directory, "url": al.pb.directory.replace("/dir", "/my-account/0000")}))
    sl.start_home()
    al.wait_issued(1)
    log = sl.log_tail("home", 100000)
    assert "does not know the stored account; registering again" in log and "account registered" in log
    assert json.loads((sl.home_dir / "acme" / "account.json").read_text())["url"].endswith("/my-account/0000") is False

"""`wiregate run` on the home side runs under uvloop; a service that resets right after its answer must not leave
the client's connection hanging on any of the ingress's byte paths (pass-through, PROXY to the service, TLS
terminated at the ingress), and a UDP flow whose service refused a datagram must still carry the replies once the
service is up.

uvloop stops an add_reader()/sock_recv() watcher whose socket reports EPOLLERR (a reset) without calling it: a
connection waiting for the service's next bytes when the reset came then waited for idle_timeout (an hour). The
ingress moves bytes through the shared data path (`wiregate.datapath`), whose private epoll set hands an error to
the reader like any readiness. The home file is the one `join` writes, with listeners appended; the service, the
client and the node share one namespace (loopback only).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from wiregate.config import pairing
from wiregate.testing.samples import make_cert

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

REQUESTS = 24  # per listener; half the resets come at once, half while the ingress waits for more bytes

# Answers each connection's request, then resets it (SO_LINGER 0): at once, or after a short pause so that the
# ingress is already waiting for the service's next bytes when the reset arrives (the case uvloop dropped).
SERVICE = r"""
import socket, struct, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(64)
print("ready", flush=True)
n = 0
while True:
    c, _ = s.accept()
    c.settimeout(5)
    got = b""
    try:
        while b"\r\n\r\n" not in got:
            chunk = c.recv(4096)
            if not chunk:
                break
            got += chunk
        first = got.split(b"\r\n", 1)[0]
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + first[:100].ljust(100))
        n += 1
        if n % 2:
            time.sleep(0.03)
    except OSError:
        pass
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
"""

# Sequential requests per listener, each read to its end (EOF, reset or TLS EOF) within 5 s; prints what it saw.
CLIENT = r"""
import json, socket, ssl, sys, time
port, kind, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
out = []
for i in range(count):
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    s = ctx.wrap_socket(raw, server_hostname="svc.example.org") if kind == "tls" else raw
    t0 = time.monotonic()
    s.sendall(b"GET /%d HTTP/1.1\r\nHost: svc.example.org\r\n\r\n" % i)
    got, end = b"", "eof"
    while True:
        try:
            chunk = s.recv(4096)
        except TimeoutError:
            end = "hang"
            break
        except (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
            end = "reset"
            break
        if not chunk:
            break
        got += chunk
    s.close()
    out.append({"i": i, "end": end, "got": got.decode(errors="replace"), "s": round(time.monotonic() - t0, 3)})
    if end == "hang":
        break
print(json.dumps(out))
"""

# A UDP flow whose service was not there yet (its first datagram drew an ICMP "port unreachable", EPOLLERR on the
# flow's connected socket), then the service starts: the replies must reach the client on the same flow.
UDP_CLIENT = r"""
import socket, sys, time
port, target = int(sys.argv[1]), int(sys.argv[2])
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
c.connect(("127.0.0.1", port))
c.send(b"first")  # the flow is made and forwards to a closed port: ICMP port unreachable
time.sleep(0.3)  # (lets the ICMP error reach the flow before the service exists; not an assertion's wait)
svc = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
svc.bind(("127.0.0.1", target))
svc.settimeout(0.2)
c.settimeout(0.2)
deadline = time.monotonic() + 5
while time.monotonic() < deadline:
    c.send(b"again")
    try:
        data, addr = svc.recvfrom(100)
        svc.sendto(b"reply to " + data, addr)
    except TimeoutError:
        continue
    try:
        print(c.recv(100).decode())
        break
    except (TimeoutError, ConnectionRefusedError):
        continue
else:
    print("no reply in 5 s")
"""

LISTENERS = """
[[listeners]]
name = "plain"
listen = "127.0.0.1:7101"
[[listeners.routes]]
name = "svc"
target = "127.0.0.1:7200"

[[listeners]]
name = "proxied"
listen = "127.0.0.1:7102"
[[listeners.routes]]
name = "svc"
target = "127.0.0.1:7200"
send_proxy = "v1"

[[listeners]]
name = "tls"
listen = "127.0.0.1:7103"
[[listeners.routes]]
name = "svc"
sni = ["svc.example.org"]
tls_cert = "{cert}"
tls_key = "{key}"
target = "127.0.0.1:7200"

[[listeners]]
name = "udp"
listen = "127.0.0.1:7104"
protocol = "udp"
[[listeners.routes]]
name = "svc"
target = "127.0.0.1:7201"
"""


def test_services_that_reset_after_answering_never_hang_a_client_of_wiregate_run_home(lab, tmp_path):
    from wiregate.testing.userhost import UserHost

    host = UserHost.make(lab, "h", tmp_path)
    gw = pairing.init_gateway(tmp_path / "vps", "198.51.100.1")
    home = pairing.join(pairing.site_add(gw, "home").token, tmp_path / "home")
    cert, key = make_cert("svc.example.org", tmp_path / "certs")
    home.write_text(home.read_text() + LISTENERS.format(cert=cert, key=key))
    service = host.spawn([sys.executable, "-c", SERVICE, "7200"], stdout=subprocess.PIPE, text=True)
    assert service.stdout.readline().strip() == "ready"
    log = tmp_path / "home.log"
    node = host.start_node(home, log)
    try:
        for port, kind, first in ((7101, "plain", "GET /"), (7102, "proxied", "PROXY TCP4 127.0.0.1 127.0.0.1 "),
                                  (7103, "tls", "GET /")):
            r = host.run([sys.executable, "-c", CLIENT, str(port), kind, str(REQUESTS)], timeout=60)
            assert r.returncode == 0, r.stderr
            seen = json.loads(r.stdout)
            hung = [x for x in seen if x["end"] == "hang"]
            assert not hung, f"{kind}: connection {hung[0]['i']} still open 5 s after the service's reset " \
                             f"(got {hung[0]['got']!r}); log:\n{log.read_text()[-3000:]}"
            assert len(seen) == REQUESTS
            for x in seen:  # the answer always arrives before the end (FIN or reset) is passed on
                assert x["got"].startswith("HTTP/1.1 200 OK\r\n") and first in x["got"], (kind, x)
                assert x["s"] < 2.0, (kind, x)
        r = host.run([sys.executable, "-c", UDP_CLIENT, "7104", "7201"], timeout=30)
        assert r.stdout.strip() == "reply to again", (r.stdout, r.stderr, log.read_text()[-3000:])
        text = log.read_text()
        assert "uvloop event loop" in text, text[-2000:]
        assert "Traceback" not in text and "Fatal error" not in text, text[-3000:]
    finally:
        node.send_signal(signal.SIGTERM)
        try:
            node.wait(30)  # (a hung connection holds the drain for its 10 s)
        finally:
            service.kill()
            service.wait(5)

"""The ingress (its own process) with real peers: HAProxy send-proxy-v2 in front, nginx proxy_protocol behind,
curl --haproxy-protocol as a trusted client, real TLS clients for SNI routing, keep-alive HTTP for XFF."""

from __future__ import annotations

import datetime
import http.client
import json
import socket
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from wiregate.proxyproto import encode_v1, encode_v2
from wiregate.testing.haproxy_pp import HAProxy, Catcher, wait_listening
from wiregate.testing.ingress_proc import IngressProcess
from wiregate.testing.peers import free_port, need, nginx_preamble, stop, which

pytestmark = [pytest.mark.peer, pytest.mark.timeout(60)]


# ---- helpers -------------------------------------------------------------------------------------------------

class Recorder(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive service: records each request's headers and answers with them as JSON."""

    protocol_version = "HTTP/1.1"
    seen: list

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.seen.append({"path": self.path, "headers": self.headers.items(), "peer": self.client_address[0]})
        body = json.dumps({"name": self.server.label, "headers": self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class HttpService:
    def __init__(self, label: str, tls: ssl.SSLContext | None = None) -> None:
        handler = type("H", (Recorder,), {"seen": []})
        self.seen = handler.seen
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.label = label
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HttpService:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def make_certs(d: Path, names: list[str]) -> dict:
    """A CA and one certificate per name (keys 0600), generated now with `cryptography`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def build(subject, key, issuer, issuer_key, ca=False, san=None):
        b = (x509.CertificateBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
             .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san:
            b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    pem = serialization.Encoding.PEM
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = build("ingress test CA", ca_key, "ingress test CA", ca_key, ca=True)
    (d / "ca.pem").write_bytes(ca.public_bytes(pem))
    out = {"ca": str(d / "ca.pem")}
    for n in names:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = build(n, key, "ingress test CA", ca_key, san=n)
        (d / f"{n}.crt").write_bytes(cert.public_bytes(pem))
        kp = d / f"{n}.key"
        kp.touch(0o600)
        kp.chmod(0o600)
        kp.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        out[n] = (str(d / f"{n}.crt"), str(kp))
    return out


def server_ctx(cert: tuple[str, str]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*cert)
    return ctx


def listener(port: int, routes: list, **kw) -> dict:
    return {"name": "web", "listen": ["127.0.0.1", port], "routes": routes, **kw}


def exchange(port: int, data: bytes, src: str = "127.0.0.1", timeout: float = 5.0) -> bytes:
    """Connect from `src`, send, half-close, read to the end."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(src, 0)) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


# ---- HAProxy in front, nginx behind --------------------------------------------------------------------------

def test_haproxy_send_proxy_v2_in_front_delivers_the_client_address_to_the_service(tmp_path):
    need("haproxy")
    ing_port, hap_port = free_port(), free_port()
    with Catcher(payload_len=5) as svc:
        cfg = {"listeners": [listener(ing_port, [{"name": "svc", "target": ["127.0.0.1", svc.port],
                                                   "send_proxy": "v1"}], default_route="svc",
                                      trusted=["127.0.0.1"])]}
        hap = (f"frontend fe\n  bind 127.0.0.1:{hap_port}\n  default_backend be\n"
               f"backend be\n  server ing 127.0.0.1:{ing_port} send-proxy-v2\n")
        with IngressProcess(cfg, tmp_path) as ing, HAProxy(hap, wait_for=[("127.0.0.1", hap_port)]):
            exchange(hap_port, b"hello", src="127.0.0.5")
            got = svc.next()
            assert got.header is not None and got.header.version == 1
            assert got.header.source[0] == "127.0.0.5"  # the client, not HAProxy's 127.0.0.1
            assert got.header.destination == ("127.0.0.1", hap_port)
            assert got.payload == b"hello"
            ing.wait_log("client 127.0.0.5:")


NGINX_PP = """
stream {{
    log_format pp '$proxy_protocol_addr $proxy_protocol_port $remote_addr';
    access_log {log} pp;
    server {{ listen 127.0.0.1:{p1} proxy_protocol; return "v-ok\\n"; }}
}}
"""


def test_ingress_re_emits_proxy_v1_and_v2_that_nginx_reads(tmp_path):
    need("nginx")
    p_nginx, p_ing = free_port(), free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(nginx_preamble(tmp_path) + NGINX_PP.format(log=tmp_path / "pp.log", p1=p_nginx))
    proc = subprocess.Popen([which("nginx"), "-c", str(conf), "-p", str(tmp_path)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_listening("127.0.0.1", p_nginx, 10, proc)
        routes = [{"name": "n1", "target": ["127.0.0.1", p_nginx], "send_proxy": "v1", "host": ["v1.example"]},
                  {"name": "n2", "target": ["127.0.0.1", p_nginx], "send_proxy": "v2", "host": ["v2.example"]}]
        cfg = {"listeners": [listener(p_ing, routes, trusted=["127.0.0.1"])]}
        with IngressProcess(cfg, tmp_path / "ing"):
            for i, name in enumerate(("v1", "v2")):
                hdr = (encode_v1 if i == 0 else encode_v2)((f"203.0.113.{7 + i}", 40000 + i), ("198.51.100.1", 443))
                req = f"GET / HTTP/1.1\r\nHost: {name}.example\r\n\r\n".encode()
                assert exchange(p_ing, hdr + req) == b"v-ok\n"
    finally:
        stop(proc)
    lines = (tmp_path / "pp.log").read_text().split("\n")
    assert "203.0.113.7 40000 127.0.0.1" in lines and "203.0.113.8 40001 127.0.0.1" in lines


# ---- curl as a trusted client, HTTP keep-alive -------------------------------------------------------------------

def test_curl_haproxy_protocol_is_a_trusted_client_and_plain_curl_from_there_is_refused(tmp_path):
    need("curl")
    port = free_port()
    with HttpService("A") as svc:
        cfg = {"listeners": [listener(port, [{"name": "a", "target": ["127.0.0.1", svc.port],
                                               "host": ["a.example"], "http_headers": True}],
                                      trusted=["127.0.0.0/8"])]}
        with IngressProcess(cfg, tmp_path) as ing:
            base = ["curl", "-sS", "--max-time", "5", "--interface", "127.0.0.9", "-H", "Host: a.example",
                    "-H", "X-Forwarded-For: 6.6.6.6"]
            out = subprocess.run([*base, "--haproxy-protocol", f"http://127.0.0.1:{port}/x"],
                                 capture_output=True, timeout=10)
            assert out.returncode == 0, out.stderr
            headers = dict(json.loads(out.stdout)["headers"])
            # a trusted client's own forwarding headers are kept and ours appended; X-Real-IP is the client
            assert headers["X-Forwarded-For"] == "6.6.6.6, 127.0.0.9"
            assert headers["X-Real-IP"] == "127.0.0.9"
            out = subprocess.run([*base, f"http://127.0.0.1:{port}/x"], capture_output=True, timeout=10)
            assert out.returncode != 0
            log = ing.wait_log("missing_header")
            assert "refused 127.0.0.9" in log and "sent no PROXY header" in log
            assert len(svc.seen) == 1


def test_host_routing_adds_forwarding_headers_to_every_keep_alive_request_and_strips_the_clients(tmp_path):
    port = free_port()
    with HttpService("A") as a, HttpService("B") as b:
        routes = [{"name": "a", "target": ["127.0.0.1", a.port], "host": ["a.example"], "http_headers": True},
                  {"name": "b", "target": ["127.0.0.1", b.port], "host": ["*.b.example"], "http_headers": True}]
        cfg = {"listeners": [listener(port, routes, trusted=["10.0.0.1"])]}
        with IngressProcess(cfg, tmp_path):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            for i in range(3):
                conn.request("GET", f"/r{i}", headers={"Host": "a.example", "X-Forwarded-For": "6.6.6.6",
                                                        "Forwarded": "for=6.6.6.6", "X-Real-IP": "6.6.6.6"})
                resp = conn.getresponse()
                assert json.loads(resp.read())["name"] == "A"
            sock_before = conn.sock
            conn.request("GET", "/other", headers={"Host": "x.b.example"})  # another route on the same connection
            resp = conn.getresponse()
            assert resp.status == 421
            conn.close()
            assert sock_before is not None
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/", headers={"Host": "x.b.example"})
            assert json.loads(conn.getresponse().read())["name"] == "B"
            conn.request("GET", "/", headers={"Host": "nope.example"})
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/", headers={"Host": "nope.example"})
            assert conn.getresponse().status == 404
            conn.close()
        assert [s["path"] for s in a.seen] == ["/r0", "/r1", "/r2"]
        assert len({s["peer"] for s in a.seen}) == 1
        for s in a.seen:
            h = dict(s["headers"])
            assert h["X-Forwarded-For"] == "127.0.0.1" and h["X-Real-IP"] == "127.0.0.1"
            assert h["Forwarded"] == 'for=127.0.0.1;proto=http;host="a.example"'
            assert "6.6.6.6" not in json.dumps(s["headers"])


# ---- SNI routing with real TLS clients ---------------------------------------------------------------------------

def test_sni_routes_real_tls_clients_to_two_backends_with_their_own_certificates(tmp_path):
    need("curl")
    certs = make_certs(tmp_path, ["a.example", "b.example", "c.example"])
    port = free_port()
    with HttpService("A", server_ctx(certs["a.example"])) as a, HttpService("B", server_ctx(certs["b.example"])) as b, \
            HttpService("C") as c:
        routes = [{"name": "a", "target": ["127.0.0.1", a.port], "sni": ["a.example"]},
                  {"name": "b", "target": ["127.0.0.1", b.port], "sni": ["b.example"]},
                  {"name": "c", "target": ["127.0.0.1", c.port], "sni": ["c.example"], "http_headers": True,
                   "tls_cert": certs["c.example"][0], "tls_key": certs["c.example"][1]}]
        cfg = {"listeners": [listener(port, routes, trusted=["10.0.0.1"])]}
        with IngressProcess(cfg, tmp_path / "ing") as ing:
            def curl(name: str) -> subprocess.CompletedProcess:
                return subprocess.run(["curl", "-sS", "--max-time", "5", "--cacert", certs["ca"], "--resolve",
                                       f"{name}:{port}:127.0.0.1", f"https://{name}:{port}/"],
                                      capture_output=True, timeout=10)

            for name, label in (("a.example", "A"), ("b.example", "B"), ("c.example", "C")):
                out = curl(name)
                assert out.returncode == 0, out.stderr
                assert json.loads(out.stdout)["name"] == label
            # terminated at the ingress: the plain service got the client address headers
            assert dict(c.seen[0]["headers"])["X-Forwarded-For"] == "127.0.0.1"
            assert dict(c.seen[0]["headers"])["Forwarded"] == f'for=127.0.0.1;proto=https;host="c.example:{port}"'
            assert c.seen[0]["peer"] == "127.0.0.1" and len(a.seen) == len(b.seen) == 1
            # Python ssl verifies the certificate of the backend it was routed to
            ctx = ssl.create_default_context(cafile=certs["ca"])
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                    ctx.wrap_socket(raw, server_hostname="b.example") as s:
                assert s.getpeercert()["subject"] == ((("commonName", "b.example"),),)
            # an unknown name is refused (no default route)
            assert curl("unknown.example").returncode != 0
            ing.wait_log("no_route")


def test_client_hello_split_into_tiny_tcp_segments_is_routed(tmp_path):
    certs = make_certs(tmp_path, ["a.example"])
    port = free_port()
    with HttpService("A", server_ctx(certs["a.example"])) as a:
        cfg = {"listeners": [listener(port, [{"name": "a", "target": ["127.0.0.1", a.port], "sni": ["a.example"]}])]}
        with IngressProcess(cfg, tmp_path / "ing"):
            ctx = ssl.create_default_context(cafile=certs["ca"])
            inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = ctx.wrap_bio(inc, out, server_hostname="a.example")
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                first = True
                while True:
                    try:
                        tls.do_handshake()
                        break
                    except ssl.SSLWantReadError:
                        data = out.read()
                        step = 7 if first else len(data) or 1
                        for i in range(0, len(data), step):
                            s.sendall(data[i:i + step])
                            if first:
                                threading.Event().wait(0.002)  # separate segments
                        first = False
                        inc.write(s.recv(65536) or b"")
                tls.write(b"GET / HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n")
                s.sendall(out.read())
                body = b""
                while True:
                    try:
                        body += tls.read(65536)
                    except ssl.SSLWantReadError:
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        inc.write(chunk)
                    except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                        break
                    if b'"name": "A"' in body:
                        break
                assert b'"name": "A"' in body

"""Request smuggling through Upgrade, end to end with real services behind the ingress (issue 11, finding 1 and 7).

A connection becomes opaque only when the service answers 101; a service that answers an Upgrade request with a
plain 200 (nginx does, when it is not set up for WebSocket) leaves the connection parsed: a second request sent on
it gets the ingress's own X-Forwarded-For and is routed by its Host (421 for another route's)."""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import subprocess
import threading
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest

from wiregate.ingress import Listener, Route
from wiregate.testing.peers import (
    free_port,
    need,
    nginx_preamble,
    stop,
    wait_port,
    which,
)
from wiregate.testing.samples import make_cert

pytestmark = pytest.mark.timeout(30)

UPGRADE = b"GET /ws HTTP/1.1\r\nHost: a.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
FORGED = (b"GET /admin HTTP/1.1\r\nHost: a.example\r\nX-Forwarded-For: 10.0.0.1\r\nX-Real-IP: 10.0.0.1\r\n"
          b"Forwarded: for=10.0.0.1\r\n\r\n")
OTHER_ROUTE = b"GET /admin HTTP/1.1\r\nHost: internal.example\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n"


@pytest.fixture
def nginx_echo(tmp_path: Path):
    """nginx with two plain HTTP servers answering each request with what it saw (not set up for WebSocket)."""
    need("nginx")
    a, b = free_port(), free_port()
    body = ('"$server_port uri=$request_uri host=$host xff=$http_x_forwarded_for xrip=$http_x_real_ip '
            'n=$connection_requests\\n"')
    conf = tmp_path / "nginx.conf"
    conf.write_text(nginx_preamble(tmp_path) + f"""
http {{
    access_log off;
    client_body_temp_path {tmp_path}/body;
    proxy_temp_path {tmp_path}/proxy;
    fastcgi_temp_path {tmp_path}/fastcgi;
    uwsgi_temp_path {tmp_path}/uwsgi;
    scgi_temp_path {tmp_path}/scgi;
    server {{ listen 127.0.0.1:{a}; location / {{ return 200 {body}; }} }}
    server {{ listen 127.0.0.1:{b}; location / {{ return 200 {body}; }} }}
}}
""")
    proc = subprocess.Popen([which("nginx"), "-c", str(conf), "-p", str(tmp_path)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        wait_port("127.0.0.1", a, proc=proc)
        wait_port("127.0.0.1", b, proc=proc)
        yield a, b
    finally:
        stop(proc)


async def responses(r: asyncio.StreamReader, n: int, timeout: float = 5.0) -> list[tuple[int, bytes]]:
    """The next n responses (status, body) on a connection; bodies framed by Content-Length (or none)."""
    out = []
    async with asyncio.timeout(timeout):
        while len(out) < n:
            try:
                head = await r.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            out.append((int(head.split(b" ", 2)[1]), await r.readexactly(int(m.group(1))) if m else b""))
    return out


def http_listener(a: int, b: int) -> Listener:
    return Listener(name="web", listen=("127.0.0.1", 0), trusted=("10.0.0.1",), routes=(
        Route("a", ("127.0.0.1", a), host=("a.example",), http_headers=True),
        Route("internal", ("127.0.0.1", b), host=("internal.example",), http_headers=True)))


async def test_nginx_answering_200_to_an_upgrade_leaves_later_requests_parsed_rewritten_and_routed(
        nginx_echo, ingress):
    a, b = nginx_echo
    ing = await ingress(http_listener(a, b))
    r, w = await asyncio.open_connection(*ing.addresses["web"])
    try:
        w.write(UPGRADE + FORGED)  # one segment: the forged request is there before nginx answers
        got = await responses(r, 2)
        w.write(OTHER_ROUTE)  # (a refusal answers at once: sent with the others, it would overtake their answers)
        got += await responses(r, 1)
    finally:
        w.close()
    assert [s for s, _ in got] == [200, 200, 421]
    assert got[0][1] == f"{a} uri=/ws host=a.example xff=127.0.0.1 xrip=127.0.0.1 n=1\n".encode()
    # the forged request arrived with the ingress's headers, not the client's, on the same connection
    assert got[1][1] == f"{a} uri=/admin host=a.example xff=127.0.0.1 xrip=127.0.0.1 n=2\n".encode()
    assert ing.status()["web"]["refused"] == {"misdirected": 1}


async def test_same_on_a_tls_terminated_route(nginx_echo, ingress, tmp_path):
    a, b = nginx_echo
    cert, key = make_cert("a.example", tmp_path / "certs")
    ing = await ingress(Listener(name="web", listen=("127.0.0.1", 0), trusted=("10.0.0.1",), routes=(
        Route("a", ("127.0.0.1", a), sni=("a.example",), http_headers=True, tls_cert=str(cert), tls_key=str(key)),
        Route("internal", ("127.0.0.1", b), sni=("internal.example",), http_headers=True, tls_cert=str(cert),
              tls_key=str(key)))))
    ctx = ssl.create_default_context(cafile=str(cert))
    r, w = await asyncio.open_connection(*ing.addresses["web"], ssl=ctx, server_hostname="a.example")
    try:
        w.write(UPGRADE + FORGED)
        got = await responses(r, 2)
        w.write(OTHER_ROUTE)
        got += await responses(r, 1)
    finally:
        w.close()
    assert [s for s, _ in got] == [200, 200, 421]
    assert got[1][1] == f"{a} uri=/admin host=a.example xff=127.0.0.1 xrip=127.0.0.1 n=2\n".encode()


def test_curl_h2c_upgrade_declined_by_nginx_then_a_second_request_on_the_same_connection(nginx_echo, tmp_path):
    """A real client asking for h2c (curl --http2 on http://) and a real service declining it (nginx answers 200):
    curl goes on in HTTP/1.1 on the same connection, and its next request is parsed and rewritten."""
    from wiregate.testing.ingress_proc import IngressProcess

    need("curl")
    a, _ = nginx_echo
    port = free_port()
    cfg = {"listeners": [{"name": "web", "listen": ["127.0.0.1", port], "trusted": ["10.0.0.1"], "routes": [
        {"name": "a", "target": ["127.0.0.1", a], "host": ["a.example"], "http_headers": True}]}]}
    with IngressProcess(cfg, tmp_path / "ing"):
        out = subprocess.run(["curl", "-sS", "-v", "--max-time", "5", "--http2", "-H", "Host: a.example",
                              "-H", "X-Forwarded-For: 10.0.0.1", f"http://127.0.0.1:{port}/one",
                              f"http://127.0.0.1:{port}/two"], capture_output=True, timeout=15, check=False)
    assert out.returncode == 0, out.stderr
    assert b"Upgrade: h2c" in out.stderr  # curl asked
    assert out.stdout == (f"{a} uri=/one host=a.example xff=127.0.0.1 xrip=127.0.0.1 n=1\n"
                          f"{a} uri=/two host=a.example xff=127.0.0.1 xrip=127.0.0.1 n=2\n").encode()


async def test_a_101_answer_makes_the_connection_opaque_including_bytes_sent_early(backends, ingress):
    state = {"switched": False}

    def ws(data: bytes) -> bytes:  # 101 to the first request, then an echo of raw bytes
        if not state["switched"]:
            state["switched"] = True
            return b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        return data

    svc = await backends(ws)
    ing = await ingress(Listener(name="web", listen=("127.0.0.1", 0), trusted=("10.0.0.1",), routes=(
        Route("a", ("127.0.0.1", svc.port), host=("a.example",), http_headers=True),)))
    r, w = await asyncio.open_connection(*ing.addresses["web"])
    raw = b"GET /x HTTP/1.1\r\nHost: other.example\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"  # opaque: untouched
    try:
        w.write(UPGRADE + b"early|")
        assert (await responses(r, 1))[0][0] == 101
        async with asyncio.timeout(5):
            assert await r.readexactly(6) == b"early|"
        w.write(raw)
        async with asyncio.timeout(5):
            assert await r.readexactly(len(raw)) == raw
    finally:
        w.close()
    got = bytes(svc.conns[0])
    assert got.endswith(b"\r\n\r\nearly|" + raw) and got.count(b"X-Forwarded-For: 127.0.0.1") == 1


async def test_a_real_101_from_nginx_proxying_websocket_opens_the_tunnel(ingress, tmp_path):
    """nginx set up for WebSocket (proxy_pass with Upgrade) answers 101 from its upstream: from then on the bytes
    pass untouched both ways, and the upstream saw the client address the ingress set."""
    need("nginx")
    seen = bytearray()

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.extend(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        while data := await reader.read(65536):  # then an echo of raw bytes
            writer.write(data)
        writer.close()

    up = await asyncio.start_server(upstream, "127.0.0.1", 0)
    port = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(nginx_preamble(tmp_path) + f"""
http {{
    access_log off;
    client_body_temp_path {tmp_path}/body;
    proxy_temp_path {tmp_path}/proxy;
    fastcgi_temp_path {tmp_path}/fastcgi;
    uwsgi_temp_path {tmp_path}/uwsgi;
    scgi_temp_path {tmp_path}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{up.sockets[0].getsockname()[1]};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
        }}
    }}
}}
""")
    proc = subprocess.Popen([which("nginx"), "-c", str(conf), "-p", str(tmp_path)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        wait_port("127.0.0.1", port, proc=proc)
        ing = await ingress(Listener(name="web", listen=("127.0.0.1", 0), trusted=("10.0.0.1",), routes=(
            Route("a", ("127.0.0.1", port), host=("a.example",), http_headers=True),)))
        r, w = await asyncio.open_connection(*ing.addresses["web"])
        raw = b"GET /x HTTP/1.1\r\nHost: internal.example\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"
        try:
            w.write(UPGRADE.replace(b"\r\n\r\n", b"\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"))
            assert (await responses(r, 1))[0][0] == 101
            w.write(raw)  # after the 101: another protocol, passed as it is
            async with asyncio.timeout(5):
                assert await r.readexactly(len(raw)) == raw
        finally:
            w.close()
    finally:
        stop(proc)
        up.close()
    assert b"\r\nX-Forwarded-For: 127.0.0.1\r\n" in seen and b"6.6.6.6" not in seen


async def test_connect_is_answered_405_and_never_reaches_the_service(backends, ingress):
    svc = await backends(lambda d: b"HTTP/1.1 200 Connection established\r\n\r\n")
    ing = await ingress(Listener(name="web", listen=("127.0.0.1", 0), default_route="a", routes=(
        Route("a", ("127.0.0.1", svc.port), host=("a.example",), http_headers=True),)))
    r, w = await asyncio.open_connection(*ing.addresses["web"])
    try:
        w.write(b"CONNECT internal.example:22 HTTP/1.1\r\nHost: a.example\r\n\r\nSSH-2.0-x\r\n")
        got = await responses(r, 1)
        assert got[0][0] == 405
        async with asyncio.timeout(5):
            assert await r.read() == b""  # closed after the answer
    finally:
        w.close()
    assert all(b"CONNECT" not in c for c in svc.conns)


async def test_malformed_absolute_target_on_keep_alive_gets_400_and_close_not_a_hang(backends, ingress, caplog):
    svc = await backends(lambda d: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    ing = await ingress(Listener(name="web", listen=("127.0.0.1", 0), default_route="a", routes=(
        Route("a", ("127.0.0.1", svc.port), host=("a.example",), http_headers=True),)))
    for first in (b"", b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n"):
        r, w = await asyncio.open_connection(*ing.addresses["web"])
        try:
            w.write(first + b"GET http://[abc/ HTTP/1.1\r\nHost: a.example\r\n\r\n")
            got = await responses(r, 2 if first else 1)
            assert got[-1][0] == 400
            async with asyncio.timeout(5):
                await r.read()  # closed
        finally:
            w.close()
    assert "Traceback" not in caplog.text and ing.status()["web"]["refused"]["bad_request"] == 2


def test_a_wsgi_service_that_merges_underscore_headers_sees_only_the_real_client(tmp_path):
    """wsgiref (like CGI) maps X_Forwarded_For and X-Forwarded-For to one variable, the first sent first."""
    from wiregate.testing.ingress_proc import IngressProcess

    def app(environ, start_response):
        body = environ.get("HTTP_X_FORWARDED_FOR", "-").encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args) -> None:
            pass

    srv = make_server("127.0.0.1", 0, app, handler_class=Quiet)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    port = free_port()
    cfg = {"listeners": [{"name": "web", "listen": ["127.0.0.1", port], "trusted": ["10.0.0.1"], "routes": [
        {"name": "a", "target": ["127.0.0.1", srv.server_port], "host": ["a.example"], "http_headers": True}]}]}
    try:
        with IngressProcess(cfg, tmp_path), socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: a.example\r\nX_Forwarded_For: 10.0.0.1\r\n"
                      b"Connection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    finally:
        srv.shutdown()
        srv.server_close()
    assert data.startswith(b"HTTP/1.0 200 ") and data.endswith(b"\r\n\r\n127.0.0.1"), data


@pytest.mark.parametrize("tls", [False, True])
async def test_a_service_closing_before_answering_the_upgrade_closes_the_connection(ingress, tmp_path, tls):
    got = bytearray()

    async def service(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.extend(await reader.readuntil(b"\r\n\r\n"))  # the Upgrade request, then close without answering
        writer.close()

    server = await asyncio.start_server(service, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    kw: dict = {"host": ("a.example",)}
    ctx = None
    if tls:
        cert, key = make_cert("a.example", tmp_path / "certs")
        kw = {"sni": ("a.example",), "tls_cert": str(cert), "tls_key": str(key)}
        ctx = ssl.create_default_context(cafile=str(cert))
    ing = await ingress(Listener(name="web", listen=("127.0.0.1", 0), routes=(
        Route("a", ("127.0.0.1", port), http_headers=True, **kw),)))
    r, w = await asyncio.open_connection(*ing.addresses["web"], ssl=ctx, server_hostname="a.example" if tls else None)
    try:
        w.write(UPGRADE + FORGED)
        async with asyncio.timeout(5):
            assert await r.read() == b""  # the ingress closed: nothing waits for an answer that will not come
            while ing.status()["web"]["open"]:
                await asyncio.sleep(0.01)
    finally:
        w.close()
        server.close()
    assert got.startswith(b"GET /ws ") and b"/admin" not in got


async def test_a_closing_request_gets_the_headers_and_nothing_unrewritten_reaches_the_backend(backends, ingress):
    """Connection: close (and HTTP/1.0 without keep-alive): the one request is rewritten, then the C pump may carry
    the connection (wiregate.ingress.server `_pump_plan`). A head pipelined behind it with a forged X-Forwarded-For
    must never reach the backend as sent: the pump drops what follows a closing request, the Python path rewrites
    it as any request."""
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    svc = await backends(lambda data: answer if data.startswith(b"GET /one") else b"")
    ing = await ingress(Listener(name="web", listen=("127.0.0.1", 0), trusted=("10.0.0.1",), routes=(
        Route("a", ("127.0.0.1", svc.port), host=("a.example",), http_headers=True),)))
    first = {b"1.1": b"GET /one HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n",
             b"1.0": b"GET /one HTTP/1.0\r\nHost: a.example\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"}
    sneak = b"GET /two HTTP/1.1\r\nHost: a.example\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"
    for n, version in enumerate((b"1.1", b"1.0")):
        r, w = await asyncio.open_connection(*ing.addresses["web"])
        w.write(first[version])
        await svc.wait_for(lambda n=n: len(svc.conns) > n and b"\r\n\r\n" in svc.conns[n])
        w.write(sneak)
        w.write_eof()  # passed on after what came before it: once the backend sees it, the sneak was handled
        async with asyncio.timeout(5):
            assert await r.readexactly(len(answer)) == answer
        await svc.wait_for(lambda n=n: svc.ended > n)
        w.close()
        got = bytes(svc.conns[n])
        assert got.startswith(b"GET /one ") and b"6.6.6.6" not in got
        assert got.count(b"X-Forwarded-For: 127.0.0.1\r\n") == got.count(b"GET ")

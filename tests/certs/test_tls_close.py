"""A client that completes the TLS handshake and leaves at once (a prober, `openssl s_time`) is not a failed
handshake: nothing is counted under tls_handshake nor logged as a failure (the handshake with ACME and file
certificates share this path)."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import struct
from pathlib import Path

from wiregate.ingress.config import IngressConfig, Listener, Route
from wiregate.ingress.server import Ingress
from wiregate.testing.samples import make_cert


def _handshake_then_reset(port: int) -> None:
    """TLS 1.3 handshake over a raw socket; the client Finished goes out, then an RST at once (SO_LINGER 0)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(inc, out, server_hostname="app.example")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                s.sendall(out.read())
                inc.write(s.recv(65536))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.sendall(out.read())  # the client Finished, then close: the server's tickets meet a reset


async def test_client_leaving_right_after_the_handshake_is_not_a_failure(tmp_path: Path, caplog):
    cert, key = make_cert("app.example", tmp_path)
    sink = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    target = sink.sockets[0].getsockname()[1]
    lst = Listener("https", ("127.0.0.1", 0), default_route="app", routes=(
        Route("app", ("127.0.0.1", target), sni=("app.example",), tls_cert=str(cert), tls_key=str(key)),))
    ing = Ingress(IngressConfig((lst,)))
    await ing.start()
    caplog.set_level(logging.WARNING, "wiregate.ingress")
    try:
        port = ing.addresses["https"][1]
        for _ in range(20):
            await asyncio.to_thread(_handshake_then_reset, port)
        rt = next(iter(ing.runtimes.values()))
        deadline = asyncio.get_running_loop().time() + 10
        while rt.open and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        assert rt.accepted == 20
        assert rt.refused.get("tls_handshake", 0) == 0, dict(rt.refused)
        assert not [r for r in caplog.records if "handshake failed" in r.getMessage()]
    finally:
        await ing.close()
        sink.close()

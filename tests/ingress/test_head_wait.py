"""The head phase driven by callbacks (no task) when the bytes come after the connection: a header and a
ClientHello written in pieces are routed; the deadline moves from the header's to the sniff's; a close before the
head frees the connection. (The head-with-the-connection path is covered by test_ingress_tcp.py.)"""

from __future__ import annotations

import asyncio
import logging

import pytest

from wiregate.proxyproto import Decoder, encode_v1, encode_v2
from wiregate.testing.tls_hello import client_hello, records, sni_ext

from wiregate.ingress import Listener, Route

CLIENT = ("203.0.113.7", 51234)
pytestmark = pytest.mark.timeout(30)


def echo(data: bytes) -> bytes:
    return data


def lst(routes, **kw) -> Listener:
    return Listener(name="web", listen=("127.0.0.1", 0), trusted=("127.0.0.1",), routes=tuple(routes), **kw)


async def test_a_head_written_in_pieces_is_routed_and_a_stalled_sniff_times_out(backends, ingress, caplog):
    svc = await backends(echo)
    ing = await ingress(lst([Route("app", ("127.0.0.1", svc.port), sni=("app.example.org",), send_proxy="v2")],
                            header_timeout=3.0, sniff_timeout=0.4))
    port = ing.addresses["web"][1]
    caplog.set_level(logging.WARNING, "wiregate.ingress")
    header = encode_v2(CLIENT, ("127.0.0.1", port))
    hello = records(client_hello(sni_ext(b"app.example.org")))

    # header and ClientHello in pieces, each after a pause: the first read finds nothing, later ones part of it
    r, w = await asyncio.open_connection("127.0.0.1", port)
    for piece in (header[:7], header[7:], hello[:20], hello[20:]):
        await asyncio.sleep(0.05)
        w.write(piece)
        await w.drain()
    got = b""
    async with asyncio.timeout(5):
        while len(got) < len(header) + len(hello):  # the service echoes the fresh header and the hello
            chunk = await r.read(65536)
            assert chunk, got
            got += chunk
    h = Decoder().feed(got)
    assert h is not None and tuple(h.source) == CLIENT and got.endswith(hello)
    w.close()

    # a complete header, then silence: refused by sniff_timeout (0.4 s), long before header_timeout (3 s)
    loop = asyncio.get_running_loop()
    r, w = await asyncio.open_connection("127.0.0.1", port)
    t0 = loop.time()
    w.write(header)
    async with asyncio.timeout(5):
        assert await r.read(-1) == b""
    assert loop.time() - t0 < 2.5
    w.close()

    # a client that leaves before its head is complete frees its connection
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(header[:5])
    await w.drain()
    w.close()
    async with asyncio.timeout(5):
        while ing.status()["web"]["open"]:
            await asyncio.sleep(0.02)
    refused = ing.status()["web"]["refused"]
    assert refused.get("sniff_timeout") == 1, refused
    assert len(svc.conns) == 1


async def test_a_bug_while_connecting_costs_that_connection_only(backends, ingress, caplog, monkeypatch):
    import wiregate.ingress.server as server

    svc = await backends(echo)
    ing = await ingress(lst([Route("app", ("127.0.0.1", svc.port))], default_route="app"))
    port = ing.addresses["web"][1]
    header = encode_v1(CLIENT, ("127.0.0.1", port))  # v1: Python decides it on every data path (the fast route
    real = server.proxy_header                       # takes v2 headers only, and calls no Python)
    calls = []

    def broken(route, ev):
        calls.append(1)
        raise RuntimeError("injected")

    monkeypatch.setattr(server, "proxy_header", broken)
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(header + b"hello")
    async with asyncio.timeout(5):
        assert await r.read(-1) == b""  # closed, not left hanging
        while ing.status()["web"]["open"]:
            await asyncio.sleep(0.02)
    w.close()
    assert calls and "connection from" in caplog.text and "injected" in caplog.text
    monkeypatch.setattr(server, "proxy_header", real)
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(header + b"hello")
    async with asyncio.timeout(5):
        assert await r.readexactly(5) == b"hello"
    w.close()

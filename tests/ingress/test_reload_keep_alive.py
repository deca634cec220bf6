"""Found by the soak (`wiregate bench soak`): a reload that changes a route must not break the keep-alive HTTP
connections that route is serving."""

from __future__ import annotations

import asyncio

import pytest

from wiregate.ingress import IngressConfig, Listener, Route

pytestmark = pytest.mark.timeout(30)


def www(port: int, hosts: tuple[str, ...], listen=("127.0.0.1", 0)) -> Listener:
    return Listener(name="web", listen=listen, trusted=(), default_route=None, routes=(
        Route("www", ("127.0.0.1", port), host=hosts, http_headers=True),))


async def _exchange(r, w, n: int) -> bytes:
    w.write(f"GET /{n} HTTP/1.1\r\nHost: www.example\r\n\r\n".encode())
    async with asyncio.timeout(5):
        head = await r.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        return head + await r.readexactly(length)


async def test_keep_alive_connection_survives_a_reload_that_adds_a_host_to_its_route(backends, ingress):
    def answer(data: bytes) -> bytes:  # one request per read here (the client waits for each answer)
        body = data.split(b"\r\n", 1)[0]
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)

    svc = await backends(answer)
    ing = await ingress(www(svc.port, ("www.example",)))
    port = ing.addresses["web"][1]
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        assert (await _exchange(r, w, 1)).endswith(b"GET /1 HTTP/1.1")
        # the same route (name, target) now also serves another name: www.example still goes to it
        await ing.reload(IngressConfig((www(svc.port, ("www.example", "alt.example"), ("127.0.0.1", port)),)))
        assert (await _exchange(r, w, 2)).endswith(b"GET /2 HTTP/1.1")
    finally:
        w.close()

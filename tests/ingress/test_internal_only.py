"""internal_only routes admit only clients from their networks, on every connection path (the task path and the
callback fast path for plain routes to an address alike)."""

from __future__ import annotations

import asyncio

import pytest

from wiregate.ingress import Listener, Route

pytestmark = pytest.mark.timeout(30)


async def _exchange(port: int, data: bytes) -> bytes:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        w.write(data)
        async with asyncio.timeout(5):
            return await r.read()
    finally:
        w.close()


@pytest.mark.parametrize("kind", ["raw", "http"])
async def test_a_client_outside_the_internal_networks_never_reaches_the_service(backends, ingress, kind):
    svc = await backends(lambda data: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    route = Route("lan", ("127.0.0.1", svc.port), host=("lan.example",) if kind == "http" else (),
                  internal=("10.0.0.0/8",))
    ing = await ingress(Listener(name="web", listen=("127.0.0.1", 0), trusted=(), routes=(route,),
                                 default_route=None if kind == "http" else "lan"))
    port = ing.addresses["web"][1]
    answer = await _exchange(port, b"GET / HTTP/1.1\r\nHost: lan.example\r\n\r\n")
    assert b"200" not in answer and (kind == "raw" or answer.startswith(b"HTTP/1.1 403"))
    assert svc.conns == []  # the service never saw the outsider
    assert ing.status()["web"]["refused"].get("not_internal") == 1

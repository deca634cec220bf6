"""In-process helpers: a recording backend and an ingress on free ports, all closed after each test."""

from __future__ import annotations

import asyncio

import pytest

from wiregate.ingress import Ingress, IngressConfig


class Backend:
    """A TCP service that records every connection's bytes and answers each read with `reply(data)`."""

    def __init__(self, reply=None) -> None:
        self.conns: list[bytearray] = []
        self.reply = reply
        self.server: asyncio.Server | None = None
        self.port = 0
        self.got = asyncio.Event()
        self.ended = 0  # connections whose client side reached EOF (or failed) and were closed

    async def start(self) -> Backend:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buf = bytearray()
        self.conns.append(buf)
        try:
            while data := await reader.read(65536):
                buf += data
                self.got.set()
                if self.reply is not None:
                    out = self.reply(bytes(data))
                    if out:
                        writer.write(out)
                        await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            self.ended += 1

    async def wait_for(self, pred, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not pred():
                await asyncio.sleep(0.01)

    async def close(self) -> None:
        if self.server:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def backends():
    made: list[Backend] = []

    async def make(reply=None) -> Backend:
        b = await Backend(reply).start()
        made.append(b)
        return b

    yield make
    for b in made:
        await b.close()


@pytest.fixture(params=["c", "c-nofast", "python"])
async def ingress(request, monkeypatch):
    """Make and start Ingresses (closed at the end), on each data path: the C pump where built (the default:
    wiregate.datapath.pump) with its fast routes (a listener's common case routed without Python), the pump
    with every decision in Python, and the Python data path."""
    monkeypatch.setenv("WIREGATE_DATAPATH", request.param)
    made: list[Ingress] = []

    async def make(*listeners, acme=None) -> Ingress:
        ing = Ingress(IngressConfig(tuple(listeners)), acme=acme)
        await ing.start()
        made.append(ing)
        return ing

    yield make
    for ing in made:
        await ing.close()

"""The data path's awaitable socket steps (waits.py) on a Poller under uvloop, and the one event-loop choice."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from wiregate.datapath import loop as dploop
from wiregate.datapath import waits
from wiregate.datapath.poller import HAVE_EPOLL, Poller

pytestmark = [pytest.mark.skipif(not HAVE_EPOLL, reason="needs epoll (Linux)"), pytest.mark.timeout(20)]
uvloop = pytest.importorskip("uvloop")


def _pair() -> tuple[socket.socket, socket.socket, socket.socket]:
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen()
    c = socket.create_connection(ls.getsockname())
    s, _ = ls.accept()
    c.setblocking(False)
    return ls, c, s


def test_a_reset_while_a_recv_waits_ends_it_at_once_under_uvloop():
    """The peer answers, then resets while our next recv waits: the wait ends with the reset, not never."""

    async def main() -> list:
        running = asyncio.get_running_loop()
        io = Poller(running)
        ls, c, s = _pair()
        got: list = []
        try:
            s.sendall(b"answer")
            got.append(await asyncio.wait_for(waits.recv(io, c, 100), 5))

            def reset() -> None:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()

            running.call_later(0.05, reset)  # the reset comes while the recv below is waiting
            try:
                got.append(await asyncio.wait_for(waits.recv(io, c, 100), 5))
            except ConnectionResetError:
                got.append("reset")
            assert c.fileno() not in io.fds  # the wait left no registration behind
        finally:
            io.close()
            c.close()
            ls.close()
        return got

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
        assert r.run(main()) == [b"answer", "reset"]


def test_sendall_waits_for_room_and_connect_reports_refusal_and_timeout():
    async def main() -> None:
        io = Poller(asyncio.get_running_loop())
        ls, c, s = _pair()
        try:
            big = bytes(8 << 20)  # far more than the socket buffers hold: sendall must wait for the reader

            async def drain() -> int:
                n = 0
                s.setblocking(False)
                while n < len(big):
                    n += len(await waits.recv(io, s, 1 << 20))
                return n

            reader = asyncio.ensure_future(drain())
            await asyncio.wait_for(waits.sendall(io, c, big), 10)
            assert await asyncio.wait_for(reader, 10) == len(big)
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            closed = probe.getsockname()  # bound, not listening: a connect there is refused
            b = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
            with pytest.raises(ConnectionRefusedError):
                await waits.connect(io, b, closed, 5)
            b.close()
            probe.close()
            assert not io.fds
        finally:
            io.close()
            c.close()
            s.close()
            ls.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
        r.run(main())


def test_one_switch_picks_the_stock_loop_and_uvloop_is_the_default():
    assert dploop.wanted({}) == "uvloop"
    for key in ("WIREGATE_LOOP", "WIREGATE_RELAY_LOOP", "WIREGATE_INGRESS_LOOP"):
        assert dploop.wanted({key: "asyncio"}) == "asyncio"
        assert dploop.loop_factory({key: "asyncio"}) is asyncio.new_event_loop
    assert dploop.loop_factory({}) is uvloop.new_event_loop

    async def which() -> str:
        return dploop.loop_name(asyncio.get_running_loop())

    assert dploop.run(which()) == ("asyncio" if dploop.wanted() == "asyncio" else "uvloop")

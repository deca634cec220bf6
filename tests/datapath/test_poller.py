"""Poller: readiness through a private epoll set, including descriptors closed and reused within one batch."""

import asyncio
import socket

import pytest

from wiregate.datapath.poller import HAVE_EPOLL, Poller

pytestmark = [pytest.mark.skipif(not HAVE_EPOLL, reason="needs epoll (Linux)"), pytest.mark.timeout(10)]


async def test_reader_and_writer_callbacks_fire_and_stop():
    loop = asyncio.get_running_loop()
    io = Poller(loop)
    a, b = socket.socketpair()
    a.setblocking(False)
    got = asyncio.Queue()
    io.add_reader(a.fileno(), lambda: got.put_nowait(a.recv(100)))
    b.send(b"one")
    assert await asyncio.wait_for(got.get(), 2) == b"one"
    wrote = asyncio.Event()
    io.add_writer(a.fileno(), wrote.set)  # a fresh socket pair is writable
    await asyncio.wait_for(wrote.wait(), 2)
    io.remove_writer(a.fileno())
    io.remove_reader(a.fileno())
    assert a.fileno() not in io.fds
    b.send(b"two")
    # a barrier: a socket made ready after `a` is reported in the same or a later epoll batch (the ready list is
    # FIFO), so once its callback ran, a still-watched `a` would have been delivered too
    c, d = socket.socketpair()
    seen = asyncio.Event()
    io.add_reader(c.fileno(), seen.set)
    d.send(b"barrier")
    await asyncio.wait_for(seen.wait(), 5)
    assert got.empty()  # no longer watched
    io.remove_reader(c.fileno())
    c.close()
    d.close()
    io.close()
    a.close()
    b.close()


async def test_events_of_a_descriptor_closed_in_the_same_batch_are_not_delivered_to_its_successor():
    loop = asyncio.get_running_loop()
    io = Poller(loop)
    a1, b1 = socket.socketpair()
    a2, b2 = socket.socketpair()
    calls = []
    reused = {}

    def first():
        calls.append("first")
        a1.recv(10)
        # close the other ready socket and put a new, idle one on its number
        fd = a2.fileno()
        io.forget(fd)
        a2.close()
        n1, n2 = socket.socketpair()
        reused["pair"] = (n1, n2)
        if n1.fileno() == fd:
            io.add_reader(n1.fileno(), lambda: calls.append("new"))
        else:
            reused["other"] = True

    def second():
        calls.append("second")
        a2.recv(10)

    # whichever comes first in the batch closes the other
    io.add_reader(a1.fileno(), first)
    io.add_reader(a2.fileno(), second)
    b1.send(b"x")
    b2.send(b"y")
    # barrier (see above): once a third socket made ready afterwards is seen, both batches have been dispatched
    c, d = socket.socketpair()
    seen = asyncio.Event()
    io.add_reader(c.fileno(), seen.set)
    d.send(b"barrier")
    await asyncio.wait_for(seen.wait(), 5)
    io.remove_reader(c.fileno())
    c.close()
    d.close()
    assert "other" not in reused  # the number really was reused
    assert calls == ["first"]  # a1 became ready first; a2's event in that batch was stale and the new socket is idle
    for s in (a1, b1, b2, *reused.get("pair", ())):
        s.close()
    io.close()

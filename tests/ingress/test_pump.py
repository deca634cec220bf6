"""The ingress byte pump: pooled splice pipes never carry one connection's bytes into another."""

from __future__ import annotations

import array
import asyncio
import fcntl
import socket
import termios

import pytest

from wiregate.ingress.pump import HAVE_SPLICE, Link, SpliceHalf, new_pipe_pool

pytestmark = [pytest.mark.timeout(30), pytest.mark.skipif(not HAVE_SPLICE, reason="no splice(2) here")]


def queued(fd: int) -> int:
    buf = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return buf[0]


async def test_a_pipe_left_with_bytes_by_a_failed_write_is_not_pooled():
    loop = asyncio.get_running_loop()
    pipes = new_pipe_pool()
    client, client_peer = socket.socketpair()
    backend, backend_peer = socket.socketpair()
    for s in (client, backend):
        s.setblocking(False)
    backend_peer.close()  # the destination is gone: splice into it fails with EPIPE, the bytes stay in the pipe
    closed = asyncio.Event()
    link = Link(loop, client, backend, lambda lk: closed.set())
    up = SpliceHalf(link, loop, client, backend, pipes)
    down = SpliceHalf(link, loop, backend, client, pipes)
    link.start(up, down)
    client_peer.sendall(b"x" * 5000)
    await asyncio.wait_for(closed.wait(), 5)
    assert all(queued(r) == 0 for r, _ in pipes._free), "a pooled pipe still holds the old connection's bytes"
    pipes.close()
    client_peer.close()

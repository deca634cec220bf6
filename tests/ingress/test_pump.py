"""The ingress byte pump: pooled splice pipes never carry one connection's bytes into another; the copy half
passes half-close on and can answer-and-close for the forwarder."""

from __future__ import annotations

import array
import asyncio
import fcntl
import socket
import termios

import pytest

from wiregate.ingress.pump import HAVE_SPLICE, CopyHalf, Link, SpliceHalf, new_pipe_pool

pytestmark = pytest.mark.timeout(30)


def queued(fd: int) -> int:
    buf = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return buf[0]


@pytest.mark.skipif(not HAVE_SPLICE, reason="no splice(2) here")
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


def _pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.setblocking(False)
    return a, b


async def _recv_all(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytes:
    sock.setblocking(False)
    out = b""
    while chunk := await asyncio.wait_for(loop.sock_recv(sock, 65536), 5):
        out += chunk
    return out


async def test_copy_half_passes_half_close_on_and_keeps_the_other_direction():
    loop = asyncio.get_running_loop()
    client, client_peer = _pair()
    backend, backend_peer = _pair()
    closed = asyncio.Event()
    link = Link(loop, client, backend, lambda lk: closed.set())
    link.start(CopyHalf(link, client, backend), CopyHalf(link, backend, client))
    client_peer.sendall(b"request")
    client_peer.shutdown(socket.SHUT_WR)
    assert await _recv_all(loop, backend_peer) == b"request"  # EOF arrived after the bytes
    assert not closed.is_set()
    backend_peer.sendall(b"answer")
    backend_peer.shutdown(socket.SHUT_WR)
    assert await _recv_all(loop, client_peer) == b"answer"
    await asyncio.wait_for(closed.wait(), 5)
    client_peer.close()
    backend_peer.close()


async def test_copy_half_transform_reply_closes_the_connection_without_forwarding():
    loop = asyncio.get_running_loop()
    client, client_peer = _pair()
    backend, backend_peer = _pair()
    closed = asyncio.Event()
    link = Link(loop, client, backend, lambda lk: closed.set())
    link.start(CopyHalf(link, client, backend, lambda data: (b"", b"HTTP/1.1 400 Bad Request\r\n\r\n")),
               CopyHalf(link, backend, client))
    client_peer.sendall(b"bad request")
    await asyncio.wait_for(closed.wait(), 5)
    assert await _recv_all(loop, client_peer) == b"HTTP/1.1 400 Bad Request\r\n\r\n"
    assert await _recv_all(loop, backend_peer) == b""
    client_peer.close()
    backend_peer.close()

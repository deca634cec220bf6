"""Awaitable socket steps on the data path's watcher (a `Poller`, or the loop where there is no epoll).

For the few connection steps that run in a task (TLS termination, a target given by name, a first send the
backend did not take at once): the same calls as the loop's sock_recv / sock_sendall / sock_connect, but the socket
is watched where the halves watch theirs, never by the event loop itself (see `wiregate.datapath.loop` for why
uvloop must not watch connection sockets). Each call tries the system call first and only waits when it would
block, so a step whose bytes are there costs no future and no epoll_ctl.

One waiter per socket and direction at a time (a second would replace the first's callback); the callers keep to
that (one task reads a socket, writes to it are serialised).
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from typing import Union

from wiregate.datapath.poller import Poller

IO = Union[Poller, asyncio.AbstractEventLoop]


def _loop(io: IO) -> asyncio.AbstractEventLoop:
    return io.loop if isinstance(io, Poller) else io


async def _ready(io: IO, fd: int, writing: bool) -> None:
    """Wait until fd is readable (or writable), or in error: the next system call then says which."""
    fut = _loop(io).create_future()

    def wake() -> None:
        if not fut.done():
            fut.set_result(None)

    if writing:
        io.add_writer(fd, wake)
    else:
        io.add_reader(fd, wake)
    try:
        await fut
    finally:
        if writing:
            io.remove_writer(fd)
        else:
            io.remove_reader(fd)


async def recv(io: IO, sock: socket.socket, size: int) -> bytes:
    """sock.recv(size) on a non-blocking socket, waiting for readability when nothing is there yet."""
    while True:
        try:
            return sock.recv(size)
        except (BlockingIOError, InterruptedError):
            pass
        await _ready(io, sock.fileno(), False)


async def sendall(io: IO, sock: socket.socket, data: bytes) -> None:
    """Send all of `data` on a non-blocking socket, waiting for room when its buffer is full."""
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view):]
            if not view:
                return
        except (BlockingIOError, InterruptedError):
            pass
        await _ready(io, sock.fileno(), True)


async def connect(io: IO, sock: socket.socket, addr: tuple, timeout: float) -> None:
    """Non-blocking connect bounded by `timeout`; OSError (the connect's own error) or TimeoutError on failure.

    One future and one timer, not sock_connect() under asyncio.timeout(): that pair costs ~70 us per connection in
    futures and timer contexts (profiled under wrk)."""
    err = sock.connect_ex(addr)
    if err == 0:
        return
    if err not in (errno.EINPROGRESS, errno.EAGAIN):
        raise OSError(err, os.strerror(err))
    loop = _loop(io)
    fut: asyncio.Future[bool] = loop.create_future()
    fd = sock.fileno()

    def done(timed_out: bool) -> None:
        if not fut.done():
            fut.set_result(timed_out)

    io.add_writer(fd, lambda: done(False))
    timer = loop.call_later(timeout, done, True)
    try:
        timed_out = await fut
    finally:
        io.remove_writer(fd)
        timer.cancel()
    if timed_out:
        raise TimeoutError
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        raise OSError(err, os.strerror(err))

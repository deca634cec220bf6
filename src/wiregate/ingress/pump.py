"""Moving bytes after the decision: one `Half` per direction, driven by add_reader/add_writer (no task per
connection once routed, nothing buffered while idle).

- `SpliceHalf`: socket -> pipe -> socket with splice(2) (Linux), the bytes never enter Python. This is what lets a
  Python ingress keep up with nginx on bulk transfers.
- `CopyHalf`: recv/send with an optional `transform` (the HTTP forwarder rewrites request heads here).

Back-pressure: a half stops reading its source while its destination is full, so at most one pipe or one chunk
per direction is held. EOF is passed on as shutdown(SHUT_WR) once everything before it is delivered; an error on
either side closes the whole connection.

(The gateway relay has a similar data path in wiregate.relay.datapath; the two should become one shared module.)
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import socket
from collections.abc import Callable

HAVE_SPLICE = hasattr(os, "splice")
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
# Pipe size: with the default 64 KiB pipe each wake-up moves at most 64 KiB, so the per-wake-up Python cost caps
# loopback throughput; 1 MiB pipes let one wake-up move a whole socket buffer.
PIPE_SIZE = 1 << 20
POOL_KEEP = 128  # idle empty pipes kept for the next connections (2 fds each)
CHUNK = 65536
_FLAGS = (os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK) if HAVE_SPLICE else 0
Transform = Callable[[bytes], tuple[bytes, bytes | None]]  # data -> (to destination, reply-and-close or None)


class Pipes:
    """Empty non-blocking pipes reused across connections (short connections then cost no pipe2())."""

    def __init__(self) -> None:
        self.free: list[tuple[int, int]] = []

    def get(self) -> tuple[int, int]:
        if self.free:
            return self.free.pop()
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            fcntl.fcntl(w, F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:  # over pipe-max-size or the user's pipe quota: the default size works, slower
            pass
        return r, w

    def put(self, pipe: tuple[int, int], empty: bool = True) -> None:
        if empty and len(self.free) < POOL_KEEP:
            self.free.append(pipe)
        else:
            os.close(pipe[0])
            os.close(pipe[1])

    def close(self) -> None:
        while self.free:
            self.put(self.free.pop(), empty=False)


class Link:
    """A routed connection: two sockets and two halves. `on_close` runs once when both halves are done."""

    __slots__ = ("loop", "client", "backend", "halves", "open", "closed", "active", "idle_ticks", "on_close",
                 "info")

    def __init__(self, loop: asyncio.AbstractEventLoop, client: socket.socket, backend: socket.socket,
                 on_close: Callable[[Link], None], info: object = None) -> None:
        self.loop = loop
        self.client, self.backend = client, backend
        self.halves: list[Half] = []
        self.open = 2
        self.closed = False
        self.active = True
        self.idle_ticks = 0
        self.on_close = on_close
        self.info = info

    def start(self, up: Half, down: Half) -> None:
        self.halves = [up, down]
        up.start()
        down.start()

    def half_done(self) -> None:
        self.open -= 1
        if self.open == 0:
            self.close()

    def close(self) -> None:
        """Stop both halves and close both sockets (idempotent)."""
        if self.closed:
            return
        self.closed = True
        for h in self.halves:
            h.stop()
        self.client.close()
        self.backend.close()
        self.on_close(self)


class Half:
    """One direction, src -> dst."""

    __slots__ = ("link", "loop", "src", "dst", "sfd", "dfd", "reading", "writing", "eof")

    def __init__(self, link: Link, src: socket.socket, dst: socket.socket) -> None:
        self.link, self.loop = link, link.loop
        self.src, self.dst = src, dst
        self.sfd, self.dfd = src.fileno(), dst.fileno()
        self.reading = self.writing = self.eof = False

    def start(self) -> None:
        self.reading = True
        self.loop.add_reader(self.sfd, self.readable)

    def readable(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def writable(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def stop(self) -> None:
        if self.reading:
            self.reading = False
            self.loop.remove_reader(self.sfd)
        if self.writing:
            self.writing = False
            self.loop.remove_writer(self.dfd)

    def block(self) -> None:
        """Destination full: stop reading until it drains."""
        if self.reading:
            self.reading = False
            self.loop.remove_reader(self.sfd)
        self.writing = True
        self.loop.add_writer(self.dfd, self.writable)

    def unblock(self) -> None:
        self.writing = False
        self.loop.remove_writer(self.dfd)
        if self.eof:
            self.finish()
        else:
            self.reading = True
            self.loop.add_reader(self.sfd, self.readable)

    def finish(self) -> None:
        """Source at EOF and everything delivered: pass the FIN on; the other direction continues."""
        if self.reading:
            self.reading = False
            self.loop.remove_reader(self.sfd)
        if self.link.open > 1:
            try:
                self.dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        self.link.half_done()


class SpliceHalf(Half):
    """Zero-copy through a pooled pipe."""

    __slots__ = ("pipes", "pipe", "pending")

    def __init__(self, link: Link, src: socket.socket, dst: socket.socket, pipes: Pipes) -> None:
        super().__init__(link, src, dst)
        self.pipes = pipes
        self.pipe: tuple[int, int] | None = None
        self.pending = 0

    def readable(self) -> None:
        self.link.active = True
        if self.pipe is None:
            self.pipe = self.pipes.get()
        pr, pw = self.pipe
        for _ in range(4):  # a few rounds per wake-up, then let other connections run
            try:
                n = os.splice(self.sfd, pw, PIPE_SIZE, flags=_FLAGS)
            except BlockingIOError:
                break
            except OSError:
                self.link.close()
                return
            if n == 0:
                self.eof = True
                break
            left = n
            while left:
                try:
                    left -= os.splice(pr, self.dfd, left, flags=_FLAGS)
                except BlockingIOError:
                    self.pending = left
                    self.block()
                    return
                except OSError:
                    self.pending = left  # the bytes still in the pipe: stop() must not pool it as empty
                    self.link.close()
                    return
            if n < 16384:  # a short read almost surely emptied the socket; readiness is level-triggered
                break
        self.pipes.put(self.pipe)
        self.pipe = None
        if self.eof:
            self.finish()

    def writable(self) -> None:
        self.link.active = True
        pr = self.pipe[0]  # type: ignore[index]
        while self.pending:
            try:
                self.pending -= os.splice(pr, self.dfd, self.pending, flags=_FLAGS)
            except BlockingIOError:
                return
            except OSError:
                self.link.close()
                return
        self.pipes.put(self.pipe)  # type: ignore[arg-type]
        self.pipe = None
        self.unblock()

    def stop(self) -> None:
        super().stop()
        if self.pipe is not None:
            self.pipes.put(self.pipe, empty=not self.pending)  # never reuse a pipe with bytes in it
            self.pipe = None


class CopyHalf(Half):
    """recv/send through Python, with an optional transform of each chunk (may end the connection)."""

    __slots__ = ("transform", "rest", "closing")

    def __init__(self, link: Link, src: socket.socket, dst: socket.socket, transform: Transform | None = None) -> None:
        super().__init__(link, src, dst)
        self.transform = transform
        self.rest = b""
        self.closing: bytes | None = None  # reply to write to the source before closing

    def readable(self) -> None:
        self.link.active = True
        try:
            data = self.src.recv(CHUNK)
        except BlockingIOError:
            return
        except OSError:
            self.link.close()
            return
        if not data:
            self.eof = True
            if self.rest:
                return
            self.finish()
            return
        if self.transform is not None:
            data, reply = self.transform(data)
            if reply is not None:
                self.closing = reply
        self.send(data)

    def send(self, data: bytes) -> None:
        try:
            m = self.dst.send(data) if data else 0
        except BlockingIOError:
            m = 0
        except OSError:
            self.link.close()
            return
        if m < len(data):
            self.rest = data[m:]
            self.block()
        elif self.closing is not None:
            self.refuse()

    def writable(self) -> None:
        self.link.active = True
        try:
            m = self.dst.send(self.rest)
        except BlockingIOError:
            return
        except OSError:
            self.link.close()
            return
        self.rest = self.rest[m:]
        if not self.rest:
            if self.closing is not None:
                self.refuse()
            else:
                self.unblock()

    def refuse(self) -> None:
        """Write the reply to the source (best effort, it is small) and close the connection."""
        try:
            self.src.send(self.closing or b"")
        except OSError:
            pass
        self.link.close()

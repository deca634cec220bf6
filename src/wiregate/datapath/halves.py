"""Moving bytes between two connected TCP sockets: zero-copy splice(2) on Linux, a bounded buffered copy elsewhere.

Each direction of a connection is a `Half` driven by add_reader/add_writer of a `Poller` (`wiregate.datapath.poller`;
the event loop itself where there is no epoll): no task, no transport, no per-connection buffer while idle (an idle
connection costs two reader registrations).

Back-pressure: a half reads only while nothing is waiting for its destination. When the destination socket
is full the half stops reading its source and waits for the destination to drain, so at most one pipe
(splice) or one chunk (buffered) per direction is ever held, whatever the speed of either peer.

Half-close: EOF on the source is passed on as shutdown(SHUT_WR) of the destination once everything before it
was delivered; the other direction keeps flowing. Resets: a reset (or a write error) on one side is passed on
as a reset (SO_LINGER 0 then close) of the other side.

Used by both sides: the gateway relay (`wiregate.relay.tcp`, its `Owner` passes resets on) and the home ingress
(`wiregate.ingress.pump`, its own `Owner` and a copying half with a transform); a change here changes both.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
from typing import TYPE_CHECKING, Protocol, Union

if TYPE_CHECKING:
    import asyncio

    from wiregate.datapath.poller import Poller

    IO = Union[Poller, asyncio.AbstractEventLoop]  # where a half watches its sockets (same four methods)

HAVE_SPLICE = hasattr(os, "splice") and hasattr(os, "pipe2")
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # linux/fcntl.h: F_LINUX_SPECIFIC_BASE + 7
# 1 MiB pipes: on loopback a 64 KiB pipe caps a Python splice relay well below the 256 KiB..1 MiB ones
# (measured with iperf3 through the relay; see docs/relay.md), and pipe pages are only taken while data waits.
PIPE_SIZE = int(os.environ.get("WIREGATE_PIPE_SIZE", 1 << 20))
PIPE_POOL_MAX = 64  # empty pipes kept for reuse; the rest are closed (each costs two descriptors)
CHUNK = 256 * 1024  # buffered path: bytes per recv
# Rounds of read+write per readiness callback before yielding to other connections (fairness under bulk load).
ROUNDS = 8
SMALL_READ = 16 * 1024  # a read shorter than this ends the round without asking the source again
HELD_BUDGET = 64 << 20  # bytes parked in pipes (all connections) before reads shrink to SMALL_PIPE_READ
SMALL_PIPE_READ = 64 * 1024  # the kernel's default pipe size
_LINGER_RESET = struct.pack("ii", 1, 0)
_RESET_ERRNOS = {errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED, errno.ETIMEDOUT, errno.EHOSTUNREACH}

if HAVE_SPLICE:
    _splice = os.splice
    _SPLICE_FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK


class Owner(Protocol):
    """What a Half reports to (the connection)."""

    active: bool
    open_halves: int

    def half_done(self) -> None: ...
    def fail(self, half: "Half", exc: OSError, reading: bool) -> None: ...


class PipePool:
    """Empty non-blocking pipes for splice, reused across connections so short connections cost no pipe2()."""

    def __init__(self, size: int = PIPE_SIZE, keep: int = PIPE_POOL_MAX) -> None:
        self.size = size
        self.keep = keep
        self._free: list[tuple[int, int]] = []
        self.created = 0
        self.held = 0  # bytes waiting in pipes for a slow destination, across all connections

    def get(self) -> tuple[int, int]:
        """An empty pipe (read fd, write fd)."""
        if self._free:
            return self._free.pop()
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            fcntl.fcntl(w, F_SETPIPE_SZ, self.size)
        except OSError:  # over /proc/sys/fs/pipe-max-size or the user's pipe quota: the default size still works
            pass
        self.created += 1
        return r, w

    def put(self, pipe: tuple[int, int]) -> None:
        """Give back a pipe that is empty."""
        if len(self._free) < self.keep:
            self._free.append(pipe)
        else:
            self.discard(pipe)

    @staticmethod
    def discard(pipe: tuple[int, int]) -> None:
        """Close a pipe (one that may still hold bytes)."""
        os.close(pipe[0])
        os.close(pipe[1])

    def close(self) -> None:
        """Close every pooled pipe."""
        while self._free:
            self.discard(self._free.pop())


def reset(sock: socket.socket) -> None:
    """Close `sock` so that the peer gets a TCP RST (SO_LINGER with a zero timeout)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    except OSError:
        pass
    sock.close()


def is_reset(exc: OSError) -> bool:
    """Errors that mean the peer reset or vanished (passed on as a reset), as opposed to local trouble."""
    return exc.errno in _RESET_ERRNOS


class Half:
    """One direction: source socket -> destination socket. Subclasses move the bytes."""

    __slots__ = ("owner", "loop", "src", "dst", "sfd", "dfd", "reading", "writing", "eof", "done")

    def __init__(self, owner: Owner, loop: IO, src: socket.socket,
                 dst: socket.socket) -> None:
        self.owner = owner
        self.loop = loop
        self.src, self.dst = src, dst
        self.sfd, self.dfd = src.fileno(), dst.fileno()
        self.reading = self.writing = self.eof = self.done = False

    def start(self) -> None:
        """Begin watching the source."""
        self.reading = True
        self.loop.add_reader(self.sfd, self.on_readable)

    def on_readable(self) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    def stop(self, unregister: bool = True) -> None:
        """Unregister from the loop (before the sockets close); release what the half holds.

        unregister=False: the caller has dropped both descriptors from the poller itself (Poller.forget)."""
        if self.reading:
            self.reading = False
            if unregister:
                self.loop.remove_reader(self.sfd)
        if self.writing:
            self.writing = False
            if unregister:
                self.loop.remove_writer(self.dfd)

    def _blocked(self) -> None:
        """Destination full: stop reading the source until it drains (this is the back-pressure)."""
        if self.reading:
            self.reading = False
            self.loop.remove_reader(self.sfd)
        self.writing = True
        self.loop.add_writer(self.dfd, self.on_writable)

    def _unblocked(self) -> None:
        self.writing = False
        self.loop.remove_writer(self.dfd)
        if self.eof:
            self._finish()
        else:
            self.reading = True
            self.loop.add_reader(self.sfd, self.on_readable)

    def on_writable(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _finish(self) -> None:
        """Source ended and everything was delivered: pass the FIN on, keep the other direction open."""
        if self.reading and self.owner.open_halves > 1:
            # (when this is the last half, the connection closes right away and drops the registration itself)
            self.reading = False
            self.loop.remove_reader(self.sfd)
        self.done = True
        if self.owner.open_halves > 1:  # else both sockets close right away, and close() sends the FIN
            try:
                self.dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        self.owner.half_done()


class SpliceHalf(Half):
    """Zero-copy: socket -> pipe -> socket with splice(2); the bytes never enter user space."""

    __slots__ = ("pool", "pipe", "pending")

    def __init__(self, owner: Owner, loop: IO, src: socket.socket,
                 dst: socket.socket, pool: PipePool) -> None:
        super().__init__(owner, loop, src, dst)
        self.pool = pool
        self.pipe: tuple[int, int] | None = None
        self.pending = 0  # bytes in our pipe that the destination has not taken yet

    def _set_pending(self, n: int) -> None:
        self.pool.held += n - self.pending
        self.pending = n

    def on_readable(self) -> int:
        """Source readable: move what is there through the pipe, until the source is empty or dst is full.

        Returns the bytes taken from the source (the loop ignores it; the connection uses it once)."""
        self.owner.active = True
        pipe = self.pipe
        if pipe is None:  # only connections with bytes in flight hold a pipe
            try:
                pipe = self.pipe = self.pool.get()
            except OSError as exc:  # out of descriptors: drop this connection, not the relay
                self.owner.fail(self, exc, True)
                return 0
        pr, pw = pipe
        pool = self.pool
        # over the budget of bytes parked in pipes, read in pipe-default-sized steps (bounds kernel memory held
        # by many slow readers at once, like HAProxy's maxpipes)
        size = pool.size if pool.held < HELD_BUDGET else SMALL_PIPE_READ
        sfd, dfd = self.sfd, self.dfd
        moved = 0
        for _ in range(ROUNDS):
            try:
                n = _splice(sfd, pw, size, flags=_SPLICE_FLAGS)
            except BlockingIOError:  # the pipe is empty here, so this means the source is
                break
            except OSError as exc:
                self.owner.fail(self, exc, True)
                return moved
            if n == 0:
                self.eof = True
                break
            moved += n
            pending = n
            while pending:
                try:
                    pending -= _splice(pr, dfd, pending, flags=_SPLICE_FLAGS)
                except BlockingIOError:
                    self._set_pending(pending)
                    self._blocked()
                    return moved
                except OSError as exc:
                    self._set_pending(pending)
                    self.owner.fail(self, exc, False)
                    return moved
            if n < SMALL_READ:
                # A small read almost always emptied the source; the readiness is level-triggered, so if more
                # is there we are called again. Skipping the confirming EAGAIN saves a syscall per message.
                break
        self.pipe = None
        self.pool.put(pipe)
        if self.eof:
            self._finish()
        return moved

    def on_writable(self) -> None:
        """Destination drained a little: push the rest of the pipe, then read the source again."""
        self.owner.active = True
        pr = self.pipe[0]  # type: ignore[index]
        pending = self.pending
        while pending:
            try:
                pending -= _splice(pr, self.dfd, pending, flags=_SPLICE_FLAGS)
            except BlockingIOError:
                self._set_pending(pending)
                return
            except OSError as exc:
                self._set_pending(pending)
                self.owner.fail(self, exc, False)
                return
        self._set_pending(0)
        self.pool.put(self.pipe)  # type: ignore[arg-type]
        self.pipe = None
        self._unblocked()

    def stop(self, unregister: bool = True) -> None:
        super().stop(unregister)
        if self.pipe is not None:
            if self.pending:
                self.pool.discard(self.pipe)  # bytes still inside: never hand them to another connection
            else:
                self.pool.put(self.pipe)
            self.pipe = None
            self._set_pending(0)


class RemainderHalf(Half):
    """A half that copies through Python: keeps only what the destination refused (`rest`) and sends it when the
    destination drains. Subclasses read the source (`on_readable`) and may act once the remainder is out
    (`_drained`)."""

    __slots__ = ("rest",)

    def __init__(self, owner: Owner, loop: IO, src: socket.socket, dst: socket.socket) -> None:
        super().__init__(owner, loop, src, dst)
        self.rest: bytes = b""

    def on_writable(self) -> None:
        """Destination drained a little: send the remainder; once it is all out, `_drained()`."""
        self.owner.active = True
        try:
            m = self.dst.send(self.rest)
        except BlockingIOError:
            return
        except OSError as exc:
            self.owner.fail(self, exc, False)
            return
        self.rest = self.rest[m:]
        if not self.rest:
            self._drained()

    def _drained(self) -> None:
        """Everything refused before is delivered: read the source again."""
        self._unblocked()

    def stop(self, unregister: bool = True) -> None:
        super().stop(unregister)
        self.rest = b""


class BufferedHalf(RemainderHalf):
    """Portable copy through one shared scratch buffer; only an unsent remainder is kept per direction."""

    __slots__ = ("scratch",)

    def __init__(self, owner: Owner, loop: IO, src: socket.socket,
                 dst: socket.socket, scratch: memoryview) -> None:
        super().__init__(owner, loop, src, dst)
        self.scratch = scratch

    def on_readable(self) -> int:
        """Source readable: recv into the scratch buffer, send; keep only what the destination refused.

        Returns the bytes taken from the source."""
        self.owner.active = True
        src, dst, buf = self.src, self.dst, self.scratch
        moved = 0
        for _ in range(ROUNDS):
            try:
                n = src.recv_into(buf)
            except BlockingIOError:
                return moved
            except OSError as exc:
                self.owner.fail(self, exc, True)
                return moved
            if n == 0:
                self.eof = True
                self._finish()
                return moved
            moved += n
            try:
                m = dst.send(buf[:n])
            except BlockingIOError:
                m = 0
            except OSError as exc:
                self.owner.fail(self, exc, False)
                return moved
            if m < n:
                self.rest = bytes(buf[m:n])
                self._blocked()
                return moved
            if n < SMALL_READ:
                return moved
        return moved

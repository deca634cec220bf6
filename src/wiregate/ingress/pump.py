"""Moving bytes after the decision: one half per direction, driven by add_reader/add_writer (no task per
connection once routed, nothing buffered while idle).

The splice half and its pipe pool are the shared data path's (`wiregate.datapath.halves`, the relay's too): one
implementation of the zero-copy path, its back-pressure and its rule that a pipe still holding bytes is closed,
never pooled. What is the ingress's own:

- `Link`: a routed connection, the `Owner` both halves report to. Any error on either side closes the whole
  connection (the relay instead passes a reset on as a reset; the ingress keeps its plain close).
- `CopyHalf`: recv/send through Python with an optional `transform` of each chunk (the HTTP forwarder rewrites
  request heads here and may answer-and-close); also the portable path where splice(2) is missing.

Back-pressure: a half stops reading its source while its destination is full, so at most one pipe or one chunk
per direction is held. EOF is passed on as shutdown(SHUT_WR) once everything before it is delivered.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from wiregate.datapath.halves import HAVE_SPLICE, PIPE_SIZE, Half, PipePool, RemainderHalf, SpliceHalf
from wiregate.datapath.poller import Poller

__all__ = ["HAVE_SPLICE", "PIPE_SIZE", "POOL_KEEP", "CHUNK", "Transform", "Link", "Half", "PipePool", "SpliceHalf",
           "CopyHalf", "PausingHalf", "AnswerHalf", "new_pipe_pool"]

POOL_KEEP = 128  # idle empty pipes the ingress keeps for the next connections (2 fds each)
CHUNK = 65536  # CopyHalf: bytes per recv
Transform = Callable[[bytes], tuple[bytes, bytes | None]]  # data -> (to destination, reply-and-close or None)


def new_pipe_pool() -> PipePool:
    """The ingress's pool of splice pipes (the relay's PipePool, keeping POOL_KEEP idle pipes)."""
    return PipePool(keep=POOL_KEEP)


class Link:
    """A routed connection: two sockets and two halves. `on_close` runs once when both halves are done.

    Implements the data path's `Owner`: `active` (cleared by the idle sweep, set by any traffic), `open_halves`,
    `half_done()` and `fail()`."""

    __slots__ = ("loop", "client", "backend", "halves", "open_halves", "closed", "active", "idle_ticks",
                 "on_close", "info")

    def __init__(self, loop: asyncio.AbstractEventLoop | Poller, client: socket.socket, backend: socket.socket,
                 on_close: Callable[[Link], None], info: object = None) -> None:
        self.loop = loop
        self.client, self.backend = client, backend
        self.halves: list[Half] = []
        self.open_halves = 2
        self.closed = False
        self.active = True
        self.idle_ticks = 0
        self.on_close = on_close
        self.info = info

    def start(self, up: Half, down: Half) -> None:
        """Start both directions (client -> backend, backend -> client)."""
        self.halves = [up, down]
        up.start()
        down.start()

    def half_done(self) -> None:
        """One direction delivered its EOF; the second one closes the connection."""
        self.open_halves -= 1
        if self.open_halves == 0:
            self.close()

    def fail(self, half: Half, exc: OSError, reading: bool) -> None:
        """A read or write error on either side: close the whole connection."""
        self.close()

    def close(self) -> None:
        """Stop both halves and close both sockets (idempotent)."""
        if self.closed:
            return
        self.closed = True
        loop = self.loop
        if isinstance(loop, Poller):
            # both sockets are closed just below, which takes them out of the epoll set: no epoll_ctl needed
            loop.forget(self.client.fileno())
            loop.forget(self.backend.fileno())
            for h in self.halves:
                h.stop(False)
        else:
            for h in self.halves:
                h.stop()
        self.client.close()
        self.backend.close()
        self.on_close(self)


class CopyHalf(RemainderHalf):
    """recv/send through Python, with an optional transform of each chunk (may end the connection)."""

    __slots__ = ("transform", "closing")

    def __init__(self, link: Link, src: socket.socket, dst: socket.socket, transform: Transform | None = None) -> None:
        super().__init__(link, link.loop, src, dst)
        self.transform = transform
        self.closing: bytes | None = None  # reply to write to the source before closing

    def on_readable(self) -> int:
        """Source readable: recv one chunk, transform it, send; keep only what the destination refused."""
        self.owner.active = True
        try:
            data = self.src.recv(CHUNK)
        except BlockingIOError:
            return 0
        except OSError as exc:
            self.owner.fail(self, exc, True)
            return 0
        if not data:
            self.eof = True
            if not self.rest:
                self._finish()
            return 0
        n = len(data)
        if self.transform is not None:
            data, reply = self.transform(data)
            if reply is not None:
                self.closing = reply
        self._send(data)
        return n

    def _send(self, data: bytes) -> None:
        try:
            m = self.dst.send(data) if data else 0
        except BlockingIOError:
            m = 0
        except OSError as exc:
            self.owner.fail(self, exc, False)
            return
        if m < len(data):
            self.rest = data[m:]
            self._blocked()
        elif self.closing is not None:
            self.refuse()

    def _drained(self) -> None:
        """The remainder is out: refuse when the transform ended the connection, else read the source again."""
        if self.closing is not None:
            self.refuse()
        else:
            self._unblocked()

    def refuse(self) -> None:
        """Write the reply to the source (best effort, it is small) and close the connection."""
        try:
            self.src.send(self.closing or b"")
        except OSError:
            pass
        self.owner.fail(self, OSError("refused by the transform"), False)

class PausingHalf(CopyHalf):
    """A CopyHalf that stops reading its source while `hold()` says so (the HTTP forwarder holding a client's bytes
    until the backend answered an Upgrade request); `resume()` runs the transform on no new bytes, which releases
    what it held, and reads again."""

    __slots__ = ("hold", "link", "paused")

    def __init__(self, link: Link, src: socket.socket, dst: socket.socket, transform: Transform,
                 hold: Callable[[], bool]) -> None:
        super().__init__(link, src, dst, transform)
        self.link = link
        self.hold = hold
        self.paused = False

    def start(self) -> None:
        if self.hold():
            self.paused = True
        else:
            super().start()

    def on_readable(self) -> int:
        n = super().on_readable()
        if self.hold() and not self.link.closed:
            self.paused = True
            if self.reading:
                self.reading = False
                self.loop.remove_reader(self.sfd)
        return n

    def _unblocked(self) -> None:
        if self.paused:  # drained, but still holding: read nothing until resume()
            self.writing = False
            self.loop.remove_writer(self.dfd)
            return
        super()._unblocked()

    def resume(self) -> None:
        """The hold ended: send what the transform releases, then read the source again."""
        if not self.paused or self.link.closed or self.hold():
            return
        self.paused = False
        data, reply = self.transform(b"")  # type: ignore[misc]
        if reply is not None:
            self.closing = reply
        if self.rest:  # still waiting for the destination: _unblocked() reads again once it drained
            self.rest += data
            return
        self._send(data)
        if not self.rest and self.closing is None and not self.link.closed and not self.reading:
            self.reading = True
            self.loop.add_reader(self.sfd, self.on_readable)


class AnswerHalf(CopyHalf):
    """The other direction of a PausingHalf (the service's answers, through a transform that may resume it): a
    service that closes while the client half still holds bytes for its answer ends the connection, since no
    answer will come to release them."""

    __slots__ = ("paused_half",)

    def __init__(self, link: Link, src: socket.socket, dst: socket.socket, transform: Transform,
                 paused_half: PausingHalf) -> None:
        super().__init__(link, src, dst, transform)
        self.paused_half = paused_half

    def _finish(self) -> None:
        if self.paused_half.paused:
            self.owner.fail(self, OSError("closed before answering the Upgrade request"), True)
            return
        super()._finish()

"""Readiness for connection sockets through one private epoll set, itself watched by the event loop.

uvloop gives every descriptor passed to add_reader/add_writer its own libuv poll handle; creating one costs
an allocation plus three epoll_ctl calls and an ioctl, and closing it two more (failing) epoll_ctl calls. For a
short connection that is ~18 epoll_ctl calls (counted with `strace -c` under `wrk`). Here a connection's
sockets are registered in a private level-triggered epoll set instead (one epoll_ctl per change); the loop
watches only that set's descriptor. Same interface as the loop's add_reader/remove_reader/add_writer/
remove_writer, so the data path does not know which one it talks to.
"""

from __future__ import annotations

import asyncio
import select
from typing import Callable

HAVE_EPOLL = hasattr(select, "epoll")
BATCH = 256  # events taken per wakeup; the set stays readable (level-triggered) if more are pending

if HAVE_EPOLL:
    _IN = select.EPOLLIN
    _OUT = select.EPOLLOUT
    _ERR = select.EPOLLERR | select.EPOLLHUP


class Poller:
    """add_reader/add_writer for many descriptors through one epoll set registered with `loop`."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.ep = select.epoll()
        # fd -> [mask, reader, writer]
        self.fds: dict[int, list] = {}
        # descriptors unregistered while a batch is being dispatched: their remaining events in the batch are stale
        # (the number may already belong to a new socket), so they are skipped; level-triggering re-reports real ones
        self._dead: set[int] = set()
        self._dispatching = False
        loop.add_reader(self.ep.fileno(), self._dispatch)

    def time(self) -> float:
        """The loop's clock (so code may use a Poller where it expects the loop)."""
        return self.loop.time()

    def _set(self, fd: int, bit: int, cb: Callable[[], object] | None, slot: int) -> None:
        entry = self.fds.get(fd)
        if entry is None:
            if cb is None:
                return
            self.fds[fd] = entry = [bit, None, None]
            entry[slot] = cb
            self.ep.register(fd, bit)
            return
        entry[slot] = cb
        mask = entry[0] | bit if cb is not None else entry[0] & ~bit
        if mask == entry[0]:
            return
        if mask:
            entry[0] = mask
            self.ep.modify(fd, mask)
        else:
            del self.fds[fd]
            if self._dispatching:
                self._dead.add(fd)
            try:
                self.ep.unregister(fd)
            except OSError:  # already closed: the kernel dropped it from the set itself
                pass

    def add_reader(self, fd: int, cb: Callable[[], object]) -> None:
        """Call cb whenever fd is readable (or in error / hung up)."""
        self._set(fd, _IN, cb, 1)

    def remove_reader(self, fd: int) -> None:
        """Stop watching fd for reading."""
        self._set(fd, _IN, None, 1)

    def add_writer(self, fd: int, cb: Callable[[], object]) -> None:
        """Call cb whenever fd is writable (or in error / hung up)."""
        self._set(fd, _OUT, cb, 2)

    def remove_writer(self, fd: int) -> None:
        """Stop watching fd for writing."""
        self._set(fd, _OUT, None, 2)

    def set_reader_only(self, fd: int, cb: Callable[[], object]) -> None:
        """Watch fd for reading with cb and no longer for writing, in one epoll_ctl (a connect just completed)."""
        entry = self.fds.get(fd)
        if entry is None:
            return self.add_reader(fd, cb)
        entry[1], entry[2] = cb, None
        if entry[0] != _IN:
            entry[0] = _IN
            self.ep.modify(fd, _IN)

    def forget(self, fd: int) -> None:
        """Drop fd without a syscall: only for a descriptor about to be closed (close removes it from the set)."""
        if self.fds.pop(fd, None) is not None and self._dispatching:
            self._dead.add(fd)

    def _dispatch(self) -> None:
        try:
            events = self.ep.poll(0, BATCH)
        except InterruptedError:
            return
        fds, dead = self.fds, self._dead
        self._dispatching = True
        try:
            for fd, ev in events:
                if fd in dead:
                    continue
                entry = fds.get(fd)
                if entry is None:
                    continue
                try:
                    if ev & _IN or (ev & _ERR and entry[1] is not None):
                        cb = entry[1]
                        if cb is not None:
                            cb()
                            if fd in dead:
                                continue
                            entry = fds.get(fd)
                            if entry is None:
                                continue
                    if ev & (_OUT | _ERR):
                        cb = entry[2]
                        if cb is not None:
                            cb()
                except Exception as exc:  # one connection's bug must not stop the others
                    self.loop.call_exception_handler({"message": "data path: error in a socket callback",
                                                      "exception": exc})
        finally:
            self._dispatching = False
            dead.clear()

    def close(self) -> None:
        """Stop watching everything (descriptors themselves are closed by their owners)."""
        self.loop.remove_reader(self.ep.fileno())
        self.ep.close()
        self.fds.clear()

"""Helpers for relay tests: small asyncio backends that record PROXY headers, and a running Relay."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import resource
import socket
import time

import pytest

from wiregate.proxyproto import Decoder, ProxyHeader
from wiregate.relay import Backend, Relay, RelayConfig, TCPService
from wiregate.testing.peers import free_port


class EchoBackend:
    """A TCP backend in the test's loop: reads a PROXY header (when `proxy`), records it, greets, then echoes.

    After the client's EOF it sends `after_eof` (to prove the other direction still works) and closes."""

    def __init__(self, name: str = "b", proxy: bool = True, greet: bool = False, after_eof: bytes = b"") -> None:
        self.name = name
        self.proxy = proxy
        self.greet = greet
        self.after_eof = after_eof
        self.headers: list[ProxyHeader] = []
        self.connections = 0
        self.server: asyncio.base_events.Server | None = None
        self.port = 0
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self, port: int = 0) -> "EchoBackend":
        # backlog: asyncio's default of 100 overflows when 2,000 relayed connects arrive in a burst; Linux then drops
        # the SYN and the connect waits 1 s, 3 s, 7 s for retransmits: past the relay's connect_timeout when busy
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", port or free_port(), limit=1 << 20,
                                                 backlog=4096)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def clients(self) -> int:
        """Connections that carried a client's PROXY header (health checks excluded)."""
        return sum(1 for h in self.headers if not h.is_local)

    @property
    def backend(self) -> Backend:
        return Backend("127.0.0.1", self.port, name=self.name)

    async def stop(self) -> None:
        """Stop listening and drop open connections (the backend 'dies')."""
        if self.server is not None:
            self.server.close()
            for w in list(self.writers):
                w.transport.abort()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)
            self.server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.add(writer)
        try:
            rest = b""
            if self.proxy:
                dec = Decoder()
                header = None
                while header is None:
                    chunk = await asyncio.wait_for(reader.read(4096), 10)
                    if not chunk:
                        return
                    header = dec.feed(chunk)
                self.headers.append(header)
                rest = dec.rest
                if header.is_local:  # a health check
                    return
            if self.greet:
                writer.write(self.name.encode() + b"\n")
            if rest:
                writer.write(rest)
            while True:
                data = await reader.read(1 << 16)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
            if self.after_eof:
                writer.write(self.after_eof)
            writer.write_eof()
            await writer.drain()
        except (ConnectionError, asyncio.TimeoutError):
            pass
        finally:
            self.writers.discard(writer)
            writer.close()


def tcp_service(port: int, backends, **kw) -> TCPService:
    kw.setdefault("health", None)
    kw.setdefault("connect_timeout", 2.0)
    return TCPService(name=kw.pop("name", "svc"), listen=(("127.0.0.1", port),), backends=tuple(backends), **kw)


@contextlib.asynccontextmanager
async def running(config: RelayConfig, drain: float = 1.0):
    relay = Relay(config)
    await relay.start()
    try:
        yield relay
    finally:
        await relay.close(drain)


async def exchange(port: int, payload: bytes, host: str = "127.0.0.1", timeout: float = 10) -> bytes:
    """Connect, send, half-close, read to EOF."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    writer.write(payload)
    writer.write_eof()
    data = await asyncio.wait_for(reader.read(-1), timeout)
    writer.close()
    return data


async def greeting(port: int, timeout: float = 5) -> str:
    """Connect and return the greeting line of a `greet` backend."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        return (await asyncio.wait_for(reader.readline(), timeout)).decode().strip()
    finally:
        writer.close()


@pytest.fixture
def many_files():
    """Raise RLIMIT_NOFILE (soft to hard) for tests holding thousands of sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture(params=[(True, "epoll", "c"), (True, "epoll", "python"), (False, "epoll", "python"),
                        (True, "loop", "python")],
                ids=["splice", "splice-python", "buffered", "splice-loop-io"])
def splice(request, monkeypatch):
    """Every data path: splice in C (the default where the extension is built: wiregate.datapath.pump), splice
    and the buffered copy in Python; sockets watched by the private epoll set (default) or by the loop itself."""
    use_splice, io, datapath = request.param
    monkeypatch.setenv("WIREGATE_RELAY_POLLER", io)
    monkeypatch.setenv("WIREGATE_DATAPATH", datapath)
    return use_splice


async def unanswering_listener() -> list[socket.socket]:
    """[listener, fillers...]: a listener that never accepts, its one-slot queue full, so that the kernel drops
    further SYNs and connects to it hang (close them all after use; the listener's address: [0].getsockname())."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(0)
    made = [hole]
    for _ in range(3):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(hole.getsockname())
        made.append(s)

    def queue_full() -> bool:  # the first filler completed its handshake into the one-slot accept queue
        try:
            made[1].getpeername()
            return True
        except OSError:
            return False
    await eventually(queue_full, what="the hole's accept queue to fill")
    return made


def sockets_of(conn) -> list[socket.socket]:
    """The client and backend sockets of a relayed connection, on either data path (duplicates: close them)."""
    return [socket.socket(fileno=os.dup(fd)) for fd in conn.fds()]


async def eventually(pred, timeout: float = 10.0, what: str = "condition", every: float = 0.02):
    """Wait until `pred()` (sync or async) is true, polling; AssertionError naming `what` after `timeout` seconds.

    Tests wait for the state they assert instead of sleeping a guessed time: a busy machine only makes them slower."""
    deadline = time.monotonic() + timeout
    while True:
        ok = pred()
        if inspect.isawaitable(ok):
            ok = await ok
        if ok:
            return ok
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        await asyncio.sleep(every)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (from /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def local_port(kind=socket.SOCK_STREAM) -> int:
    return free_port("127.0.0.1", kind)

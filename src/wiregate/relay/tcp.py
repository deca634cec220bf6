"""TCP services: listeners, the connect-with-retry state machine, PROXY header, then the data path.

Everything here is callback driven (add_reader/add_writer/call_later) rather than one task per connection: a
task, a transport and stream buffers would cost several KB per idle connection and a few microseconds per
event. Decisions (which backend, is it up, which one next after a failed connect and when to give up, may this
client connect) are asked of the sans-I/O BackendPool, `retry.next_attempt` and
SourceLimits; this module only moves sockets and bytes (the byte moving itself is `wiregate.datapath`).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from typing import TYPE_CHECKING

from wiregate import hostport
from wiregate.datapath.halves import HAVE_SPLICE, BufferedHalf, Half, PipePool, SpliceHalf, is_reset, reset
from wiregate.datapath.poller import Poller
from wiregate.datapath.pump import TIMED_OUT, Link, Pump
from wiregate.limits import NO_DESCRIPTORS, Backoff
from wiregate.proxyproto import PP2_TYPE_UNIQUE_ID, TLV, Command, encode_v1, encode_v2
from wiregate.relay.config import TCPService, format_addr
from wiregate.relay.pool import BackendPool, BackendState, SourceLimits
from wiregate.relay.retry import next_attempt

if TYPE_CHECKING:
    from wiregate.relay.host import RelayHost

log = logging.getLogger("wiregate.relay")
# one INFO line per connection: client -> site via the address the client connected to (`wiregate run
# --access-log`, `python -m wiregate.relay -v` turn it on; off, the line is not even formatted)
access_log = logging.getLogger("wiregate.relay.access")
ACCEPT_BATCH = 64  # accepts per readiness callback: amortises the loop round trip under connection storms
# C pump: what a client has already sent is read at accept (one recv instead of two splices through a pipe) and
# leaves with the PROXY header in one send; a client that has not spoken yet is read by the pump once linked
FIRST_READ = 16384
_NODELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
# non-blocking from creation where the platform allows it (saves an ioctl per backend connection)
_STREAM_NONBLOCK = socket.SOCK_STREAM | getattr(socket, "SOCK_NONBLOCK", 0)


plain_addr = hostport.unmap  # (host, port), IPv4-mapped IPv6 back to IPv4 (what HAProxy reports as the source)


def bind_socket(kind: int, host: str, port: int, reuse_port: bool) -> socket.socket:
    """A bound non-blocking socket (listening when TCP); IPv6 listeners are v6-only so [::] and 0.0.0.0 coexist."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(fam, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if fam == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        if kind == socket.SOCK_STREAM:
            # accepted sockets inherit TCP_NODELAY from the listener (Linux, BSDs): one setsockopt per client saved
            sock.setsockopt(*_NODELAY)
            sock.listen(4096)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class TCPListener:
    """One listening socket; the service it feeds can be swapped on reload without closing it."""

    def __init__(self, relay: RelayHost, sock: socket.socket, key: tuple) -> None:
        self.relay = relay
        self.sock = sock
        self.key = key
        self.service: TCPRuntime | None = None
        self.accepting = False
        self.backoff = Backoff()  # out of descriptors: pause with a growing delay instead of spinning on accept()
        self.fd_timer: asyncio.TimerHandle | None = None
        name = sock.getsockname()
        self.addr = format_addr(name)
        # the PROXY destination: the listener's own address unless it is a wildcard (then ask each socket)
        self.local: tuple[str, int] | None = None if key[1].is_unspecified else plain_addr(name)

    def resume(self) -> None:
        """Start (or restart) accepting."""
        if not self.accepting and self.sock.fileno() >= 0:
            self.accepting = True
            self.relay.loop.add_reader(self.sock.fileno(), self._on_accept)

    def pause(self) -> None:
        """Stop accepting; clients wait in the kernel's backlog (HAProxy's behaviour at maxconn)."""
        if self.accepting:
            self.accepting = False
            self.relay.loop.remove_reader(self.sock.fileno())

    def close(self) -> None:
        """Stop accepting and close the socket (open connections are not affected)."""
        self.pause()
        if self.fd_timer is not None:
            self.fd_timer.cancel()
            self.fd_timer = None
        self.sock.close()

    def _on_accept(self) -> None:
        svc = self.service
        lsock = self.sock
        pump = self.relay.pump
        if pump is not None:
            return self._on_accept_pump(pump, svc)
        for _ in range(ACCEPT_BATCH):
            try:
                sock, addr = lsock.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in NO_DESCRIPTORS:
                    return self._out_of_descriptors(exc)
                continue  # ECONNABORTED and friends: that client is gone, the next one may be fine
            if self.backoff.delay:
                self.backoff.succeeded()
            if svc is None:
                sock.close()
                continue
            svc.accepted(sock, addr, self)
            if not self.accepting:  # the service filled up
                return

    def _on_accept_pump(self, pump: Pump, svc: "TCPRuntime | None") -> None:
        """Accept a batch in C (raw descriptors, no socket objects); never more than the service has room for, so
        that clients over max_connections wait in the backlog as they do on the Python path."""
        room = ACCEPT_BATCH if svc is None else min(ACCEPT_BATCH, svc.limits.max_total - svc.limits.total)
        if room <= 0:
            return
        try:
            batch = pump.accept(self.sock.fileno(), room, self.local is None, FIRST_READ)
        except OSError as exc:
            if exc.errno in NO_DESCRIPTORS:
                return self._out_of_descriptors(exc)
            return
        if self.backoff.delay and batch:
            self.backoff.succeeded()
        for fd, client, local, first in batch:
            if svc is None or not self.accepting:  # (a reload took the service away in the middle of a batch)
                os.close(fd)
                continue
            if type(first) is int:  # the first read failed (a reset before we got to it): nothing to relay
                os.close(fd)
                continue
            svc.accepted_fd(fd, client, local or self.local, self, first or None)

    def _out_of_descriptors(self, exc: OSError) -> None:
        """The client stays in the backlog, so the listener would fire again at once: pause, log once in a while."""
        loop = self.relay.loop
        now = loop.time()
        delay = self.backoff.failed(now, errno.errorcode.get(exc.errno or 0, str(exc)))
        line = self.backoff.take_log(now)
        if line is not None:
            log.warning("%s: accept on %s: %s", self.service.config.name if self.service else "-", self.addr, line)
        self.pause()
        if self.fd_timer is None:
            self.fd_timer = loop.call_later(delay, self._unpause)

    def _unpause(self) -> None:
        self.fd_timer = None
        if self.sock.fileno() < 0:
            return
        if self.service is not None and not self.service.limits.full() and not self.relay.closing \
                and not self.service.retired:
            self.resume()


class TCPRuntime:
    """A running TCP service: its pool, limits, listeners and open connections."""

    def __init__(self, relay: RelayHost, config: TCPService, addrs: list[tuple]) -> None:
        self.relay = relay
        self.loop = relay.loop
        self.limits = SourceLimits(config.max_connections, config.max_per_source)
        self.connections: set[TCPConnection | PumpedConnection] = set()
        self.totals = {"accepted": 0, "refused": 0, "failed": 0, "completed": 0}
        self.listeners: list[TCPListener] = []
        self.retired = False
        self._health_task: asyncio.Task | None = None
        self._check_tasks: set[asyncio.Task] = set()
        self.pool: BackendPool = None  # type: ignore[assignment]  # set by update() just below
        self.update(config, addrs)

    def update(self, config: TCPService, addrs: list[tuple]) -> None:
        """Take a new config for this service (reload): open connections, counts and backend health carry over."""
        self.config = config
        self.addrs = addrs  # resolved sockaddr per backend index
        self.pool = BackendPool(config.backends, config.balance, config.health, self.loop.time(), self.pool)
        self.limits.max_total, self.limits.max_per_source = config.max_connections, config.max_per_source
        hc = config.health
        self._check_header = b""
        if hc is not None and hc.send_proxy:  # HAProxy's check-send-proxy: LOCAL, nothing about a client
            self._check_header = (encode_v1(None, None) if config.proxy_protocol == "v1"
                                  else encode_v2(command=Command.LOCAL, crc32c="crc32c" in config.proxy_tlvs))
        self._tlv_unique = "unique-id" in config.proxy_tlvs
        self._tlv_crc = "crc32c" in config.proxy_tlvs

    # -- lifecycle -----------------------------------------------------------------------------------------
    def start_health(self) -> None:
        """Run active checks in the background (no-op without a health config)."""
        if self.config.health is not None and self._health_task is None:
            self._health_task = self.loop.create_task(self._health_loop(), name=f"health-{self.config.name}")

    def stop_health(self) -> None:
        """Cancel active checks."""
        if self._health_task is not None:
            self._health_task.cancel()
            self._health_task = None
        for t in self._check_tasks:
            t.cancel()
        self._check_tasks.clear()

    def pause_all(self) -> None:
        for lst in self.listeners:
            lst.pause()

    def resume_all(self) -> None:
        if self.relay.closing or self.retired:
            return
        for lst in self.listeners:
            lst.resume()

    # -- accepting -----------------------------------------------------------------------------------------
    def _admit(self, client: tuple[str, int], listener: TCPListener) -> bool:
        """Apply the limits to a new client (counted, and the listeners paused when full); False: refused, logged."""
        why = self.limits.admit(client[0])
        if why is not None:
            self.totals["refused"] += 1
            log.info("%s: refused %s on %s: %s", self.config.name, format_addr(client), listener.addr, why)
            return False
        self.totals["accepted"] += 1
        if self.limits.full():
            self.pause_all()
        return True

    def accepted(self, sock: socket.socket, addr: tuple, listener: TCPListener) -> None:
        """A client connected: apply limits, then start connecting to a backend."""
        client = plain_addr(addr)
        if not self._admit(client, listener):
            sock.close()
            return
        sock.setblocking(False)
        conn = TCPConnection(self, sock, client, listener)
        self.connections.add(conn)
        conn.connect()

    def accepted_fd(self, fd: int, client: tuple[str, int], local: tuple[str, int] | None,
                    listener: TCPListener, first: bytes | None = None) -> None:
        """A client accepted by the C pump (a raw descriptor; `first`: what it had sent by then, if anything):
        the same limits, then connect on the pump."""
        if not self._admit(client, listener):
            os.close(fd)
            return
        conn = PumpedConnection(self, fd, client, local or ("", 0), listener, first)
        self.connections.add(conn)
        conn.connect()

    def ended(self, conn: "TCPConnection | PumpedConnection") -> None:
        """Bookkeeping when a connection closes (called once per connection)."""
        self.connections.discard(conn)
        was_full = self.limits.full()
        self.limits.release(conn.client[0])
        if was_full and not self.limits.full():
            self.resume_all()
        else:
            for lst in self.listeners:  # paused for lack of descriptors: this connection just freed two
                if lst.fd_timer is not None and not lst.accepting and not self.relay.closing and not self.retired:
                    lst.resume()
        self.relay.connection_ended()

    # -- health --------------------------------------------------------------------------------------------
    async def _health_loop(self) -> None:
        loop = self.loop
        while True:
            now = loop.time()
            for i in self.pool.due_checks(now):
                task = loop.create_task(self._check(i))
                self._check_tasks.add(task)
                task.add_done_callback(self._check_tasks.discard)
            deadline = self.pool.next_deadline()
            delay = 0.5 if deadline is None else min(max(deadline - loop.time(), 0.005), 0.5)
            await asyncio.sleep(delay)

    async def _check(self, i: int) -> None:
        hc = self.config.health
        assert hc is not None
        addr = self.addrs[i]
        ok = False
        sock = None
        try:
            sock = socket.socket(socket.AF_INET6 if len(addr) == 4 else socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            await asyncio.wait_for(self.loop.sock_connect(sock, addr), hc.timeout)
            if self._check_header:
                await asyncio.wait_for(self.loop.sock_sendall(sock, self._check_header), hc.timeout)
            ok = True
        except (OSError, asyncio.TimeoutError):  # a local failure (no descriptor) counts as failed too
            ok = False
        finally:
            if sock is not None:
                sock.close()
        changed = self.pool.check_result(i, ok, self.loop.time())
        if changed is not None:
            b = self.config.backends[i]
            log.warning("%s: backend %s is %s (health check)", self.config.name, b.label, "UP" if changed else "DOWN")

    # -- per connection ------------------------------------------------------------------------------------
    def header_for(self, client: tuple[str, int], local: tuple[str, int]) -> tuple[bytes, str]:
        """The PROXY header for a connection (and its unique id, '' when not sent)."""
        version = self.config.proxy_protocol
        if version == "none":
            return b"", ""
        if version == "v1":
            return encode_v1(client, local), ""
        uid = ""
        tlvs: tuple[TLV, ...] = ()
        if self._tlv_unique:
            uid = os.urandom(16).hex()
            tlvs = (TLV(PP2_TYPE_UNIQUE_ID, uid.encode()),)
        return encode_v2(client, local, tlvs=tlvs, crc32c=self._tlv_crc), uid

    def status(self) -> dict:
        """Listeners, backends with health, open connections, totals."""
        return {
            "kind": "tcp",
            "listeners": [lst.addr for lst in self.listeners],
            "backends": self.pool.status(),
            "open": len(self.connections),
            "totals": dict(self.totals),
            "balance": self.config.balance,
            "proxy_protocol": self.config.proxy_protocol,
        }


def connect_failed(conn: "TCPConnection | PumpedConnection", why: str) -> None:
    """A connect of `conn` failed (its backend socket is closed): tell the pool, log it (and the backend going
    DOWN), then try the next backend unless the connection was closed meanwhile. Either data path."""
    svc, pool, backend = conn.svc, conn.pool, conn.backend
    assert pool is not None
    st = pool.states[backend]
    b = st.backend
    was_up = st.up
    pool.connect_failed(backend, svc.loop.time())
    log.info("%s: connect to %s for %s failed: %s", svc.config.name, b.label, format_addr(conn.client), why)
    if was_up and not st.up:
        log.warning("%s: backend %s is DOWN (%d failed connects)", svc.config.name, b.label, st.failed_connects)
    conn.backend = -1
    if not conn.closed:
        conn.connect()


def give_up(conn: "TCPConnection | PumpedConnection", why: str) -> None:
    """No backend is left for `conn` (its client socket is closed): count and log it. Either data path."""
    svc = conn.svc
    svc.totals["failed"] += 1
    log.info("%s: dropped %s: %s", svc.config.name, format_addr(conn.client), why)
    conn.closed = True
    svc.ended(conn)


class TCPConnection:
    """One client connection: connecting (with retries), then two Halves until both directions end."""

    __slots__ = ("svc", "csock", "bsock", "client", "listener", "backend", "pool", "bstate", "tried", "timer",
                 "halves", "open_halves", "active", "idle_since", "closed")

    def __init__(self, svc: TCPRuntime, csock: socket.socket, client: tuple[str, int], listener: TCPListener) -> None:
        self.svc = svc
        self.csock = csock
        self.bsock: socket.socket | None = None
        self.client = client
        self.listener = listener
        self.backend = -1
        self.pool: BackendPool | None = None  # the pool that chose `backend` (a reload may replace svc.pool)
        self.bstate: BackendState | None = None  # that backend's state, released into when the connection ends
        self.tried: list[int] = []
        self.timer: asyncio.TimerHandle | None = None
        self.halves: tuple[Half, Half] | None = None
        self.open_halves = 2
        self.active = True  # set by the data path on every event; the idle sweeper clears it
        self.idle_since = 0.0
        self.closed = False

    @property
    def established(self) -> bool:
        """Connected to a backend, bytes moving."""
        return self.halves is not None

    def fds(self) -> tuple[int, int]:
        """The client's and the backend's socket descriptors."""
        return self.csock.fileno(), self.bsock.fileno() if self.bsock is not None else -1

    # -- connecting ----------------------------------------------------------------------------------------
    def connect(self) -> None:
        """Connect to the next backend the pool offers; refuse the client when none is left."""
        svc = self.svc
        loop = svc.loop
        cfg = svc.config
        i = next_attempt(svc.pool, self.client[0], loop.time(), self.tried, cfg.retries)  # the policy: retry.py
        if isinstance(i, str):
            return self._give_up(i)
        self.backend = i
        self.pool = svc.pool
        self.tried.append(i)
        addr = svc.addrs[i]
        try:
            bsock = socket.socket(socket.AF_INET6 if len(addr) == 4 else socket.AF_INET, _STREAM_NONBLOCK)
        except OSError as exc:  # out of descriptors or buffers: this client cannot be served now
            self.tried.pop()
            return self._give_up(f"cannot open a socket: {exc.strerror}")
        if not _STREAM_NONBLOCK & getattr(socket, "SOCK_NONBLOCK", 0):
            bsock.setblocking(False)
        bsock.setsockopt(*_NODELAY)
        self.bsock = bsock
        err = bsock.connect_ex(addr)
        if err == 0:  # loopback and local tunnels may complete the handshake inside connect()
            return self._connected()
        if err != errno.EINPROGRESS:
            return self._connect_failed(os.strerror(err))
        svc.relay.io.add_writer(bsock.fileno(), self._on_connect)
        self.timer = loop.call_later(cfg.connect_timeout, self._on_connect_timeout)

    def _on_connect(self) -> None:
        bsock = self.bsock
        assert bsock is not None
        io = self.svc.relay.io
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        err = bsock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            io.remove_writer(bsock.fileno())
            return self._connect_failed(os.strerror(err))
        if not isinstance(io, Poller):  # (the Poller turns the write watch into a read watch in one call below)
            io.remove_writer(bsock.fileno())
        self._connected()

    def _on_connect_timeout(self) -> None:
        self.timer = None
        if self.bsock is not None:
            self.svc.relay.io.remove_writer(self.bsock.fileno())
        self._connect_failed(f"no answer within {self.svc.config.connect_timeout}s")

    def _connect_failed(self, why: str) -> None:
        if self.bsock is not None:
            self.bsock.close()
            self.bsock = None
        connect_failed(self, why)

    def _give_up(self, why: str) -> None:
        self.csock.close()
        give_up(self, why)

    def _connected(self) -> None:
        svc = self.svc
        bsock = self.bsock
        csock = self.csock
        assert bsock is not None and self.pool is not None
        self.pool.connect_ok(self.backend, svc.loop.time())
        st = self.bstate = self.pool.states[self.backend]
        label = st.backend.label
        try:
            local = self.listener.local or plain_addr(csock.getsockname())
            header, uid = svc.header_for(self.client, local)
            # MSG_MORE: hold the header back so it leaves in one segment with the client's first bytes (the
            # backend then reads header and request at once); pushed explicitly below if the client is silent.
            if header and bsock.send(header, socket.MSG_MORE) != len(header):
                # a fresh socket's send buffer (>= 4 KiB) always takes a header of at most a few hundred bytes
                raise OSError(errno.EAGAIN, "PROXY header did not fit the send buffer")
        except OSError as exc:
            log.info("%s: %s -> %s: %s", svc.config.name, format_addr(self.client), label, exc)
            return self.close(reset_client=True)
        if access_log.isEnabledFor(logging.INFO):
            access_log.info("%s: %s -> %s via %s%s", svc.config.name, format_addr(self.client), label,
                            format_addr(local), f" id={uid}" if uid else "")
        relay = svc.relay
        io = relay.io
        if relay.use_splice:
            pool = relay.pipes
            self.halves = (SpliceHalf(self, io, csock, bsock, pool), SpliceHalf(self, io, bsock, csock, pool))
        else:
            scratch = relay.scratch
            self.halves = (BufferedHalf(self, io, csock, bsock, scratch),
                           BufferedHalf(self, io, bsock, csock, scratch))
        self.halves[0].start()
        if isinstance(io, Poller):
            back = self.halves[1]
            back.reading = True
            io.set_reader_only(back.sfd, back.on_readable)  # one epoll_ctl MOD instead of a DEL and an ADD
        else:
            self.halves[1].start()
        # Clients usually speak first and their request is already queued: move it now instead of after another
        # loop round (costs one EAGAIN when it is not there, e.g. for server-first protocols such as SMTP).
        if self.halves[0].on_readable() == 0 and header and not self.closed:
            bsock.setsockopt(*_NODELAY)  # setting TCP_NODELAY pushes the corked header out now

    # -- Owner protocol (called by the halves) -------------------------------------------------------------
    def half_done(self) -> None:
        """One direction delivered its FIN; close when both have."""
        self.open_halves -= 1
        if self.open_halves == 0:
            self.close()

    def fail(self, half: Half, exc: OSError, reading: bool) -> None:
        """An error on one side: pass a reset on to the other side and close."""
        src_is_client = half.src is self.csock
        # reading error: the source side broke, reset the destination side; writing error: the reverse
        broken_is_client = src_is_client if reading else not src_is_client
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: %s: %s side: %s", self.svc.config.name, format_addr(self.client),
                      "client" if broken_is_client else "backend", exc.strerror)
        if is_reset(exc):
            self.close(reset_client=not broken_is_client, reset_backend=broken_is_client)
        else:
            self.close()

    # -- ending --------------------------------------------------------------------------------------------
    def close(self, reset_client: bool = False, reset_backend: bool = False) -> None:
        """Unregister everything and close both sockets (optionally with a RST); idempotent."""
        if self.closed:
            return
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        svc = self.svc
        halves = self.halves
        connecting = halves is None
        if halves is not None:
            io = svc.relay.io
            if isinstance(io, Poller) and self.bsock is not None:
                # both sockets are closed just below, which takes them out of the epoll set: no epoll_ctl needed
                io.forget(self.csock.fileno())
                io.forget(self.bsock.fileno())
                halves[0].stop(False)
                halves[1].stop(False)
            else:
                halves[0].stop()
                halves[1].stop()
            # each half points back at this connection: drop the cycle so reference counting frees all three now,
            # instead of leaving them (and both socket objects) for the cyclic GC to find and free in bulk
            self.halves = None
        if self.bsock is not None:
            if connecting:
                try:
                    svc.relay.io.remove_writer(self.bsock.fileno())
                except (OSError, ValueError):
                    pass
            (reset if reset_backend else _close)(self.bsock)
        (reset if reset_client else _close)(self.csock)
        if self.bstate is not None:
            BackendPool.release_state(self.bstate)
            self.bstate = None
        svc.totals["completed"] += 1
        svc.ended(self)


class PumpedConnection:
    """One client connection on the C pump (`wiregate.datapath.pump`): the same decisions as TCPConnection (the
    pool, retries, limits, logs, counts, the PROXY header), while the sockets and the bytes stay in C. The pump
    calls `_pump_connected(err)` when a connect that did not complete at once ends and `_pump_closed()` once
    both sockets are closed."""

    __slots__ = ("svc", "fd", "client", "local", "listener", "backend", "pool", "bstate", "tried", "link",
                 "header", "uid", "closed", "first")

    def __init__(self, svc: TCPRuntime, fd: int, client: tuple[str, int], local: tuple[str, int],
                 listener: TCPListener, first: bytes | None = None) -> None:
        self.svc = svc
        self.fd = fd
        self.client = client
        self.local = local
        self.listener = listener
        self.backend = -1
        self.pool: BackendPool | None = None
        self.bstate: BackendState | None = None
        self.tried: list[int] = []
        self.link: Link | None = None
        self.header: bytes | None = None
        self.uid = ""
        self.closed = False
        self.first = first  # the client's bytes read at accept: sent after the header, to each backend tried

    # the idle sweeper's view (the pump sets `active` on every event)
    @property
    def active(self) -> bool:
        return self.link is None or self.link.active

    @active.setter
    def active(self, value: bool) -> None:
        if self.link is not None:
            self.link.active = value

    @property
    def idle_since(self) -> float:
        return self.link.idle_since if self.link is not None else 0.0

    @idle_since.setter
    def idle_since(self, value: float) -> None:
        if self.link is not None:
            self.link.idle_since = value

    @property
    def established(self) -> bool:
        """Connected to a backend, bytes moving."""
        return self.link is not None and self.link.linked

    def fds(self) -> tuple[int, int]:
        """The client's and the backend's socket descriptors."""
        return self.fd, self.link.backend_fileno if self.link is not None else -1

    def connect(self) -> None:
        """Connect to the next backend the pool offers; refuse the client when none is left."""
        svc = self.svc
        cfg = svc.config
        pump = svc.relay.pump
        i = next_attempt(svc.pool, self.client[0], svc.loop.time(), self.tried, cfg.retries)
        if isinstance(i, str) or pump is None:
            return self._give_up(i if isinstance(i, str) else "relay closing")
        self.backend = i
        self.pool = svc.pool
        self.tried.append(i)
        addr = svc.addrs[i]
        if self.header is None:
            self.header, self.uid = svc.header_for(self.client, self.local)
        first = self.first
        try:
            # with the client's first bytes in hand the header and they leave in one send; without, the header
            # waits (MSG_MORE) for what the pump reads from the client once linked (first_read)
            link = pump.connect(self.fd, socket.AF_INET6 if len(addr) == 4 else socket.AF_INET, addr,
                                self.header + first if first else self.header, cfg.connect_timeout, self,
                                not first, True)
        except OSError as exc:
            if exc.errno in NO_DESCRIPTORS:  # no socket for the backend: this client cannot be served now
                self.tried.pop()
                return self._give_up(f"cannot open a socket: {exc.strerror}")
            return self._connect_failed(exc.strerror or str(exc))
        self.link = link
        if link.connected:  # loopback and local tunnels may complete the handshake inside connect()
            self._up()
            if not self.closed:
                link.start()

    def _pump_connected(self, err: int) -> None:
        if err == 0:
            return self._up()
        self.link = None
        why = f"no answer within {self.svc.config.connect_timeout}s" if err == TIMED_OUT else os.strerror(err)
        self._connect_failed(why)

    def _up(self) -> None:
        svc = self.svc
        self.first = None  # (the link has them now)
        assert self.pool is not None
        self.pool.connect_ok(self.backend, svc.loop.time())
        st = self.bstate = self.pool.states[self.backend]
        if access_log.isEnabledFor(logging.INFO):
            access_log.info("%s: %s -> %s via %s%s", svc.config.name, format_addr(self.client), st.backend.label,
                            format_addr(self.local), f" id={self.uid}" if self.uid else "")

    def _connect_failed(self, why: str) -> None:
        connect_failed(self, why)

    def _give_up(self, why: str) -> None:
        os.close(self.fd)
        give_up(self, why)

    def _pump_closed(self) -> None:
        """Both sockets are closed (by either direction's end, an error or close())."""
        link = self.link
        if link is not None and link.error and log.isEnabledFor(logging.DEBUG):
            log.debug("%s: %s: %s", self.svc.config.name, format_addr(self.client), os.strerror(link.error))
        self.closed = True
        if self.bstate is not None:
            BackendPool.release_state(self.bstate)
            self.bstate = None
        svc = self.svc
        svc.totals["completed"] += 1
        svc.ended(self)

    def close(self, reset_client: bool = False, reset_backend: bool = False) -> None:
        """Close both sockets (optionally with a RST); idempotent."""
        if self.closed:
            return
        link = self.link
        if link is not None and not link.closed:
            link.close(reset_client, reset_backend)  # calls _pump_closed
            return
        self.closed = True
        (reset_fd if reset_client else os.close)(self.fd)
        svc = self.svc
        svc.totals["completed"] += 1
        svc.ended(self)


def reset_fd(fd: int) -> None:
    """Close a raw descriptor so that the peer gets a TCP RST."""
    s = socket.socket(fileno=fd)
    reset(s)


def _close(sock: socket.socket) -> None:
    sock.close()


def splice_available() -> bool:
    """True when the zero-copy path can be used here."""
    return HAVE_SPLICE


__all__ = ["PumpedConnection", "TCPConnection", "TCPListener", "TCPRuntime", "bind_socket", "plain_addr", "PipePool"]

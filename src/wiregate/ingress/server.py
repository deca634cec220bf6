"""The asyncio layer of the ingress: sockets, timers and byte moving. Every decision is made by the sans-I/O
HeadPhase (trust, PROXY header, sniffing, routing) and HttpForwarder (per-request headers)."""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import ipaddress
import logging
import socket
import ssl
from dataclasses import replace

from wiregate.datapath import pump as cpump
from wiregate.datapath import waits
from wiregate.datapath.loop import loop_name
from wiregate.datapath.poller import HAVE_EPOLL, Poller
from wiregate.errors import ConfigError, WiregateError
from wiregate.hostport import format as fmt
from wiregate.hostport import unmap
from wiregate.ingress.config import IngressConfig, Listener, Route
from wiregate.ingress.http_forward import HttpForwarder
from wiregate.ingress.policy import (ACME_HTTP01, HEALTH_CHECK, LIMIT, Accepted, HeadPhase, Refused, Rules,
                                     http_error)
from wiregate.ingress.pump import (HAVE_SPLICE, POOL_KEEP, AnswerHalf, CopyHalf, Link, PausingHalf, SpliceHalf,
                                   new_pipe_pool)
from wiregate.ingress.runtime import Runtime
from wiregate.limits import NO_DESCRIPTORS, fit_warning, nofile, udp_flow_caps
from wiregate.proxyproto import encode_v1, encode_v2

log = logging.getLogger("wiregate.ingress")
CONNECT_TIMEOUT = 5.0
RECV = 65536
BACKLOG = 1024
ACCEPT_BATCH = 64  # accepts per wake-up, then the established connections run
# non-blocking from creation where the platform allows it (saves an ioctl per backend connection)
_STREAM_NONBLOCK = socket.SOCK_STREAM | getattr(socket, "SOCK_NONBLOCK", 0)


def build_tls_contexts(listener: Listener) -> dict[str, ssl.SSLContext]:
    """Server contexts for routes that terminate TLS; ConfigError naming the route when a file does not load."""
    out = {}
    for r in listener.routes:
        if r.tls_cert:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            try:
                ctx.load_cert_chain(r.tls_cert, r.tls_key)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"listener {listener.name!r} route {r.name!r}: cannot load tls_cert/tls_key: "
                                  f"{exc}") from None
            out[r.name] = ctx
    return out


def prepare(config: IngressConfig, acme=None) -> list[tuple[Listener, Rules, dict[str, ssl.SSLContext]]]:
    """Everything a config needs before it may run (raises ConfigError; nothing is changed). `acme`: the
    wiregate.acme.book.Book answering ACME challenges and holding ACME routes' certificates (None: no ACME)."""
    if acme is None:
        for lst in config.listeners:
            for r in lst.routes:
                if r.acme:
                    raise ConfigError(f"listener {lst.name!r} route {r.name!r}: acme routes get their certificate "
                                      "from `wiregate run` with the home file's [acme] table")
    http01, pending = (acme.http01, acme.http01_pending) if acme is not None else (None, None)
    return [(lst, Rules.from_listener(lst, http01, pending), build_tls_contexts(lst)) for lst in config.listeners]


class Ingress:
    """Listeners that take PROXY headers from trusted sources only, route, and pass the client address on."""

    def __init__(self, config: IngressConfig, acme=None) -> None:
        self.config = config
        self.acme = acme  # wiregate.acme.book.Book or None
        self._prepared = prepare(config, acme)
        self.runtimes: dict[tuple, Runtime] = {}
        self.detached: list[Runtime] = []  # listeners removed by a reload whose connections still run
        self.pipes = new_pipe_pool()
        self.loop: asyncio.AbstractEventLoop | None = None
        # where connection sockets are watched (head phase, connect, halves, UDP flows, task steps): the data path's
        # private epoll set on Linux, never the event loop itself (see wiregate.datapath.loop)
        self.io: Poller | asyncio.AbstractEventLoop | None = None
        # the C data path for routes whose bytes Python need not see (wiregate.datapath.pump), where built
        self.pump: cpump.Pump | None = None
        self._sweeper: asyncio.Task | None = None
        self.closing = False

    # -- lifecycle -------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind every listener; WiregateError naming the address when one cannot be bound (none stay bound)."""
        self.loop = asyncio.get_running_loop()
        self.io = Poller(self.loop) if HAVE_EPOLL else self.loop
        if isinstance(self.io, Poller) and cpump.wanted():
            self.pump = cpump.attach(self.loop, POOL_KEEP)
        rts = [Runtime(lst, rules, tls) for lst, rules, tls in self._prepared]
        try:
            await self._bind_all(rts)
        except BaseException:
            if self.pump is not None:
                cpump.detach(self.loop, self.pump)
                self.pump = None
            raise
        for rt in rts:
            self.runtimes[rt.key()] = rt
            self._serve(rt)
            if rt.listener.proxy_optional:
                log.warning("listener %s: proxy_optional is on: trusted sources %s may omit the PROXY header, so "
                            "any of them can pose as a client (Traefik's mode; the PROXY spec forbids guessing)",
                            rt.listener.name, ", ".join(rt.listener.trusted))
            log.info("listener %s: %s %s, trusted %s, routes %s", rt.listener.name, rt.listener.protocol,
                     fmt(rt.listener.listen), list(rt.listener.trusted) or "none",
                     [r.name for r in rt.listener.routes])
        self._fit_descriptors()
        log.info("ingress: %d listener(s), %s data path, %s event loop, %s pump", len(rts),
                 "splice" if HAVE_SPLICE else "copy", loop_name(self.loop), "c" if self.pump is not None else "python")
        self._sweeper = self.loop.create_task(self._sweep())

    def _fit_descriptors(self) -> None:
        """Hold UDP flows to what the descriptor limit leaves after the TCP listeners' max_connections (see
        wiregate.limits); warn once when the configured limits do not fit."""
        limit = nofile()[0]
        rts = list(self.runtimes.values())
        tcp = sum(rt.listener.max_connections for rt in rts if rt.udp is None)
        udp = [rt for rt in rts if rt.udp is not None]
        wanted = [rt.listener.max_flows for rt in udp]
        warning = fit_warning(limit, tcp, sum(wanted))
        if warning is not None:
            log.warning("ingress: %s", warning)
        for rt, cap in zip(udp, udp_flow_caps(limit, tcp, wanted), strict=True):  # one cap per UDP service
            rt.udp.cap = cap  # type: ignore[attr-defined]
            if cap < rt.listener.max_flows:
                log.warning("listener %s: at most %d UDP flows (max_flows %d does not fit the descriptor limit %d)",
                            rt.listener.name, cap, rt.listener.max_flows, limit)

    async def _bind_all(self, rts: list[Runtime]) -> None:
        done: list[Runtime] = []
        try:
            for rt in rts:
                rt.sock = self._bind(rt.listener)
                done.append(rt)
                if rt.listener.protocol == "tcp":
                    bound = unmap(rt.sock.getsockname())
                    rt.local = None if ipaddress.ip_address(bound[0]).is_unspecified else bound
        except WiregateError:
            for rt in done:
                rt.sock.close()  # type: ignore[union-attr]
                rt.sock = None
            raise

    def _bind(self, lst: Listener) -> socket.socket:
        host, port = lst.listen
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM if lst.protocol == "udp"
                                       else socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            fam, kind, _, _, addr = infos[0]
            s = socket.socket(fam, kind)
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if fam == socket.AF_INET6 and host in ("::", ""):
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                s.bind(addr)
                if lst.protocol == "tcp":
                    # accepted sockets inherit TCP_NODELAY from the listener (Linux, BSDs): no setsockopt per client
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    s.listen(BACKLOG)
                s.setblocking(False)
            except OSError:
                s.close()
                raise
        except OSError as exc:
            raise WiregateError(f"listener {lst.name!r}: cannot listen on {lst.protocol} {fmt(lst.listen)}: "
                                f"{exc.strerror or exc}") from None
        return s

    def _serve(self, rt: Runtime) -> None:
        assert self.loop is not None and rt.sock is not None
        if rt.listener.protocol == "udp":
            from wiregate.ingress.udp import UdpRuntime

            rt.udp = UdpRuntime(self.loop, rt, self.io if isinstance(self.io, Poller) else None)
            rt.udp.start()
        else:
            self._pin_interface(rt)
            if self.pump is not None and cpump.fast_wanted():
                rt.fast_owner = _FastOwner(self, rt, rt.sock.family)
                rt.fast = cpump.Fast(rt.fast_owner)
                self._configure_fast(rt)
            self.loop.add_reader(rt.sock.fileno(), self._on_accept, rt)

    def _configure_fast(self, rt: Runtime) -> None:
        """Let the pump route this listener's connections without Python when every one of them would go the same
        way: each trusted peer must send a PROXY header (not proxy_optional) and every connection goes to the
        default route (nothing to sniff), whose target is an IP address, whose bytes Python need not see (no TLS
        here, no internal_only) and whose own PROXY header is none or v2 (while an ACME HTTP-01 token is pending,
        `_on_accept_pump` leaves it aside so the CA's request is seen). With trusted_interface the pump checks
        where each trusted peer came in, as `_came_in_right` does (a peer that came in elsewhere is Python's to
        refuse and log). The pump takes only the common case inside that (a v2 PROXY header for TCP, no TLVs);
        Python gets everything else with the bytes read so far (`_FastOwner._pump_head`) and decides as always."""
        fast = rt.fast
        if fast is None:
            return
        lst, rules = rt.listener, rt.rules
        route = rules.router.default
        addr = _literal(route.target) if route is not None else None
        if (route is None or addr is None or rules.router.needs_sniff or lst.proxy_optional or not lst.trusted
                or rt.ifindex == frozenset() or route.name in rules.internal or route.tls_cert
                or route.acme or route.send_proxy not in ("none", "v2")
                or len(rules.trust.nets) > cpump.MAX_TRUSTED or len(rt.ifindex or ()) > cpump.MAX_INTERFACES):
            fast.enabled = False
            return
        family, target = addr
        fast.configure(
            [(socket.AF_INET if n.version == 4 else socket.AF_INET6, n.network_address.packed, n.prefixlen)
             for n in rules.trust.nets],
            family, target, route.send_proxy == "v2", lst.header_timeout, CONNECT_TIMEOUT, lst.max_header_bytes,
            lst.max_connections, rt.local is None, log.isEnabledFor(logging.INFO),
            None if rt.ifindex is None else sorted(rt.ifindex))

    def _pin_interface(self, rt: Runtime) -> None:
        """With trusted_interface, accepted sockets report where they came in (see ingress/udp.py)."""
        from wiregate.ingress.udp import enable_arrival_info

        names = rt.listener.trusted_interface
        if not names or rt.sock is None:
            rt.ifindex = None
            return
        index: set[int] = set()
        for name in (names,) if isinstance(names, str) else names:  # several gateways: one interface each
            try:
                index.add(socket.if_nametoindex(name))
            except OSError:  # nothing arrives on a missing interface: no peer is trusted on it until a reload
                log.warning("listener %s: trusted_interface %s does not exist: no source is trusted on it",
                            rt.listener.name, name)
        rt.ifindex = frozenset(index)
        enable_arrival_info(rt.sock)

    def _unserve(self, rt: Runtime) -> None:
        if rt.fd_timer is not None:
            rt.fd_timer.cancel()
            rt.fd_timer = None
        if rt.sock is None:
            return
        if rt.listener.protocol == "udp":
            rt.udp.stop_listening()  # type: ignore[attr-defined]
        else:
            self.loop.remove_reader(rt.sock.fileno())  # type: ignore[union-attr]
            rt.sock.close()
        rt.sock = None

    @property
    def addresses(self) -> dict[str, tuple[str, int]]:
        """Listener name -> the bound address (useful with port 0)."""
        return {rt.listener.name: unmap(rt.sock.getsockname()) for rt in self.runtimes.values() if rt.sock}

    async def reload(self, config: IngressConfig) -> None:
        """Switch to `config`: validated first (ConfigError keeps the old one); open connections are untouched."""
        prepared = prepare(config, self.acme)
        new_rts: dict[tuple, tuple[Runtime, Listener | None, Rules | None, dict[str, ssl.SSLContext] | None]] = {}
        to_bind = []
        for lst, rules, tls in prepared:
            key = (lst.protocol, *lst.listen)
            old = next((rt for rt in self.runtimes.values() if key in rt.keys()), None)
            if old is not None:
                key = old.key()
                new_rts[key] = (old, lst, rules, tls)
            else:
                rt = Runtime(lst, rules, tls)
                to_bind.append(rt)
                new_rts[key] = (rt, None, None, None)
        await self._bind_all(to_bind)  # fails before anything changed
        for key, rt in list(self.runtimes.items()):
            if key not in new_rts:
                self._unserve(rt)
                del self.runtimes[key]
                if rt.udp is not None:
                    rt.udp.close()  # type: ignore[attr-defined]  # datagram flows have nothing to drain
                    continue
                self.detached.append(rt)
                log.info("listener %s: removed (%d open connections continue)", rt.listener.name,
                         rt.connections())
        for key, (rt, new_lst, new_rules, new_tls) in new_rts.items():
            if new_lst is not None and new_rules is not None and new_tls is not None:  # a kept listener
                if rt.listener.listen != new_lst.listen:  # port 0 then its bound port: keep one key per socket
                    new_lst = replace(new_lst, listen=rt.listener.listen)
                rt.listener, rt.rules, rt.tls = new_lst, new_rules, new_tls
                if rt.udp is not None:
                    rt.udp.reconfigure()  # type: ignore[attr-defined]
                else:
                    self._pin_interface(rt)
                    self._configure_fast(rt)
            else:
                self._serve(rt)
                log.info("listener %s: added on %s %s", rt.listener.name, rt.listener.protocol,
                         fmt(rt.listener.listen))
            self.runtimes[key] = rt
        self.config = config
        self._fit_descriptors()
        log.info("ingress: configuration reloaded (%d listeners)", len(self.runtimes))

    async def close(self, drain_timeout: float | None = None) -> None:
        """Stop accepting; wait up to `drain_timeout` seconds (None: not at all) for open connections, then end them."""
        self.closing = True
        rts = list(self.runtimes.values()) + self.detached
        for rt in rts:
            self._unserve(rt)
        if drain_timeout:
            deadline = self.loop.time() + drain_timeout  # type: ignore[union-attr]
            while any(rt.connections() for rt in rts) and self.loop.time() < deadline:  # type: ignore[union-attr]
                await asyncio.sleep(0.05)
        for rt in rts:
            for pc in list(rt.pending):
                pc.cancel()
            for link in [*rt.links, *rt.fast_links()]:
                link.close()
            for t in list(rt.tasks):
                t.cancel()
            if rt.udp is not None:
                rt.udp.close()  # type: ignore[attr-defined]
        for rt in rts:
            if rt.tasks:
                await asyncio.gather(*rt.tasks, return_exceptions=True)
        if self._sweeper:
            self._sweeper.cancel()
        self.pipes.close()
        if isinstance(self.io, Poller) and not self.io.ep.closed:  # (close may be called twice)
            self.io.close()
        if self.pump is not None:
            cpump.detach(self.loop, self.pump)  # type: ignore[arg-type]
            self.pump = None
        self.runtimes.clear()
        self.detached.clear()

    def status(self) -> dict:
        """Per listener: address, routes, open connections, accepted count and refusals by reason."""
        out = {}
        for rt in list(self.runtimes.values()):
            lst = rt.listener
            out[lst.name] = {
                "listen": fmt(lst.listen), "protocol": lst.protocol, "trusted": list(lst.trusted),
                "proxy_optional": lst.proxy_optional,
                "routes": {r.name: {"target": fmt(r.target), "sni": list(r.sni), "host": list(r.host),
                                    "path_prefix": r.path_prefix, "send_proxy": r.send_proxy,
                                    "http_headers": r.http_headers, "tls": bool(r.tls_cert) or r.acme}
                           for r in lst.routes},
                "default_route": lst.default_route, "accepted": rt.routed(),
                # UDP: open flows (they are not connections: a drain does not wait for them)
                "open": rt.udp.open if rt.udp is not None else rt.connections(),  # type: ignore[attr-defined]
                "refused": dict(rt.refused), "health_checks": rt.health_checks,
                # the pump's fast route (docs/ingress.md): on for this config, and the connections it routed
                # (included in "accepted"); None without the C pump
                "fast_route": None if rt.fast is None else {"enabled": rt.fast.enabled, "accepted": rt.fast.accepted},
            }
        return out

    # -- connections -----------------------------------------------------------------------------------------------

    def _on_accept(self, rt: Runtime) -> None:
        lsock = rt.sock
        if self.pump is not None and lsock is not None:
            return self._on_accept_pump(rt, self.pump, lsock)
        for _ in range(ACCEPT_BATCH):  # a burst of accepts per wake-up, then let established connections run
            if lsock is None:
                return
            try:
                sock, addr = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in NO_DESCRIPTORS:
                    return self._out_of_descriptors(rt, exc)
                continue  # ECONNABORTED and friends: that client is gone, the next one may be fine
            if rt.backoff.delay:
                rt.backoff.succeeded()
            peer = unmap(addr)
            if rt.ifindex is not None and peer[0] in rt.rules.trust and not self._came_in_right(rt, sock, peer):
                continue
            if rt.open >= rt.listener.max_connections:
                rt.refused[LIMIT] += 1
                log.warning("listener %s: refused %s: %s: %d connections open (max_connections)",
                            rt.listener.name, fmt(peer), LIMIT, rt.open)
                sock.close()
                continue
            sock.setblocking(False)
            rt.open += 1
            try:
                self._head_now(rt, sock, peer)
            except Exception:  # a bug must cost this connection only
                log.exception("listener %s: connection from %s failed", rt.listener.name, fmt(peer))
                sock.close()
                self._connection_ended(rt)

    def _on_accept_pump(self, rt: Runtime, pump: cpump.Pump, lsock: socket.socket) -> None:
        """The same as the loop above, with the accepts and each client's first read done in C: a connection
        whose head decides at once and whose route the pump can serve never becomes a socket object."""
        fast, pending = rt.fast, rt.rules.http01_pending
        if fast is not None and pending is not None and pending():
            fast = None  # an ACME HTTP-01 token waits: this listener sniffs so the CA's request is seen (HeadPhase)
        try:
            batch = pump.accept(lsock.fileno(), ACCEPT_BATCH, rt.local is None, RECV, fast, rt.open)
        except OSError as exc:
            if exc.errno in NO_DESCRIPTORS:
                return self._out_of_descriptors(rt, exc)
            return
        if rt.backoff.delay and batch:
            rt.backoff.succeeded()
        family = lsock.family
        for fd, peer, local, first in batch:
            if self.closing:  # (an earlier connection's callback closed the ingress)
                os.close(fd)
                continue
            if rt.ifindex is not None and peer[0] in rt.rules.trust:
                sock = _wrap(family, fd)
                if not self._came_in_right(rt, sock, peer):
                    continue
                sock.detach()
            if rt.connections() >= rt.listener.max_connections:
                rt.refused[LIMIT] += 1
                log.warning("listener %s: refused %s: %s: %d connections open (max_connections)",
                            rt.listener.name, fmt(peer), LIMIT, rt.connections())
                os.close(fd)
                continue
            rt.open += 1
            self._head_first(rt, pump, family, fd, peer, local or rt.local or ("", 0), first)

    def _head_first(self, rt: Runtime, pump: cpump.Pump, family: int, fd: int, peer: tuple[str, int],
                    local: tuple[str, int], first: bytes | int | None, since: float | None = None,
                    end: int | None = None) -> None:
        """`_head_now` for a raw descriptor whose first read the pump did; a socket object is made only for what
        continues in Python (a head still coming, a refusal, a route that is not the pump's). From the fast
        route (`since`: when it accepted the client): `first` is what it read, and `end` how the client ended
        before its header was whole (None: it did not; 0: EOF; an errno; TIMED_OUT: header_timeout passed)."""
        sock: socket.socket | None = None
        try:
            now = self.loop.time()  # type: ignore[union-attr]
            phase = HeadPhase(rt.rules, peer, local, now if since is None else min(since, now))
            ev: Accepted | Refused | None = phase.start(now)
            if ev is None and first is not None:
                if isinstance(first, int):
                    ev = phase.receive_reset(os.strerror(first), now)
                elif since is None:
                    ev = phase.receive_eof(now) if not first else phase.receive_data(first, now)
                elif first:
                    ev = phase.receive_data(first, now)
            if ev is None and end is not None:
                if end == 0:
                    ev = phase.receive_eof(now)
                elif end > 0:
                    ev = phase.receive_reset(os.strerror(end), now)
                else:
                    ev = phase.handle_timer(max(now, phase.deadline))
            if isinstance(ev, Accepted):
                addr = _literal(ev.route.target)
                plan = self._pump_plan(rt, ev) if addr is not None else None
                if addr is not None and plan is not None:
                    fd, pumped = -1, fd  # handed on: _Pumped closes it on its own errors
                    return _Pumped(self, rt, ev).start_fd(pump, pumped, family, addr, *plan)
            sock = _wrap(family, fd)
            if ev is None:
                return _HeadWait(self, rt, sock, peer, phase).start()
            self._decided(rt, sock, peer, phase, ev)
        except Exception:  # a bug must cost this connection only
            log.exception("listener %s: connection from %s failed", rt.listener.name, fmt(peer))
            if sock is not None:
                sock.close()
            elif fd >= 0:
                os.close(fd)
            self._connection_ended(rt)

    def _pump_plan(self, rt: Runtime, ev: Accepted, closing_http: bool = True) -> tuple[bytes, bool] | None:
        """How the C pump can carry a routed connection: (the bytes it sends after the PROXY header, whether the
        client's later bytes are dropped); None when Python must see the bytes (`_decided` then runs a task):
        TLS terminated here or any TLS while ACME may answer, `internal_only`, and HTTP with forwarding headers
        except one case. That case: the connection's one request is whole in hand and closes the connection
        (`Connection: close`, or HTTP/1.0 without keep-alive), so its rewritten head is all the backend may get;
        bytes the client sends after it are dropped (a server answering a closing request ignores them too, and
        an unrewritten pipelined head must not reach it). `closing_http=False` (no pump: `_FastConnect` cannot
        drop bytes) leaves that case to the task too, without building its forwarder here."""
        route = ev.route
        if route.name in rt.rules.internal or (ev.kind == "tls" and (
                route.name in rt.tls or route.acme or self.acme is not None)):
            return None
        if not (route.http_headers and ev.kind == "http"):
            return ev.data, False
        req = ev.request
        if not closing_http or req is None or req.keep_alive or req.upgrade:
            return None
        fwd = HttpForwarder(ev.client, "http", ev.client_trusted, accepts=_same_route(rt, route),
                            max_head=rt.listener.max_sniff_bytes)
        fed = fwd.feed(ev.data)
        if fed.refuse is not None or fwd.requests != 1 or not fwd.between_messages:
            return None
        return fed.to_backend, True

    def _spawn(self, rt: Runtime, coro) -> None:
        task = self.loop.create_task(coro)  # type: ignore[union-attr]
        rt.tasks.add(task)
        task.add_done_callback(rt.tasks.discard)

    def _head_now(self, rt: Runtime, sock: socket.socket, peer: tuple[str, int]) -> None:
        """Without a task: the head phase reads as bytes come (`_HeadWait` when they are not there yet), and a plain
        route to an address is connected by callbacks (`_FastConnect`). A name to resolve, TLS termination or HTTP
        rewriting continue in a task (`_handle`), from the same HeadPhase and decision."""
        loop = self.loop
        assert loop is not None
        now = loop.time()
        phase = HeadPhase(rt.rules, peer, rt.local or unmap(sock.getsockname()), now)
        ev: Accepted | Refused | None = phase.start(now)
        if ev is None:
            try:
                data = sock.recv(RECV)
            except BlockingIOError:
                data = None
            except OSError as exc:
                ev = phase.receive_reset(exc.strerror or str(exc), now)
            else:
                ev = phase.receive_eof(now) if not data else phase.receive_data(data, now)
            if ev is None:
                return _HeadWait(self, rt, sock, peer, phase).start()
        self._decided(rt, sock, peer, phase, ev)

    def _decided(self, rt: Runtime, sock: socket.socket, peer: tuple[str, int], phase: HeadPhase,
                 ev: Accepted | Refused) -> None:
        if isinstance(ev, Refused):
            self._refuse(rt, sock, peer, ev, phase)
            sock.close()
            self._connection_ended(rt)
            return
        route = ev.route
        addr = _literal(route.target)
        # the task path for what needs more than a connect: a name to resolve, TLS terminated here (files or
        # ACME), any TLS while ACME may have to answer a TLS-ALPN-01 validation, HTTP rewriting, and the
        # internal_only admission (decided there after the ACME answer: the CA validates from outside)
        pump = self.pump
        plan = self._pump_plan(rt, ev, closing_http=pump is not None) if addr is not None else None
        if addr is not None and plan is not None:
            if pump is not None:
                return _Pumped(self, rt, ev).start(pump, sock, addr, *plan)
            return _FastConnect(self, rt, sock, ev, addr).start()
        self._spawn(rt, self._handle(rt, sock, peer, phase, ev))

    def _came_in_right(self, rt: Runtime, sock: socket.socket, peer: tuple[str, int]) -> bool:
        """A trusted address must have come in on trusted_interface: elsewhere it is spoofed (or misrouted)."""
        from wiregate.ingress.udp import tcp_arrival_ifindex

        came_in = tcp_arrival_ifindex(sock)
        if rt.ifindex is not None and came_in in rt.ifindex:
            return True
        rt.refused["wrong_interface"] += 1
        now = self.loop.time()  # type: ignore[union-attr]
        if now - rt.wrong_if_logged >= 1.0:  # a flood must not flood the log
            rt.wrong_if_logged = now
            log.warning("listener %s: refused %s: wrong_interface: a trusted address arrived on interface %s, not %s "
                        "(%d so far)", rt.listener.name, fmt(peer), came_in, rt.listener.trusted_interface,
                        rt.refused["wrong_interface"])
        sock.close()
        return False

    def _out_of_descriptors(self, rt: Runtime, exc: OSError) -> None:
        """accept() failed for lack of descriptors. The client stays in the backlog, so the listener would be
        readable again at once (100% CPU and a log line per attempt): stop watching it for a growing back-off,
        log once per interval with counts, and resume at the deadline or as soon as a connection ends."""
        assert self.loop is not None and rt.sock is not None
        now = self.loop.time()
        delay = rt.backoff.failed(now, errno.errorcode.get(exc.errno or 0, str(exc)))
        line = rt.backoff.take_log(now)
        if line is not None:
            log.error("listener %s: accept: %s", rt.listener.name, line)
        if rt.fd_timer is None:
            self.loop.remove_reader(rt.sock.fileno())
            rt.fd_timer = self.loop.call_later(delay, self._resume_accept, rt)

    def _resume_accept(self, rt: Runtime) -> None:
        if rt.fd_timer is not None:
            rt.fd_timer.cancel()
            rt.fd_timer = None
            if rt.sock is not None and not self.closing:
                self.loop.add_reader(rt.sock.fileno(), self._on_accept, rt)  # type: ignore[union-attr]

    def _connection_ended(self, rt: Runtime) -> None:
        rt.open -= 1
        if rt.fd_timer is not None:  # paused for lack of descriptors: this connection just freed some
            self._resume_accept(rt)

    async def _handle(self, rt: Runtime, sock: socket.socket, peer: tuple[str, int], phase: HeadPhase | None = None,
                      ev: Accepted | Refused | None = None) -> None:
        loop = self.loop
        assert loop is not None
        handed_off = False
        try:
            if phase is None:
                phase = HeadPhase(rt.rules, peer, rt.local or unmap(sock.getsockname()), loop.time())
                ev = phase.start(loop.time())
            while ev is None:
                try:
                    try:  # the header usually came with the connection: no timer, no future, when it did
                        data = sock.recv(RECV)
                    except BlockingIOError:
                        async with asyncio.timeout_at(phase.deadline):
                            data = await waits.recv(self.io, sock, RECV)  # type: ignore[arg-type]
                except TimeoutError:
                    ev = phase.handle_timer(max(loop.time(), phase.deadline))
                    continue
                except OSError as exc:
                    ev = phase.receive_reset(exc.strerror or str(exc), loop.time())
                    break
                now = loop.time()
                ev = phase.receive_eof(now) if not data else phase.receive_data(data, now)
            if isinstance(ev, Refused):
                self._refuse(rt, sock, peer, ev, phase)
                return
            handed_off = await self._connect(rt, sock, ev)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug must cost this connection only
            log.exception("listener %s: connection from %s failed", rt.listener.name, fmt(peer))
        finally:
            if not handed_off:
                sock.close()
                self._connection_ended(rt)

    def _refuse(self, rt: Runtime, sock: socket.socket, peer: tuple[str, int], ev: Refused,
                phase: HeadPhase) -> None:
        if ev.reason == HEALTH_CHECK:  # valid per the PROXY spec; every 2 s from the gateway: counted, not logged
            rt.health_checks += 1
            return
        if ev.reason == ACME_HTTP01:  # answered, not refused
            rt.refused[ev.reason] += 1
            log.info("listener %s: %s: %s", rt.listener.name, fmt(phase._client), ev.detail)
            try:
                sock.send(ev.reply)
            except OSError:
                pass
            return
        rt.refused[ev.reason] += 1
        client = "" if phase._client == peer else f" (client {fmt(phase._client)})"
        log.warning("listener %s: refused %s%s: %s: %s", rt.listener.name, fmt(peer), client, ev.reason, ev.detail)
        if ev.reply:
            try:
                sock.send(ev.reply)  # small: fits the empty send buffer of a fresh socket
            except OSError:
                pass

    async def _connect(self, rt: Runtime, sock: socket.socket, ev: Accepted) -> bool:
        """Connect the route's target and start moving bytes; True when the link owns the sockets."""
        loop = self.loop
        assert loop is not None
        route = ev.route
        if self.acme is not None and ev.kind == "tls" and ev.hello is not None:
            from wiregate.ingress.tls import acme_decision

            if await acme_decision(self.io, sock, ev, rt, self.acme):  # type: ignore[arg-type]
                return False  # a TLS-ALPN-01 validation answered, or an ACME route without a certificate yet
        no = rt.rules.admit(ev)  # after the ACME answer: the CA validates internal_only names from outside
        if no is not None:
            rt.refused[no.reason] += 1
            log.warning("listener %s: refused client %s: %s: %s", rt.listener.name, fmt(ev.client), no.reason,
                        no.detail)
            if no.reply:
                try:
                    sock.send(no.reply)
                except OSError:
                    pass
            return False
        if log.isEnabledFor(logging.INFO):  # the real client of every connection (formatting skipped when off)
            _log_routed(rt, ev)
        try:
            fam, addr = await _resolve(loop, route.target)
            back = socket.socket(fam, _STREAM_NONBLOCK)
            if not _STREAM_NONBLOCK & getattr(socket, "SOCK_NONBLOCK", 0):
                back.setblocking(False)
            back.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                await waits.connect(self.io, back, addr, CONNECT_TIMEOUT)  # type: ignore[arg-type]
            except BaseException:
                back.close()
                raise
        except (OSError, TimeoutError) as exc:
            rt.refused["backend_unreachable"] += 1
            log.warning("listener %s: client %s: route %s target %s unreachable: %s", rt.listener.name,
                        fmt(ev.client), route.name, fmt(route.target), getattr(exc, "strerror", None) or "timeout")
            if ev.kind == "http":
                try:
                    sock.send(http_error(502, "Bad Gateway", "service unavailable"))
                except OSError:
                    pass
            return False
        prefix = proxy_header(route, ev)
        tls_ctx = self.acme.context(f"{rt.listener.name}/{route.name}") if route.acme and self.acme is not None \
            else rt.tls.get(route.name)
        if tls_ctx is not None and ev.kind == "tls":
            rt.accepted += 1
            try:
                from wiregate.ingress.tls import terminate

                await terminate(self.io, sock, back, tls_ctx, ev, prefix, rt)  # type: ignore[arg-type]
            finally:
                back.close()
            return False
        fwd = None
        if route.http_headers and ev.kind == "http":
            fwd = HttpForwarder(ev.client, "http", ev.client_trusted, accepts=_same_route(rt, route),
                                max_head=rt.listener.max_sniff_bytes)
            fed = fwd.feed(ev.data)
            first, reply = fed.to_backend, fed.refuse
        else:
            first, reply = ev.data, None
        try:
            first_send = prefix + first
            sent = back.send(first_send) if first_send else 0  # a fresh socket's buffer takes a header and a request
            if sent < len(first_send):
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    await waits.sendall(self.io, back, first_send[sent:])  # type: ignore[arg-type]
        except (OSError, TimeoutError):
            back.close()
            return False
        if reply is not None:
            rt.refused[reply[0]] += 1
            log.warning("listener %s: client %s: refused request %d: %s: %s", rt.listener.name, fmt(ev.client),
                        fwd.requests + 1 if fwd is not None else 1, reply[0], reply[1])
            back.close()
            try:
                sock.send(reply[2])
            except OSError:
                pass
            return False
        rt.accepted += 1
        io = self.io
        assert io is not None
        link = Link(io, sock, back, lambda lk: self._link_closed(rt, lk))
        rt.links.add(link)
        up: CopyHalf | SpliceHalf
        down: CopyHalf | SpliceHalf
        if fwd is not None:
            up = pausing = PausingHalf(link, sock, back, _transform(rt, fwd), lambda: fwd.waiting)
        else:
            up = (SpliceHalf(link, io, sock, back, self.pipes)
                  if HAVE_SPLICE else CopyHalf(link, sock, back))
        if fwd is not None and fwd.watching:  # the first request asked for an Upgrade: its answer is read
            down = AnswerHalf(link, back, sock, _watch(rt, fwd, pausing), pausing)
        else:
            down = (SpliceHalf(link, io, back, sock, self.pipes)
                    if HAVE_SPLICE else CopyHalf(link, back, sock))
        link.start(up, down)
        return True

    async def _send_rest(self, rt: Runtime, sock: socket.socket, back: socket.socket, rest: bytes) -> None:
        """The end of a first send the backend's buffer did not take at once (`_FastConnect`), then the link."""
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await waits.sendall(self.io, back, rest)  # type: ignore[arg-type]
        except (OSError, TimeoutError):
            back.close()
            sock.close()
            self._connection_ended(rt)
            return
        except BaseException:
            back.close()
            sock.close()
            self._connection_ended(rt)
            raise
        rt.accepted += 1
        io = self.io
        assert io is not None
        link = Link(io, sock, back, lambda lk: self._link_closed(rt, lk))
        rt.links.add(link)
        if HAVE_SPLICE:
            link.start(SpliceHalf(link, io, sock, back, self.pipes),
                       SpliceHalf(link, io, back, sock, self.pipes))
        else:
            link.start(CopyHalf(link, sock, back), CopyHalf(link, back, sock))

    def _link_closed(self, rt: Runtime, link: Link) -> None:
        rt.links.discard(link)
        self._connection_ended(rt)

    async def _sweep(self) -> None:
        """Close connections idle for longer than their listener's idle_timeout (checked in quarters)."""
        while True:
            period = min([rt.listener.idle_timeout for rt in self.runtimes.values()] + [60.0]) / 4
            await asyncio.sleep(period)
            for rt in list(self.runtimes.values()) + self.detached:
                ticks = max(1, round(rt.listener.idle_timeout / period))
                for link in [*rt.links, *(f for f in rt.fast_links() if not f.head)]:  # (a head has its timeout)
                    if link.active:
                        link.active, link.idle_ticks = False, 0
                    else:
                        link.idle_ticks += 1
                        if link.idle_ticks >= ticks:
                            rt.refused["idle_timeout"] += 1
                            link.close()
            self.detached = [rt for rt in self.detached if rt.connections()]


@functools.lru_cache(maxsize=1024)  # targets come from the config: parsed once, not per connection (~10 us)
def _literal(target: tuple[str, int]) -> tuple[int, tuple] | None:
    """(family, sockaddr) when the target host is an IP address, else None (a name: resolved in a task)."""
    try:
        ip = ipaddress.ip_address(target[0])
    except ValueError:
        return None
    return (socket.AF_INET6 if ip.version == 6 else socket.AF_INET), (target[0], target[1])


class _HeadWait:
    """The head phase when its bytes are not there yet: a read watch on the client socket and one timer at the
    phase's deadline (moved when the phase moves it: header, then sniffing), instead of a task and a future per
    read. Same HeadPhase calls as `Ingress._handle`."""

    __slots__ = ("ing", "rt", "sock", "peer", "phase", "fd", "timer", "when")

    def __init__(self, ing: Ingress, rt: Runtime, sock: socket.socket, peer: tuple[str, int],
                 phase: HeadPhase) -> None:
        self.ing, self.rt, self.sock, self.peer, self.phase = ing, rt, sock, peer, phase
        self.fd = sock.fileno()
        self.timer: asyncio.TimerHandle | None = None
        self.when = 0.0

    def start(self) -> None:
        self.rt.pending.add(self)
        self.ing.io.add_reader(self.fd, self._on_readable)  # type: ignore[union-attr]
        self._arm()

    def _arm(self) -> None:
        deadline = self.phase.deadline
        if self.timer is not None:
            if deadline == self.when:
                return
            self.timer.cancel()
        self.when = deadline
        self.timer = self.ing.loop.call_at(deadline, self._on_timer)  # type: ignore[union-attr]

    def _stop(self) -> None:
        self.rt.pending.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.ing.io.remove_reader(self.fd)  # type: ignore[union-attr]

    def cancel(self) -> None:
        """The ingress is closing: drop this connection before its head was read."""
        self._stop()
        self.sock.close()
        self.ing._connection_ended(self.rt)

    def _on_readable(self) -> None:
        phase = self.phase
        try:
            now = self.ing.loop.time()  # type: ignore[union-attr]
            ev: Accepted | Refused | None
            try:
                data = self.sock.recv(RECV)
            except BlockingIOError:
                return
            except OSError as exc:
                ev = phase.receive_reset(exc.strerror or str(exc), now)
            else:
                ev = phase.receive_eof(now) if not data else phase.receive_data(data, now)
            if ev is None:
                return self._arm()
        except Exception:
            return self._bug()
        self._decide(ev)

    def _on_timer(self) -> None:
        self.timer = None
        phase = self.phase
        try:
            ev = phase.handle_timer(max(self.ing.loop.time(), phase.deadline))  # type: ignore[union-attr]
            if ev is None:
                return self._arm()
        except Exception:
            return self._bug()
        self._decide(ev)

    def _decide(self, ev: Accepted | Refused) -> None:
        self._stop()
        try:
            self.ing._decided(self.rt, self.sock, self.peer, self.phase, ev)
        except Exception:  # a bug must cost this connection only
            log.exception("listener %s: connection from %s failed", self.rt.listener.name, fmt(self.peer))
            self.sock.close()
            self.ing._connection_ended(self.rt)

    def _bug(self) -> None:
        """A bug must cost this connection only (and not leave its socket watched)."""
        log.exception("listener %s: connection from %s failed", self.rt.listener.name, fmt(self.peer))
        self.cancel()


class _FastConnect:
    """Connect a routed connection's target by callbacks (no task, no future): the watch for the connect becomes
    the backend half's read watch with one epoll_ctl. Same outcomes as `Ingress._connect` for a route that neither
    terminates TLS nor rewrites HTTP: 502 to an HTTP client when the target is unreachable, else the link."""

    __slots__ = ("ing", "rt", "sock", "ev", "addr", "back", "timer", "link")

    def __init__(self, ing: Ingress, rt: Runtime, sock: socket.socket, ev: Accepted, addr: tuple[int, tuple]) -> None:
        self.ing, self.rt, self.sock, self.ev, self.addr = ing, rt, sock, ev, addr
        self.back: socket.socket | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.link: Link | None = None

    def start(self) -> None:
        try:
            self._start()
        except Exception:  # a bug must cost this connection only
            log.exception("listener %s: connection from %s failed", self.rt.listener.name, fmt(self.ev.peer))
            self._abort()

    def _start(self) -> None:
        ev, rt = self.ev, self.rt
        if log.isEnabledFor(logging.INFO):  # the real client of every connection (formatting skipped when off)
            _log_routed(rt, ev)
        fam, addr = self.addr
        try:
            back = socket.socket(fam, _STREAM_NONBLOCK)
        except OSError as exc:
            return self._unreachable(exc.strerror or str(exc))
        self.back = back
        try:
            if not _STREAM_NONBLOCK & getattr(socket, "SOCK_NONBLOCK", 0):
                back.setblocking(False)
            back.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            err = back.connect_ex(addr)
        except OSError as exc:
            return self._unreachable(exc.strerror or str(exc))
        if err == 0:
            return self._connected(False)
        if err not in (errno.EINPROGRESS, errno.EAGAIN):
            return self._unreachable(os.strerror(err))
        self.ing.io.add_writer(back.fileno(), self._on_connect)  # type: ignore[union-attr]
        self.timer = self.ing.loop.call_later(CONNECT_TIMEOUT, self._on_timeout)  # type: ignore[union-attr]
        rt.pending.add(self)

    def _stop_watching(self) -> None:
        self.rt.pending.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.back is not None:
            self.ing.io.remove_writer(self.back.fileno())  # type: ignore[union-attr]

    def cancel(self) -> None:
        """The ingress is closing: drop this connection before the target answered."""
        self._stop_watching()
        if self.back is not None:
            self.back.close()
            self.back = None
        self.sock.close()
        self.ing._connection_ended(self.rt)

    def _on_connect(self) -> None:
        try:
            self._on_connect_inner()
        except Exception:  # a bug must cost this connection only (and not leave a socket watched: it would spin)
            log.exception("listener %s: connection from %s failed", self.rt.listener.name, fmt(self.ev.peer))
            self._abort()

    def _abort(self) -> None:
        self.rt.pending.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.link is not None:
            return self.link.close()
        io = self.ing.io
        for s in (self.back, self.sock):
            if s is not None and s.fileno() >= 0:
                if isinstance(io, Poller):
                    io.forget(s.fileno())
                else:
                    io.remove_reader(s.fileno())  # type: ignore[union-attr]
                    io.remove_writer(s.fileno())  # type: ignore[union-attr]
                s.close()
        self.back = None
        self.ing._connection_ended(self.rt)

    def _on_connect_inner(self) -> None:
        back = self.back
        assert back is not None
        self.rt.pending.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        try:
            err = back.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        except OSError as exc:
            err = exc.errno or errno.EIO
        if err:
            self.ing.io.remove_writer(back.fileno())  # type: ignore[union-attr]
            return self._unreachable(os.strerror(err))
        self._connected(True)

    def _on_timeout(self) -> None:
        self.timer = None
        self._stop_watching()
        self._unreachable("timeout")

    def _unreachable(self, why: str) -> None:
        if self.back is not None:
            self.back.close()
            self.back = None
        _unreachable(self.ing, self.rt, self.ev, self.sock, why)

    def _connected(self, watched: bool) -> None:
        """The target answered: send the PROXY header and the bytes read so far, then start both halves."""
        ing, rt, sock, ev = self.ing, self.rt, self.sock, self.ev
        back = self.back
        assert back is not None and ing.io is not None
        io = ing.io
        out = proxy_header(ev.route, ev) + ev.data
        try:
            sent = back.send(out) if out else 0  # a fresh socket's send buffer takes a header and a first read
        except OSError:
            sent = -1
        if sent < len(out):
            if watched:
                io.remove_writer(back.fileno())
            if sent < 0:
                back.close()
                sock.close()
                return ing._connection_ended(rt)
            # rare (a first read larger than the send buffer): finish the send in a task, then the same link
            return ing._spawn(rt, ing._send_rest(rt, sock, back, out[sent:]))
        rt.accepted += 1
        link = self.link = Link(io, sock, back, lambda lk: ing._link_closed(rt, lk))
        rt.links.add(link)
        if HAVE_SPLICE:
            up: CopyHalf | SpliceHalf = SpliceHalf(link, io, sock, back, ing.pipes)
            down: CopyHalf | SpliceHalf = SpliceHalf(link, io, back, sock, ing.pipes)
        else:
            up, down = CopyHalf(link, sock, back), CopyHalf(link, back, sock)
        if watched and isinstance(io, Poller):
            link.halves = [up, down]
            up.start()
            down.reading = True
            io.set_reader_only(down.sfd, down.on_readable)  # the connect's write watch becomes this read watch
        else:
            if watched:
                io.remove_writer(back.fileno())
            link.start(up, down)


class _FastOwner:
    """What the pump's fast route of one listener tells Python (see `Ingress._configure_fast`): a client it hands
    over, a target that did not answer, and (with INFO logging) each routed client."""

    __slots__ = ("ing", "rt", "family", "__weakref__")

    def __init__(self, ing: Ingress, rt: Runtime, family: int) -> None:
        self.ing, self.rt, self.family = ing, rt, family

    def _pump_head(self, fd: int, peer: tuple[str, int], local: tuple[str, int] | None, data: bytes,
                   end: int | None, since: float) -> None:
        ing, rt = self.ing, self.rt
        if ing.closing or ing.pump is None:
            os.close(fd)
            return
        rt.open += 1
        ing._head_first(rt, ing.pump, self.family, fd, peer, local or rt.local or ("", 0), data, since, end)

    def _pump_unreachable(self, client: tuple[str, int], peer: tuple[str, int], err: int) -> None:
        route = self.rt.rules.router.default
        why = "timeout" if err == cpump.TIMED_OUT else os.strerror(err)
        if route is None:  # a reload removed the default route while this connection was connecting
            self.rt.refused["backend_unreachable"] += 1
            log.warning("listener %s: client %s: target unreachable: %s", self.rt.listener.name, fmt(client), why)
        else:
            _count_unreachable(self.rt, client, route, why)

    def _pump_routed(self, client: tuple[str, int], peer: tuple[str, int]) -> None:
        route = self.rt.rules.router.default
        if route is not None:
            _routed_line(self.rt, client, peer, route, "unsniffed")


class _Pumped:
    """A routed connection on the C pump (`wiregate.datapath.pump`): the same outcomes as `_FastConnect` (502 to
    an HTTP client when the target is unreachable, else the link), with the connect, the first send and both
    directions in C. The pump's Link sits in `rt.links` from the connect on (the idle sweep and close() treat
    it as any link); this object is its owner."""

    __slots__ = ("ing", "rt", "ev", "fd", "family", "link")

    def __init__(self, ing: Ingress, rt: Runtime, ev: Accepted) -> None:
        self.ing, self.rt, self.ev = ing, rt, ev
        self.fd = -1
        self.family: int = socket.AF_INET
        self.link: cpump.Link | None = None

    def start(self, pump: cpump.Pump, sock: socket.socket, addr: tuple[int, tuple], first: bytes,
              sink: bool) -> None:
        """Connect for a client socket object (it is detached: the descriptor is the pump's from here)."""
        self.start_fd(pump, sock.detach(), sock.family, addr, first, sink)

    def start_fd(self, pump: cpump.Pump, fd: int, family: int, addr: tuple[int, tuple], first: bytes,
                 sink: bool) -> None:
        """Connect for a client descriptor: the pump's once the connect succeeds (given back if it fails). The
        pump sends the PROXY header and `first`; `sink`: the client's later bytes are dropped."""
        ev, rt = self.ev, self.rt
        if log.isEnabledFor(logging.INFO):  # the real client of every connection (formatting skipped when off)
            _log_routed(rt, ev)
        fam, target = addr
        self.fd, self.family = fd, family
        try:
            link = pump.connect(fd, fam, target, proxy_header(ev.route, ev) + first, CONNECT_TIMEOUT, self,
                                sink_client=sink)
        except OSError as exc:
            return _unreachable(self.ing, rt, ev, _wrap(family, fd), exc.strerror or str(exc))
        except Exception:  # a bug must cost this connection only
            log.exception("listener %s: connection from %s failed", rt.listener.name, fmt(ev.peer))
            os.close(fd)
            return self.ing._connection_ended(rt)
        self.link = link
        rt.links.add(link)
        if link.connected:
            rt.accepted += 1
            link.start()

    def _pump_connected(self, err: int) -> None:
        if err == 0:
            self.rt.accepted += 1
            return
        if self.link is not None:
            self.rt.links.discard(self.link)
        self.link = None
        sock = _wrap(self.family, self.fd)
        _unreachable(self.ing, self.rt, self.ev, sock, "timeout" if err == cpump.TIMED_OUT else os.strerror(err))

    def _pump_closed(self) -> None:
        if self.link is not None:
            self.rt.links.discard(self.link)
            self.link = None
        self.ing._connection_ended(self.rt)



def _wrap(family: int, fd: int) -> socket.socket:
    """A non-blocking socket object for a TCP descriptor the pump accepted."""
    sock = socket.socket(family, socket.SOCK_STREAM, 0, fd)
    sock.setblocking(False)
    return sock


def _log_routed(rt: Runtime, ev: Accepted) -> None:
    """The INFO line naming the real client of a routed connection (either data path)."""
    _routed_line(rt, ev.client, ev.peer, ev.route, f"{ev.kind} {ev.name}" if ev.name else ev.kind)


def _routed_line(rt: Runtime, client: tuple[str, int], peer: tuple[str, int], route: Route, how: str) -> None:
    via = f" via {fmt(peer)}" if client != peer else ""
    log.info("listener %s: client %s%s -> route %s (%s) %s", rt.listener.name, fmt(client), via, route.name, how,
             fmt(route.target))


def _count_unreachable(rt: Runtime, client: tuple[str, int], route: Route, why: str) -> None:
    """Count and log a route's target that did not answer (every data path, the fast route's too)."""
    rt.refused["backend_unreachable"] += 1
    log.warning("listener %s: client %s: route %s target %s unreachable: %s", rt.listener.name, fmt(client),
                route.name, fmt(route.target), why)


def _unreachable(ing: Ingress, rt: Runtime, ev: Accepted, sock: socket.socket, why: str) -> None:
    """The route's target did not answer: count and log it, a 502 to an HTTP client, close (either data path)."""
    _count_unreachable(rt, ev.client, ev.route, why)
    if ev.kind == "http":
        try:
            sock.send(http_error(502, "Bad Gateway", "service unavailable"))
        except OSError:
            pass
    sock.close()
    ing._connection_ended(rt)


async def _resolve(loop: asyncio.AbstractEventLoop, target: tuple[str, int]) -> tuple[int, tuple]:
    """(family, sockaddr) for a target; IP literals without getaddrinfo (which runs in a thread: ~100 us)."""
    host, port = target
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return infos[0][0], infos[0][4]
    return (socket.AF_INET6, (host, port)) if ip.version == 6 else (socket.AF_INET, (host, port))


def proxy_header(route: Route, ev: Accepted) -> bytes:
    """The PROXY header the route sends its target, naming the real client and the address it reached."""
    if route.send_proxy == "v1":
        return encode_v1(ev.client, ev.destination)
    if route.send_proxy == "v2":
        return encode_v2(ev.client, ev.destination)
    return b""


def _same_route(rt: Runtime, route: Route):
    """A later request on a keep-alive connection goes on to the connection's service when the router (as of now:
    a reload may have swapped the rules) sends its Host to the same route name and target. Comparing whole Route
    values would send 421 after any reload that edits the route (a host added), which the soak found."""
    key = (route.name, route.target)

    def accepts(head) -> bool:
        now = rt.rules.router.for_http(head.host, head.path)
        return now is not None and (now.name, now.target) == key

    return accepts


def _watch(rt: Runtime, fwd: HttpForwarder, up: PausingHalf):
    """The backend -> client transform while an Upgrade's answer is pending: bytes pass unchanged; the answer
    decides (tunnel or more requests) and lets the client half read again; a non-HTTP answer closes."""

    def t(data: bytes) -> tuple[bytes, bytes | None]:
        bad = fwd.feed_response(data)
        if bad is not None:
            rt.refused["bad_response"] += 1
            log.warning("listener %s: client %s: backend answer refused: %s", rt.listener.name, fmt(fwd.client), bad)
            return b"", b""
        if up.paused and not fwd.waiting:
            up.resume()
        return data, None

    return t


def _transform(rt: Runtime, fwd: HttpForwarder | None):
    if fwd is None:
        return None

    def t(data: bytes) -> tuple[bytes, bytes | None]:
        out = fwd.feed(data)
        if out.refuse is not None:
            rt.refused[out.refuse[0]] += 1
            log.warning("listener %s: client %s: refused request %d: %s: %s", rt.listener.name, fmt(fwd.client),
                        fwd.requests + 1, out.refuse[0], out.refuse[1])
            return out.to_backend, out.refuse[2]
        return out.to_backend, None

    return t

"""UDP listeners route by port: every datagram goes to the listener's default route.

Trust works per datagram, as the PROXY spec has every datagram carry its own header: datagrams from a trusted
source must start with a v2 header (protocol DGRAM) naming the client; any other source must send none. Each
(source, client) pair is a flow with its own connected socket toward the target, so replies find their way back
(sent from the listener to the source, without a header). Flows end after idle_timeout.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING

from wiregate.proxyproto import Protocol, ProxyError, decode, detect, encode_v2

if TYPE_CHECKING:
    from wiregate.ingress.server import Ingress, Runtime

log = logging.getLogger("wiregate.ingress")
MAX_DATAGRAM = 65535
BATCH = 64
LOG_EVERY = 1.0  # at most one refusal line per second per listener: a datagram flood must not flood the log


class Flow:
    __slots__ = ("key", "source", "client", "sock", "header", "last")

    def __init__(self, key, source, client, sock, header, now) -> None:
        self.key, self.source, self.client, self.sock, self.header, self.last = key, source, client, sock, header, now


class UdpRuntime:
    """The datagram side of one UDP listener."""

    def __init__(self, ingress: Ingress, rt: Runtime) -> None:
        self.ingress, self.rt = ingress, rt
        self.loop: asyncio.AbstractEventLoop = ingress.loop  # type: ignore[assignment]
        self.sock = rt.sock
        self.local = self.sock.getsockname()[:2]  # type: ignore[union-attr]
        self.flows: dict[tuple, Flow] = {}
        self.last_log = 0.0
        self.sweeper: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self.loop.add_reader(self.sock.fileno(), self.readable)  # type: ignore[union-attr]
        self._schedule()

    def _schedule(self) -> None:
        self.sweeper = self.loop.call_later(self.rt.listener.idle_timeout / 4, self.sweep)

    def reconfigure(self) -> None:
        """A reload changed the listener: flows to a target that changed are dropped (they reconnect)."""
        route = self.rt.rules.router.default
        for f in list(self.flows.values()):
            if route is None or f.sock.getpeername()[:2] != route.target:
                self._end(f)

    def stop_listening(self) -> None:
        self.loop.remove_reader(self.sock.fileno())  # type: ignore[union-attr]

    def close(self) -> None:
        for f in list(self.flows.values()):
            self._end(f)
        if self.sweeper:
            self.sweeper.cancel()
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _refuse(self, reason: str, detail: str) -> None:
        self.rt.refused[reason] += 1
        now = self.loop.time()
        if now - self.last_log >= LOG_EVERY:
            self.last_log = now
            log.warning("listener %s: dropped datagram: %s: %s (%d %s so far)", self.rt.listener.name, reason,
                        detail, self.rt.refused[reason], reason)

    def readable(self) -> None:
        rt = self.rt
        lst = rt.listener
        for _ in range(BATCH):
            try:
                data, addr = self.sock.recvfrom(MAX_DATAGRAM)  # type: ignore[union-attr]
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            source = (addr[0][7:] if addr[0].startswith("::ffff:") else addr[0], addr[1])
            client = source
            dest = self.local
            payload = data
            kind = detect(data[:16])
            if source[0] in rt.rules.trust:
                try:
                    header, payload = decode(data, max_v2_length=lst.max_header_bytes, allow_v1=False)
                except ProxyError as exc:
                    reason = "missing_header" if kind == "none" else "bad_header"
                    self._refuse(reason, f"from trusted {source[0]}: {exc}")
                    continue
                if not header.is_local and isinstance(header.source, tuple):
                    client = header.source
                    if isinstance(header.destination, tuple):
                        dest = header.destination
            elif kind != "none":
                self._refuse("untrusted_header", f"PROXY header from {source[0]}, not a trusted source")
                continue
            key = (source, client)
            flow = self.flows.get(key)
            if flow is None:
                flow = self._open(key, source, client, dest)
                if flow is None:
                    continue
            flow.last = self.loop.time()
            try:
                flow.sock.send(flow.header + payload if flow.header else payload)
            except OSError:
                pass  # ICMP unreachable from the target comes back as an error: the datagram is lost, as on a wire

    def _open(self, key, source, client, dest) -> Flow | None:
        rt = self.rt
        route = rt.rules.router.default
        if route is None:
            return None
        if len(self.flows) >= rt.listener.max_connections:
            self._refuse("connection_limit", f"{len(self.flows)} flows open (max_connections)")
            return None
        try:
            fam = socket.AF_INET6 if ":" in route.target[0] else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_DGRAM)
            s.setblocking(False)
            s.connect(route.target)
        except OSError as exc:
            self._refuse("backend_unreachable", f"{route.target}: {exc}")
            return None
        header = encode_v2(client, dest, protocol=Protocol.DGRAM) if route.send_proxy == "v2" else b""
        flow = Flow(key, source, client, s, header, self.loop.time())
        self.flows[key] = flow
        rt.open += 1
        rt.accepted += 1
        self.loop.add_reader(s.fileno(), self._reply, flow)
        log.info("listener %s: udp client %s:%d%s -> route %s %s:%d", rt.listener.name, client[0], client[1],
                 f" via {source[0]}" if client != source else "", route.name, *route.target)
        return flow

    def _reply(self, flow: Flow) -> None:
        for _ in range(BATCH):
            try:
                data = flow.sock.recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            flow.last = self.loop.time()
            if self.sock is None:
                return
            try:
                self.sock.sendto(data, flow.source)
            except OSError:
                return

    def _end(self, flow: Flow) -> None:
        if self.flows.pop(flow.key, None) is not None:
            self.loop.remove_reader(flow.sock.fileno())
            flow.sock.close()
            self.rt.open -= 1

    def sweep(self) -> None:
        now = self.loop.time()
        for f in list(self.flows.values()):
            if now - f.last >= self.rt.listener.idle_timeout:
                self._end(f)
        self._schedule()

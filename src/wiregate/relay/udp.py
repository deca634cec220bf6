"""UDP services: per client address a flow with its own upstream socket, replies sent back from the listener.

The backend sees each flow as a distinct source port of the relay; with proxy_protocol = "v2" every datagram
toward it starts with a PROXY v2 header (command PROXY, protocol DGRAM) naming the real client, as the
spec asks for datagram transports (section 2.2: one header per datagram). Replies carry no header.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING

from wiregate.proxyproto import Protocol, encode_v2
from wiregate.relay.config import UDPService, format_addr
from wiregate.relay.flows import FlowTable
from wiregate.relay.pool import BackendPool
from wiregate.relay.tcp import plain_addr

if TYPE_CHECKING:
    from wiregate.relay.server import Relay

log = logging.getLogger("wiregate.relay")
MAX_DATAGRAM = 65535
DGRAM_BATCH = 64  # datagrams per readiness callback before letting other sockets run


class UDPListener:
    """One bound UDP socket; datagrams become flows of the service it currently belongs to."""

    def __init__(self, relay: "Relay", sock: socket.socket, key: tuple) -> None:
        self.relay = relay
        self.sock = sock
        self.key = key
        self.service: UDPRuntime | None = None
        self.local = plain_addr(sock.getsockname())
        self.addr = format_addr(self.local)
        self.reading = False

    def resume(self) -> None:
        if not self.reading and self.sock.fileno() >= 0:
            self.reading = True
            self.relay.loop.add_reader(self.sock.fileno(), self._on_datagram)

    def pause(self) -> None:
        if self.reading:
            self.reading = False
            self.relay.loop.remove_reader(self.sock.fileno())

    def close(self) -> None:
        self.pause()
        self.sock.close()

    def _on_datagram(self) -> None:
        sock = self.sock
        for _ in range(DGRAM_BATCH):
            try:
                data, addr = sock.recvfrom(MAX_DATAGRAM)
            except BlockingIOError:
                return
            except OSError:
                continue  # an ICMP error queued on the listener says nothing about the next datagram
            if self.service is not None:
                self.service.datagram(self, data, addr)


class Flow:
    """One client address: its upstream socket toward the chosen backend."""

    __slots__ = ("svc", "listener", "client", "raw_client", "key", "pool", "backend", "sock", "header")

    def __init__(self, svc: "UDPRuntime", listener: UDPListener, client: tuple[str, int], raw_client: tuple,
                 key: tuple, backend: int, sock: socket.socket, header: bytes) -> None:
        self.svc, self.listener, self.client, self.raw_client = svc, listener, client, raw_client
        self.key, self.backend, self.sock, self.header = key, backend, sock, header
        self.pool = svc.pool  # the pool `backend` indexes (a reload may replace svc.pool)

    def on_reply(self) -> None:
        """Datagrams from the backend go back to the client from the listener it wrote to."""
        svc = self.svc
        out = self.listener.sock
        for _ in range(DGRAM_BATCH):
            try:
                data = self.sock.recv(MAX_DATAGRAM)
            except BlockingIOError:
                break
            except ConnectionRefusedError:  # ICMP port unreachable: the backend is not there
                svc.flow_failed(self)
                return
            except OSError:
                break
            try:
                out.sendto(data, self.raw_client)
            except OSError:
                pass  # a full socket buffer drops the datagram, as the network may
            svc.totals["replies"] += 1
        svc.table.touch(self.key, svc.loop.time())

    def close(self) -> None:
        self.svc.loop.remove_reader(self.sock.fileno())
        self.sock.close()


class UDPRuntime:
    """A running UDP service: flow table, backend pool, listeners."""

    def __init__(self, relay: "Relay", config: UDPService, addrs: list[tuple]) -> None:
        self.relay = relay
        self.loop = relay.loop
        self.table: FlowTable[Flow] = FlowTable(config.max_flows, config.flow_idle_timeout)
        self.totals = {"flows": 0, "refused": 0, "datagrams": 0, "replies": 0}
        self.listeners: list[UDPListener] = []
        self.retired = False
        self._timer: asyncio.TimerHandle | None = None
        self._refused_logged = 0.0
        self.pool: BackendPool | None = None
        self.update(config, addrs)

    def update(self, config: UDPService, addrs: list[tuple]) -> None:
        """Take a new config (reload): open flows keep their backend until they expire."""
        self.config = config
        self.addrs = addrs
        # UDP has no connect to observe and no generic probe, so no active checks; ICMP errors mark passively
        self.pool = BackendPool(config.backends, config.balance, None, self.loop.time(), self.pool)
        self.table.max_flows, self.table.idle_timeout = config.max_flows, config.flow_idle_timeout

    def datagram(self, listener: UDPListener, data: bytes, addr: tuple) -> None:
        """A datagram from a client: find or make its flow, forward (with a PROXY v2 DGRAM header if set)."""
        now = self.loop.time()
        key = (listener.key, addr[:2])
        flow = self.table.get(key, now)
        if flow is None:
            flow = self._new_flow(listener, addr, key, now)
            if flow is None:
                return
        self.totals["datagrams"] += 1
        try:
            flow.sock.send(flow.header + data if flow.header else data)
        except ConnectionRefusedError:  # an earlier datagram was refused: the next one makes a new flow
            self.flow_failed(flow)
        except OSError:
            pass  # full buffer: dropped, as UDP may

    def _new_flow(self, listener: UDPListener, addr: tuple, key: tuple, now: float) -> Flow | None:
        ok, expired = self.table.room(now)
        for f in expired:
            f.close()
        client = plain_addr(addr)
        if not ok:
            self.totals["refused"] += 1
            if now - self._refused_logged > 1.0:  # at most one line a second under a flood
                self._refused_logged = now
                log.info("%s: refused UDP flow from %s: %d flows (max_flows)", self.config.name,
                         format_addr(client), len(self.table))
            return None
        i = self.pool.pick(client[0], now)
        if i is None:
            self.totals["refused"] += 1
            return None
        baddr = self.addrs[i]
        sock = socket.socket(socket.AF_INET6 if len(baddr) == 4 else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect(baddr)
        except OSError as exc:
            sock.close()
            log.info("%s: cannot open a flow to %s: %s", self.config.name, self.config.backends[i].label, exc)
            return None
        header = b""
        if self.config.proxy_protocol == "v2":
            header = encode_v2(client, listener.local, protocol=Protocol.DGRAM)
        flow = Flow(self, listener, client, addr, key, i, sock, header)
        self.table.add(key, flow, now)
        self.loop.add_reader(sock.fileno(), flow.on_reply)
        self.totals["flows"] += 1
        self._arm()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: UDP flow %s -> %s via %s", self.config.name, format_addr(client),
                      self.config.backends[i].label, listener.addr)
        return flow

    def flow_failed(self, flow: Flow) -> None:
        """The backend refused this flow (ICMP): mark it, and drop the flow so the client's next datagram
        picks a backend again (failover for UDP)."""
        flow.pool.connect_failed(flow.backend, self.loop.time())
        if self.table.pop(flow.key) is flow:
            flow.close()
        log.info("%s: backend %s refused UDP flow from %s", self.config.name,
                 flow.pool.states[flow.backend].backend.label, format_addr(flow.client))

    def _arm(self) -> None:
        if self._timer is None:
            deadline = self.table.next_deadline()
            if deadline is not None:
                self._timer = self.loop.call_at(deadline, self._expire)

    def _expire(self) -> None:
        self._timer = None
        for f in self.table.expire(self.loop.time()):
            f.close()
        self._arm()

    def close_flows(self) -> None:
        """Close every flow (shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for f in self.table.clear():
            f.close()

    def start_health(self) -> None:  # UDP has no active checks (see __init__)
        pass

    def stop_health(self) -> None:
        pass

    def status(self) -> dict:
        return {
            "kind": "udp",
            "listeners": [lst.addr for lst in self.listeners],
            "backends": self.pool.status(),
            "open": len(self.table),
            "totals": dict(self.totals),
            "proxy_protocol": self.config.proxy_protocol,
        }


__all__ = ["Flow", "UDPListener", "UDPRuntime"]

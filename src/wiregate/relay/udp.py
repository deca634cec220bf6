"""UDP services: per client address a flow with its own upstream socket, replies sent back from the listener.

The backend sees each flow as a distinct source port of the relay; with proxy_protocol = "v2" every datagram
toward it starts with a PROXY v2 header (command PROXY, protocol DGRAM) naming the real client, as the
spec asks for datagram transports (section 2.2: one header per datagram). Replies carry no header.

A listener on a wildcard address (0.0.0.0, ::) learns each datagram's destination address from IP_PKTINFO /
IPV6_PKTINFO: that address goes into the PROXY header, and replies leave from it. Without this a host with
several addresses would answer from whichever address the routing table picks, which clients drop.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
import struct
from typing import TYPE_CHECKING

from wiregate.limits import NO_DESCRIPTORS, Backoff
from wiregate.proxyproto import Protocol, encode_v2
from wiregate.relay.config import UDPService, format_addr
from wiregate.relay.flows import FlowTable
from wiregate.relay.pool import BackendPool
from wiregate.relay.tcp import plain_addr

if TYPE_CHECKING:
    from wiregate.relay.host import RelayHost

log = logging.getLogger("wiregate.relay")
MAX_DATAGRAM = 65535
DGRAM_BATCH = 64  # datagrams per readiness callback before letting other sockets run
# linux/in.h IP_PKTINFO (Python exposes it only from 3.13 on); struct in_pktinfo {int ifindex; in_addr spec_dst,
# addr}; struct in6_pktinfo {in6_addr addr; unsigned int ifindex}
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
_IN_PKTINFO = struct.Struct("=i4s4s")
_IN6_PKTINFO = struct.Struct("=16sI")
_CMSG_SPACE = socket.CMSG_SPACE(max(_IN_PKTINFO.size, _IN6_PKTINFO.size))


def enable_pktinfo(sock: socket.socket) -> None:
    """Ask the kernel for each datagram's destination address (used on wildcard listeners)."""
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)


def destination_of(ancdata: list[tuple[int, int, bytes]]) -> str | None:
    """The destination address of a received datagram from its IP_PKTINFO/IPV6_PKTINFO control message."""
    for level, kind, data in ancdata:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= _IN_PKTINFO.size:
            return str(ipaddress.IPv4Address(_IN_PKTINFO.unpack_from(data)[2]))
        if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO and len(data) >= _IN6_PKTINFO.size:
            return str(ipaddress.IPv6Address(_IN6_PKTINFO.unpack_from(data)[0]))
    return None


def source_cmsg(family: int, local: str) -> list[tuple[int, int, bytes]]:
    """Control message making a reply leave from `local` (the address the client wrote to)."""
    if family == socket.AF_INET6:
        return [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, _IN6_PKTINFO.pack(ipaddress.IPv6Address(local).packed, 0))]
    return [(socket.IPPROTO_IP, IP_PKTINFO, _IN_PKTINFO.pack(0, ipaddress.IPv4Address(local).packed, bytes(4)))]


class UDPListener:
    """One bound UDP socket; datagrams become flows of the service it currently belongs to."""

    def __init__(self, relay: RelayHost, sock: socket.socket, key: tuple) -> None:
        self.relay = relay
        self.sock = sock
        self.key = key
        self.service: UDPRuntime | None = None
        self.local = plain_addr(sock.getsockname())
        self.addr = format_addr(self.local)
        self.reading = False
        # a wildcard listener asks for each datagram's destination (header and reply source); see the module doc
        self.wildcard = key[1].is_unspecified
        if self.wildcard:
            enable_pktinfo(sock)

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
        wildcard = self.wildcard
        local = self.local
        for _ in range(DGRAM_BATCH):
            try:
                if wildcard:
                    data, anc, _flags, addr = sock.recvmsg(MAX_DATAGRAM, _CMSG_SPACE)
                    dst = destination_of(anc)
                    local = (plain_addr((dst, 0))[0], self.local[1]) if dst else self.local
                else:
                    data, addr = sock.recvfrom(MAX_DATAGRAM)
            except BlockingIOError:
                return
            except OSError:
                continue  # an ICMP error queued on the listener says nothing about the next datagram
            if self.service is not None:
                self.service.datagram(self, data, addr, local)

    def reply(self, data: bytes, client: tuple, local: tuple[str, int]) -> None:
        """Send a backend's datagram to the client, from the address the client wrote to."""
        if self.wildcard:
            self.sock.sendmsg([data], source_cmsg(self.sock.family, local[0]), 0, client)
        else:
            self.sock.sendto(data, client)


class Flow:
    """One client address: its upstream socket toward the chosen backend."""

    __slots__ = ("svc", "listener", "client", "raw_client", "local", "key", "pool", "backend", "sock", "header")

    def __init__(self, svc: "UDPRuntime", listener: UDPListener, client: tuple[str, int], raw_client: tuple,
                 local: tuple[str, int], key: tuple, backend: int, sock: socket.socket, header: bytes) -> None:
        self.svc, self.listener, self.client, self.raw_client = svc, listener, client, raw_client
        self.local = local  # the address the client wrote to: replies leave from it
        self.key, self.backend, self.sock, self.header = key, backend, sock, header
        self.pool = svc.pool  # the pool `backend` indexes (a reload may replace svc.pool)

    def on_reply(self) -> None:
        """Datagrams from the backend go back to the client from the listener it wrote to."""
        svc = self.svc
        listener = self.listener
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
                listener.reply(data, self.raw_client, self.local)
            except OSError:
                pass  # a full socket buffer drops the datagram, as the network may
            svc.totals["replies"] += 1
        svc.table.touch(self.key, svc.loop.time())

    def close(self) -> None:
        self.svc.loop.remove_reader(self.sock.fileno())
        self.sock.close()


class UDPRuntime:
    """A running UDP service: flow table, backend pool, listeners."""

    def __init__(self, relay: RelayHost, config: UDPService, addrs: list[tuple]) -> None:
        self.relay = relay
        self.loop = relay.loop
        self.table: FlowTable[Flow] = FlowTable(config.max_flows, config.flow_idle_timeout, config.max_per_source)
        self.cap = config.max_flows  # max_flows, or less when the descriptor limit cannot hold it (Relay sets it)
        self.backoff = Backoff()  # socket() out of descriptors: no new flow for a growing delay, logged rarely
        self.fd_until = 0.0
        self.totals = {"flows": 0, "refused": 0, "datagrams": 0, "replies": 0}
        self.listeners: list[UDPListener] = []
        self.retired = False
        self._timer: asyncio.TimerHandle | None = None
        self._refused_logged = 0.0
        self.pool: BackendPool = None  # type: ignore[assignment]  # set by update() just below
        self.update(config, addrs)

    def update(self, config: UDPService, addrs: list[tuple]) -> None:
        """Take a new config (reload): open flows keep their backend until they expire."""
        self.config = config
        self.addrs = addrs
        # UDP has no connect to observe and no generic probe, so no active checks; ICMP errors mark passively
        self.pool = BackendPool(config.backends, config.balance, None, self.loop.time(), self.pool)
        self.table.max_flows, self.table.idle_timeout = min(self.cap, config.max_flows), config.flow_idle_timeout
        self.table.max_per_source = config.max_per_source

    def set_cap(self, cap: int) -> None:
        """Hold the flow table to `cap` flows (the share of the descriptor limit this service may use)."""
        self.cap = cap
        self.table.max_flows = min(cap, self.config.max_flows)

    def datagram(self, listener: UDPListener, data: bytes, addr: tuple, local: tuple[str, int]) -> None:
        """A datagram from `addr` to `local`: find or make its flow, forward (with a PROXY v2 DGRAM header if set)."""
        now = self.loop.time()
        key = (listener.key, addr[:2], local[0])
        flow = self.table.get(key, now)
        if flow is None:
            flow = self._new_flow(listener, addr, local, key, now)
            if flow is None:
                return
        self.totals["datagrams"] += 1
        try:
            flow.sock.send(flow.header + data if flow.header else data)
        except ConnectionRefusedError:  # an earlier datagram was refused: the next one makes a new flow
            self.flow_failed(flow)
        except OSError:
            pass  # full buffer: dropped, as UDP may

    def _new_flow(self, listener: UDPListener, addr: tuple, local: tuple[str, int], key: tuple,
                  now: float) -> Flow | None:
        ok, expired = self.table.room(now)
        for f in expired:
            f.close()
        client = plain_addr(addr)
        if not ok or self.table.source_full(client[0]):
            self.totals["refused"] += 1
            if now - self._refused_logged > 1.0:  # at most one line a second under a flood
                self._refused_logged = now
                why = (f"{len(self.table)} flows (max_flows {self.table.max_flows})" if not ok else
                       f"{self.config.max_per_source} flows from this address (max_per_source)")
                log.info("%s: refused UDP flow from %s: %s", self.config.name, format_addr(client), why)
            return None
        if now < self.fd_until:
            self.totals["refused"] += 1
            return None
        i = self.pool.pick(client[0], now)
        if i is None:
            self.totals["refused"] += 1
            return None
        baddr = self.addrs[i]
        try:
            sock = socket.socket(socket.AF_INET6 if len(baddr) == 4 else socket.AF_INET, socket.SOCK_DGRAM)
        except OSError as exc:  # out of descriptors: no new flow for a while (existing flows keep working)
            self.totals["refused"] += 1
            if exc.errno in NO_DESCRIPTORS:
                self.fd_until = now + self.backoff.failed(now, errno.errorcode.get(exc.errno or 0, str(exc)))
                line = self.backoff.take_log(now)
                if line is not None:
                    log.warning("%s: new UDP flows: %s", self.config.name, line)
            else:
                log.info("%s: cannot open a flow socket: %s", self.config.name, exc)
            return None
        if self.backoff.delay:
            self.backoff.succeeded()
        try:
            sock.setblocking(False)
            sock.connect(baddr)
        except OSError as exc:
            sock.close()
            log.info("%s: cannot open a flow to %s: %s", self.config.name, self.config.backends[i].label, exc)
            return None
        header = b""
        if self.config.proxy_protocol == "v2":
            header = encode_v2(client, local, protocol=Protocol.DGRAM)
        flow = Flow(self, listener, client, addr, local, key, i, sock, header)
        self.table.add(key, flow, now, client[0])
        self.loop.add_reader(sock.fileno(), flow.on_reply)
        self.totals["flows"] += 1
        self._arm()
        access = logging.getLogger("wiregate.relay.access")  # --access-log: INFO, the address the client wrote to
        if access.isEnabledFor(logging.INFO):
            access.info("%s: UDP flow %s -> %s via %s", self.config.name, format_addr(client),
                        self.config.backends[i].label, format_addr(local))
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
            "max_flows": self.table.max_flows,  # lower than configured when the descriptor limit cannot hold it
            "totals": dict(self.totals),
            "proxy_protocol": self.config.proxy_protocol,
        }


__all__ = ["Flow", "UDPListener", "UDPRuntime"]

"""UDP listeners route by port: every datagram goes to the listener's default route.

Trust works per datagram, as the PROXY spec has every datagram carry its own header: datagrams from a trusted
source must start with a v2 header (protocol DGRAM) naming the client; any other source must send none. Each
(source, client) pair is a flow with its own connected socket toward the target, so replies find their way back
(sent from the listener to the source, without a header, to the address exactly as received: on a `[::]`
listener an IPv4 source is `::ffff:a.b.c.d`). Flows end after flow_idle_timeout.

Limits: a flow holds a descriptor, so flows are bounded on their own (`max_flows`, held lower by the ingress
when the descriptor limit cannot hold them and the TCP connections together, see wiregate.limits) and per client
address (`max_per_source`). When socket() fails for lack of descriptors, new flows are refused for a growing
back-off without trying (existing flows keep working), and the failure is logged once per interval.

A source address alone proves nothing on a LAN (rp_filter is off on many hosts): with `trusted_interface` set,
a datagram from a trusted address is believed only when it arrived on that interface (IP_PKTINFO ifindex);
one from a trusted address on any other interface is dropped as `wrong_interface`.

Flow sockets are watched through the data path's Poller (`io`), not the event loop: a connected UDP socket reports
EPOLLERR when its target answers with an ICMP error (a service restarting), and uvloop stops such a watcher for
good, so the flow would never read a reply again (`tests/system/test_uvloop_resets.py`).
"""

from __future__ import annotations

import asyncio
import collections
import errno
import functools
import logging
import socket
import struct
from typing import TYPE_CHECKING

from wiregate import hostport
from wiregate.datapath.poller import Poller
from wiregate.limits import NO_DESCRIPTORS, Backoff
from wiregate.proxyproto import Protocol, ProxyError, decode, detect, encode_v2

if TYPE_CHECKING:
    from wiregate.ingress.runtime import Runtime

log = logging.getLogger("wiregate.ingress")
MAX_DATAGRAM = 65535
BATCH = 64
LOG_EVERY = 1.0  # at most one refusal line per second per listener: a datagram flood must not flood the log
# linux/in.h IP_PKTINFO (Python exposes it only from 3.13 on): struct in_pktinfo {int ifindex; ...};
# struct in6_pktinfo {in6_addr addr; unsigned int ifindex}
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
_IN_IFINDEX = struct.Struct("=i")
_IN6_IFINDEX = struct.Struct("=16xI")
_CMSG_SPACE = socket.CMSG_SPACE(12) + socket.CMSG_SPACE(20)  # both, on a dual-stack socket


def arrival_ifindex(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    """The interface a datagram arrived on, from its IP_PKTINFO / IPV6_PKTINFO control message."""
    for level, kind, data in ancdata:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= 12:
            return _IN_IFINDEX.unpack_from(data)[0]
        if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO and len(data) >= 20:
            return _IN6_IFINDEX.unpack_from(data)[0]
    return None


def enable_arrival_info(sock: socket.socket) -> None:
    """Ask the kernel to tell on which interface packets arrive (IP_PKTINFO / IPV6_RECVPKTINFO). On a TCP listener
    accepted sockets inherit it, and `tcp_arrival_ifindex` then reads where the connection's SYN came in."""
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        if sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0:
            try:  # IPv4 datagrams on a dual-stack socket (Linux reports them through IPV6_PKTINFO as well)
                sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            except OSError:
                pass
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)


# linux/in.h IP_PKTOPTIONS, linux/in6.h IPV6_2292PKTOPTIONS: the control messages of a TCP socket, whose PKTINFO
# ifindex is the interface the connection's SYN arrived on (tcp_v4_syn_recv_sock sets it from the SYN's skb)
IP_PKTOPTIONS = 9
IPV6_2292PKTOPTIONS = 6
_CMSGHDR = struct.Struct("@Nii")


def tcp_arrival_ifindex(sock: socket.socket) -> int | None:
    """The interface an accepted TCP connection came in on (its listener had `enable_arrival_info`); None if unknown."""
    try:
        if sock.family == socket.AF_INET6:
            raw = sock.getsockopt(socket.IPPROTO_IPV6, IPV6_2292PKTOPTIONS, 256)
        else:
            raw = sock.getsockopt(socket.IPPROTO_IP, IP_PKTOPTIONS, 256)
    except OSError:
        return None
    cmsgs = []
    off, head = 0, socket.CMSG_LEN(0)
    while off + _CMSGHDR.size <= len(raw):
        length, level, kind = _CMSGHDR.unpack_from(raw, off)
        if length < head or off + length > len(raw):
            break
        cmsgs.append((level, kind, raw[off + head:off + length]))
        off += socket.CMSG_SPACE(length - head)
    return arrival_ifindex(cmsgs)




class Flow:
    __slots__ = ("key", "source", "raw", "client", "sock", "header", "last")

    def __init__(self, key, source, raw, client, sock, header, now) -> None:
        self.key, self.source, self.client, self.sock, self.header, self.last = key, source, client, sock, header, now
        self.raw = raw  # the source address as the listener socket reported it: replies go back to exactly this


class UdpRuntime:
    """The datagram side of one UDP listener."""

    def __init__(self, loop: asyncio.AbstractEventLoop, rt: Runtime, io: Poller | None = None) -> None:
        self.rt = rt
        self.loop = loop
        self.io: Poller | asyncio.AbstractEventLoop = loop if io is None else io  # where flow sockets are watched
        self.sock = rt.sock
        self.local = hostport.unmap(self.sock.getsockname())  # type: ignore[union-attr]
        self.flows: dict[tuple, Flow] = {}
        self.per_source: collections.Counter = collections.Counter()  # client address -> open flows
        self.cap = rt.listener.max_flows  # lowered by the ingress when the descriptor limit cannot hold max_flows
        self.backoff = Backoff()
        self.fd_until = 0.0  # no new flow before this time (socket() failed for lack of descriptors)
        self.last_log = 0.0
        self.sweeper: asyncio.TimerHandle | None = None
        self.ifindex = self._resolve_interface()

    def _resolve_interface(self) -> frozenset[int] | None:
        names = self.rt.listener.trusted_interface
        if not names:
            return None
        index: set[int] = set()
        for name in (names,) if isinstance(names, str) else names:
            try:
                index.add(socket.if_nametoindex(name))
            except OSError:  # not there (yet): nothing arrives on it, so it trusts no datagram until a reload
                log.warning("listener %s: trusted_interface %s does not exist: no source is trusted on it",
                            self.rt.listener.name, name)
        assert self.sock is not None
        enable_arrival_info(self.sock)
        return frozenset(index)

    @property
    def open(self) -> int:
        return len(self.flows)

    def start(self) -> None:
        self.loop.add_reader(self.sock.fileno(), self.readable)  # type: ignore[union-attr]
        self._schedule()

    def _schedule(self) -> None:
        self.sweeper = self.loop.call_later(min(self.rt.listener.flow_idle_timeout / 4, 15.0), self.sweep)

    def reconfigure(self) -> None:
        """A reload changed the listener: flows to a target that changed are dropped (they reconnect)."""
        route = self.rt.rules.router.default
        self.ifindex = self._resolve_interface() if self.rt.listener.trusted_interface else None
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
        sock = self.sock
        want_if = self.ifindex
        for _ in range(BATCH):
            try:
                if want_if is None:
                    data, raw = sock.recvfrom(MAX_DATAGRAM)  # type: ignore[union-attr]
                    came_in = None
                else:
                    data, anc, _flags, raw = sock.recvmsg(MAX_DATAGRAM, _CMSG_SPACE)  # type: ignore[union-attr]
                    came_in = arrival_ifindex(anc)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            source = hostport.unmap(raw)
            client = source
            dest = self.local
            payload = data
            kind = detect(data[:16])
            if source[0] in rt.rules.trust:
                if want_if is not None and came_in not in want_if:
                    self._refuse("wrong_interface", f"datagram from trusted {source[0]} arrived on interface "
                                 f"{came_in}, not {lst.trusted_interface} (spoofed source?)")
                    continue
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
                flow = self._open(key, source, raw, client, dest)
                if flow is None:
                    continue
            flow.last = self.loop.time()
            try:
                flow.sock.send(flow.header + payload if flow.header else payload)
            except OSError:
                pass  # ICMP unreachable from the target comes back as an error: the datagram is lost, as on a wire

    def _open(self, key, source, raw, client, dest) -> Flow | None:
        rt = self.rt
        lst = rt.listener
        route = rt.rules.router.default
        if route is None:
            return None
        if len(self.flows) >= self.cap:
            self._refuse("flow_limit", f"{len(self.flows)} flows open (max_flows {lst.max_flows}"
                         f"{'' if self.cap == lst.max_flows else f', {self.cap} under the descriptor limit'})")
            return None
        if self.per_source[client[0]] >= lst.max_per_source:
            self._refuse("source_limit", f"{client[0]} has {self.per_source[client[0]]} flows open (max_per_source)")
            return None
        now = self.loop.time()
        if now < self.fd_until:
            rt.refused["no_descriptors"] += 1
            return None
        try:
            fam = socket.AF_INET6 if ":" in route.target[0] else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_DGRAM)
        except OSError as exc:
            if exc.errno not in NO_DESCRIPTORS:
                self._refuse("backend_unreachable", f"{route.target}: {exc}")
                return None
            rt.refused["no_descriptors"] += 1
            self.fd_until = now + self.backoff.failed(now, errno.errorcode.get(exc.errno or 0, str(exc)))
            line = self.backoff.take_log(now)
            if line is not None:
                log.error("listener %s: new UDP flows: %s", lst.name, line)
            return None
        if self.backoff.delay:
            self.backoff.succeeded()
        try:
            s.setblocking(False)
            s.connect(route.target)
        except OSError as exc:
            s.close()
            self._refuse("backend_unreachable", f"{route.target}: {exc}")
            return None
        header = encode_v2(client, dest, protocol=Protocol.DGRAM) if route.send_proxy == "v2" else b""
        flow = Flow(key, source, raw, client, s, header, now)
        self.flows[key] = flow
        self.per_source[client[0]] += 1
        rt.accepted += 1
        self.io.add_reader(s.fileno(), functools.partial(self._reply, flow))
        if log.isEnabledFor(logging.INFO):
            log.info("listener %s: udp client %s:%d%s -> route %s %s:%d", lst.name, client[0], client[1],
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
                self.sock.sendto(data, flow.raw)
            except OSError:
                return

    def _end(self, flow: Flow) -> None:
        if self.flows.pop(flow.key, None) is not None:
            self.io.remove_reader(flow.sock.fileno())
            flow.sock.close()
            ip = flow.client[0]
            self.per_source[ip] -= 1
            if self.per_source[ip] <= 0:
                del self.per_source[ip]

    def sweep(self) -> None:
        now = self.loop.time()
        limit = self.rt.listener.flow_idle_timeout
        for f in list(self.flows.values()):
            if now - f.last >= limit:
                self._end(f)
        self._schedule()

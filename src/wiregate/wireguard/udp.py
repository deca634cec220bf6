"""The UDP socket WireGuard speaks over: IPv4 and IPv6 on one port, several datagrams per system call.

One dual-stack IPv6 socket (IPV6_V6ONLY off) serves both families; an IPv4-only host falls back to AF_INET.
Addresses are plain `(ip, port)` tuples for both families (IPv4-mapped IPv6 addresses are unmapped).

Batching (Linux >= 5.0): sends use UDP generic segmentation offload: a run of datagrams to the same peer with the
same size (the last may be shorter) goes out in one sendmsg with a UDP_SEGMENT control message, and the kernel
cuts it. Receives enable UDP_GRO, so one recvmsg may return several datagrams back to back plus their size.
Where the kernel refuses either, the socket falls back to one datagram per call.
"""

from __future__ import annotations

import errno
import socket
import struct

from wiregate import hostport

SOL_UDP = 17
UDP_SEGMENT = 103  # linux/udp.h: send with GSO, value = segment size (u16)
UDP_GRO = 104  # linux/udp.h: receive coalesced datagrams; cmsg value = segment size (int)
UDP_MAX_SEGMENTS = 64  # linux/udp.h (128 on newer kernels; 64 works everywhere)
MAX_GSO_BYTES = 65000  # a GSO send is one UDP datagram before it is cut: stay below 64 KiB
SO_MARK = 36  # asm-generic/socket.h
RECV_BUF = 65536 + 2048
SOCKET_BUFFER = 8 << 20  # deep buffers: a burst from TCP's window must not be dropped between two loop turns

_GRO_CMSG_SPACE = socket.CMSG_SPACE(4)


class UdpSocket:
    """A non-blocking UDP socket bound to `port` (0 = any) on all addresses of both families."""

    def __init__(self, port: int = 0, *, gso: bool = True, gro: bool = True) -> None:
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(("::", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("0.0.0.0", port))
        sock.setblocking(False)
        for opt, force in ((socket.SO_SNDBUF, 32), (socket.SO_RCVBUF, 33)):  # 32/33: SO_SNDBUFFORCE/RCVBUFFORCE
            try:
                sock.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER)
            except OSError:  # not root: take what the sysctl limits allow
                sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
        self.sock = sock
        self.family = sock.family
        self.port = sock.getsockname()[1]
        self.gso = gso
        self.gro = False
        if gro:
            try:
                sock.setsockopt(SOL_UDP, UDP_GRO, 1)
                self.gro = True
            except OSError:
                pass
        self._peer_addr: dict[tuple[str, int], tuple] = {}  # (ip, port) -> address in the socket's family
        self._from_addr: dict[tuple, tuple[str, int]] = {}  # socket address -> (ip, port)

    def fileno(self) -> int:
        return self.sock.fileno()

    def set_mark(self, mark: int) -> None:
        """Mark outgoing datagrams (SO_MARK) for policy routing, as WireGuard's fwmark does; 0 clears it."""
        self.sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)

    def _sockaddr(self, addr: tuple[str, int]) -> tuple:
        sa = self._peer_addr.get(addr)
        if sa is None:
            host, port = addr
            if self.family == socket.AF_INET6 and ":" not in host:
                host = "::ffff:" + host
            sa = self._peer_addr[addr] = (host, port)
            if len(self._peer_addr) > 4096:  # bound the cache; peers are few, churn is rare
                self._peer_addr.clear()
        return sa

    def recv_batch(self, limit: int = 256) -> list[tuple[bytes, tuple[str, int]]]:
        """Up to about `limit` datagrams that are queued now, as (data, (ip, port))."""
        out: list[tuple[bytes, tuple[str, int]]] = []
        sock, cache = self.sock, self._from_addr
        recvmsg = sock.recvmsg
        n = 0
        try:
            while n < limit:
                data, anc, _flags, raw = recvmsg(RECV_BUF, _GRO_CMSG_SPACE)
                addr = cache.get(raw)
                if addr is None:
                    if len(cache) > 4096:
                        cache.clear()
                    addr = cache[raw] = hostport.unmap(raw, drop_scope=True)
                if anc:
                    seg = 0
                    for level, kind, value in anc:
                        if level == SOL_UDP and kind == UDP_GRO:
                            seg = int.from_bytes(value[:4], "little")
                    if seg and len(data) > seg:
                        # a bytes slice is one copy; bytes(memoryview slice) would make an extra object per datagram
                        for off in range(0, len(data), seg):
                            out.append((data[off:off + seg], addr))
                        n += len(data) // seg + 1
                        continue
                out.append((data, addr))
                n += 1
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            # an ICMP error queued for an earlier send (ECONNREFUSED and kin): nothing to read this turn
            pass
        return out

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        """Send one datagram; a full socket buffer or an unreachable peer drops it (UDP semantics)."""
        try:
            self.sock.sendto(data, self._sockaddr(addr))
        except OSError:
            pass

    def send_batch(self, items: list[tuple[bytes, tuple[str, int]]]) -> None:
        """Send datagrams in order, coalescing runs to one peer into GSO sends where possible."""
        if not self.gso or len(items) < 2:
            for data, addr in items:
                self.send(data, addr)
            return
        i, n = 0, len(items)
        while i < n:
            data, addr = items[i]
            size = len(data)
            j = i + 1
            limit = min(UDP_MAX_SEGMENTS, MAX_GSO_BYTES // max(size, 1))
            # same peer, same size; one shorter datagram may end the run
            while j < n and j - i < limit:
                d, a = items[j]
                if a != addr or len(d) > size:
                    break
                j += 1
                if len(d) < size:
                    break
            if j - i == 1:
                self.send(data, addr)
            else:
                self._send_gso([d for d, _ in items[i:j]], size, addr)
            i = j

    def _send_gso(self, chunks: list[bytes], size: int, addr: tuple[str, int]) -> None:
        try:
            self.sock.sendmsg([b"".join(chunks)], [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))],
                              0, self._sockaddr(addr))
        except OSError as exc:
            if exc.errno in (errno.EIO, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP):
                # the route's device cannot do UDP segmentation: stop trying, send these one by one
                self.gso = False
                for c in chunks:
                    self.send(c, addr)
            # EAGAIN/ENOBUFS: dropped, like any UDP datagram that finds the queue full

    def close(self) -> None:
        self.sock.close()

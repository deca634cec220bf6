"""TUN offload framing: virtio-net headers and TCP coalescing of decrypted packets (receive-side GRO), sans-I/O.

With IFF_VNET_HDR every TUN read and write carries a 10-byte `struct virtio_net_hdr` (linux/virtio_net.h) before the
IP packet. wiregate enables no transmit offloads on the device (TUNSETOFFLOAD 0), so what it reads are ordinary,
fully checksummed packets behind a zero header. On the way into the kernel it uses the header to do what a NIC's GRO
does: consecutive TCP segments of one flow, as a burst of decrypted data messages usually is, are joined into one
large packet marked GSO_TCPV4/6 with a partial checksum, so the kernel handles one packet (one write, one pass through
IP and TCP) instead of up to ~45. Packets that cannot be joined go in one by one marked DATA_VALID: like the kernel's
own WireGuard, wiregate treats a packet that passed Poly1305 as not needing a second checksum check.

The rules follow Linux's tcp_gro_receive: same addresses and ports, same IP TOS/TTL, same TCP header apart from the
sequence number, checksum and PSH flag, sequence numbers contiguous, every joined segment but the last exactly the
size of the first, PSH ends a run, only ACK/PSH flags, no IP options or IPv6 extension headers, at most 64 KiB.
"""

from __future__ import annotations

import struct
from typing import Callable

VNET_HDR_LEN = 10  # sizeof(struct virtio_net_hdr)
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_F_DATA_VALID = 2
VIRTIO_NET_HDR_GSO_NONE = 0
VIRTIO_NET_HDR_GSO_TCPV4 = 1
VIRTIO_NET_HDR_GSO_TCPV6 = 4

_HDR = struct.Struct("<BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
PLAIN_VALID = _HDR.pack(VIRTIO_NET_HDR_F_DATA_VALID, 0, 0, 0, 0, 0)
TCP_ACK, TCP_PSH = 0x10, 0x08
MAX_SUPER = 65535  # IPv4 total length / IPv6 payload length field limit
MAX_SEGMENTS = 64  # UDP/TCP GSO segment limit the kernel accepts without fuss


def _fold(n: int) -> int:
    while n > 0xFFFF:
        n = (n & 0xFFFF) + (n >> 16)
    return n


def _ipv4_header_checksum(hdr: bytes) -> int:
    s = sum(struct.unpack("!10H", hdr[:10] + b"\0\0" + hdr[12:20]))  # with the checksum field zeroed
    return (~_fold(s)) & 0xFFFF


def _emit(run: list[bytes], v6: bool, th: int, hl: int, out: list[bytes]) -> None:
    """Turn one run of joinable segments into one frame (a single segment goes in as it is)."""
    first = run[0]
    if len(run) == 1:
        out.append(PLAIN_VALID + first)
        return
    payload_total = sum(map(len, run)) - hl * len(run)
    gso_size = len(first) - hl
    tcp_len = hl - th + payload_total
    flags = first[th + 13] | (run[-1][th + 13] & TCP_PSH)
    if v6:
        ip = bytearray(first[:40])
        struct.pack_into("!H", ip, 4, tcp_len)
        pseudo = sum(struct.unpack("!16H", first[8:40])) + tcp_len + 6
        gso_type = VIRTIO_NET_HDR_GSO_TCPV6
    else:
        ip = bytearray(first[:20])
        struct.pack_into("!H", ip, 2, 20 + tcp_len)
        struct.pack_into("!H", ip, 10, _ipv4_header_checksum(bytes(ip)))
        pseudo = sum(struct.unpack("!4H", first[12:20])) + tcp_len + 6
        gso_type = VIRTIO_NET_HDR_GSO_TCPV4
    tcp = bytearray(first[th:hl])
    tcp[13] = flags
    # CHECKSUM_PARTIAL: the field holds the folded pseudo-header sum; the kernel adds the rest when it needs it
    struct.pack_into("!H", tcp, 16, _fold(pseudo))
    parts: list[bytes | bytearray | memoryview] = [
        _HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, gso_type, hl, gso_size, th, 16), ip, tcp]
    parts.extend(memoryview(p)[hl:] for p in run)
    out.append(b"".join(parts))


def _key_reader(v6: bool, h: int) -> Callable[..., tuple]:
    """The joinable-run key of a packet whose IP + TCP headers take `h` bytes, read in one struct call: IPv4
    version/IHL, TOS, TTL, addresses, ports, ack, data offset, window, urgent pointer and options; IPv6
    version/class/flow label, hop limit, addresses, ports, and the same TCP fields."""
    if v6:
        return struct.Struct(f"!4s3x37s4x5sx2s2x{h - 58}s").unpack_from
    return struct.Struct(f"!2s6xc3x12s4x5sx2s2x{h - 38}s").unpack_from


# one reader per (IPv6?, header length); TCP headers are 20..60 bytes in steps of 4, so at most 22 entries
_KEYS = {(v6, t + tcp): _key_reader(v6, t + tcp) for v6, t in ((False, 20), (True, 40)) for tcp in range(20, 64, 4)}
_SEQ = struct.Struct("!I").unpack_from


def coalesce(packets: list[bytes]) -> list[bytes]:
    """IP packets (as decrypted, in order) -> TUN frames with virtio-net headers, TCP runs joined."""
    # Hot path (every received packet): ~1.1 us per packet on the test machine; written for few slices and
    # attribute lookups.
    out: list[bytes] = []
    append = out.append
    run: list[bytes] = []  # segments of one flow; they share v6/th/hl below
    v6 = False
    th = hl = 0
    key: tuple = ()
    next_seq = seg = size = 0
    keys, seq_of = _KEYS, _SEQ
    for p in packets:
        n = len(p)
        b0 = p[0] if n >= 40 else 0
        # the TCP header offset, or 0 when the packet cannot be joined: IPv4 without options, TCP, not a
        # fragment (MF clear, offset zero); IPv6 with TCP as the first next header
        if b0 == 0x45:
            t = 20 if p[9] == 6 and not (p[6] & 0x3F) and not p[7] else 0
            pv6 = False
        elif b0 >> 4 == 6:
            t = 40 if p[6] == 6 else 0
            pv6 = True
        else:
            t = 0
        if t:
            h = t + ((p[t + 12] >> 4) << 2)
            flags = p[t + 13]
            plen = n - h
            # no payload, a TCP header shorter than 20 bytes, or flags beyond ACK (0x10) and PSH (0x08)
            if plen <= 0 or h < t + 20 or flags & 0xE7:
                t = 0
        if not t:
            if run:
                _emit(run, v6, th, hl, out)
                run = []
            append(PLAIN_VALID + p)
            continue
        seq = seq_of(p, t + 4)[0]
        # what must match inside a run: version/TOS (v6: also the flow label), TTL/hop limit, addresses, ports,
        # and the TCP header apart from seq, flags and checksum (ack, data offset, window, urgent, options)
        # (one struct call, options included, costs less than half of slicing and concatenating them)
        k = keys[pv6, h](p)
        if run and seq == next_seq and k == key and plen <= seg and size + plen <= MAX_SUPER \
                and len(run) < MAX_SEGMENTS:
            run.append(p)
            size += plen
            next_seq = (seq + plen) & 0xFFFFFFFF
            if plen < seg or flags & TCP_PSH:
                _emit(run, v6, th, hl, out)
                run = []
            continue
        if run:
            _emit(run, v6, th, hl, out)
        if flags & TCP_PSH:
            run = []
            append(PLAIN_VALID + p)
            continue
        run = [p]
        v6, th, hl, key, seg, size = pv6, t, h, k, plen, n
        next_seq = (seq + plen) & 0xFFFFFFFF
    if run:
        _emit(run, v6, th, hl, out)
    return out


def strip_header(frame: bytes) -> bytes | None:
    """A frame read from a TUN with IFF_VNET_HDR -> the IP packet; None for a GSO frame (offloads are off, so the
    kernel should send none; dropping one is safe, TCP resends). A NEEDS_CSUM packet gets its checksum filled in."""
    if frame[1] != VIRTIO_NET_HDR_GSO_NONE:
        return None
    if not frame[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM:
        return frame[VNET_HDR_LEN:]
    _f, _g, _hl, _gs, start, off = _HDR.unpack_from(frame)
    pkt = bytearray(frame[VNET_HDR_LEN:])
    if start + off + 2 > len(pkt):
        return None
    data = bytes(pkt[start:]) + (b"\0" if (len(pkt) - start) & 1 else b"")
    s = _fold(int.from_bytes(data, "big") % 0xFFFF + 0) if data else 0
    # the field already holds the pseudo-header sum, so summing from csum_start covers it
    struct.pack_into("!H", pkt, start + off, (~s) & 0xFFFF or 0xFFFF)
    return bytes(pkt)

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


def _emit(run: list, out: list) -> None:
    """Turn one run of joinable segments into one frame (a single segment goes in as it is)."""
    first = run[0][0]
    if len(run) == 1:
        out.append(PLAIN_VALID + first)
        return
    v6, ip_len, th, hl = run[0][1], run[0][2], run[0][3], run[0][4]
    payload_total = sum(len(p) - hl for p, *_ in run)
    gso_size = len(first) - hl
    tcp_len = hl - th + payload_total
    flags = first[th + 13] | (run[-1][0][th + 13] & TCP_PSH)
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
    hdr = _HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, gso_type, hl, gso_size, th, 16)
    parts = [hdr, ip, tcp]
    parts.extend(memoryview(p)[hl:] for p, *_ in run)
    out.append(b"".join(parts))


def coalesce(packets: list[bytes]) -> list[bytes]:
    """IP packets (as decrypted, in order) -> TUN frames with virtio-net headers, TCP runs joined."""
    out: list[bytes] = []
    run: list = []  # [(packet, v6, ip_len, tcp_offset, header_len)], all of one flow
    key = b""
    next_seq = 0
    seg = 0
    size = 0
    for p in packets:
        n = len(p)
        if n < 40:
            if run:
                _emit(run, out)
                run = []
            out.append(PLAIN_VALID + p)
            continue
        ver = p[0] >> 4
        if ver == 4:
            v6 = False
            # no IP options, TCP, not a fragment (MF clear, offset zero)
            if p[0] != 0x45 or p[9] != 6 or (p[6] & 0x3F) or p[7]:
                th = -1
            else:
                th = 20
        elif ver == 6:
            v6 = True
            th = 40 if p[6] == 6 else -1
        else:
            th = -1
        if th < 0:
            if run:
                _emit(run, out)
                run = []
            out.append(PLAIN_VALID + p)
            continue
        hl = th + ((p[th + 12] >> 4) << 2)
        flags = p[th + 13]
        plen = n - hl
        if plen <= 0 or flags & ~(TCP_ACK | TCP_PSH) or hl > n:
            if run:
                _emit(run, out)
                run = []
            out.append(PLAIN_VALID + p)
            continue
        seq = int.from_bytes(p[th + 4:th + 8], "big")
        # what must match inside a run: version/TOS (v4: first 2 bytes; v6: first 4), TTL/hop limit, addresses,
        # ports, ack, window and options (the TCP header minus seq, flags, checksum)
        if v6:
            k = p[0:4] + p[7:40] + p[th:th + 4] + p[th + 8:th + 13] + p[th + 14:th + 16] + p[th + 18:hl]
        else:
            k = p[0:2] + p[8:9] + p[12:20] + p[th:th + 4] + p[th + 8:th + 13] + p[th + 14:th + 16] + p[th + 18:hl]
        if (run and k == key and seq == next_seq and plen <= seg and size + plen <= MAX_SUPER
                and len(run) < MAX_SEGMENTS):
            run.append((p, v6, 0, th, hl))
            size += plen
            next_seq = (seq + plen) & 0xFFFFFFFF
            if plen < seg or flags & TCP_PSH:
                _emit(run, out)
                run = []
            continue
        if run:
            _emit(run, out)
        run = [(p, v6, 0, th, hl)]
        key, seg, size = k, plen, n
        next_seq = (seq + plen) & 0xFFFFFFFF
        if flags & TCP_PSH:
            _emit(run, out)
            run = []
    if run:
        _emit(run, out)
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

"""Receive-side TCP coalescing for the TUN device (virtio-net GSO frames), checked field by field."""

from __future__ import annotations

import ipaddress
import struct

from wiregate.wireguard import offload
from wiregate.wireguard.offload import VNET_HDR_LEN, coalesce

A4, B4 = ipaddress.ip_address("198.51.100.1").packed, ipaddress.ip_address("198.51.100.2").packed
A6, B6 = ipaddress.ip_address("fd00:51::1").packed, ipaddress.ip_address("fd00:51::2").packed
OPTS = b"\x01\x01\x08\x0a" + bytes(8)  # NOP NOP timestamps: a 32-byte TCP header as Linux sends it


def tcp(seq: int, payload: bytes, flags: int = 0x10, v6: bool = False, sport: int = 1000, ack: int = 77) -> bytes:
    th = struct.pack("!HHIIBBHHH", sport, 2000, seq, ack, 8 << 4, flags, 500, 0, 0) + OPTS
    if v6:
        return struct.pack("!IHBB16s16s", 6 << 28, len(th) + len(payload), 6, 64, A6, B6) + th + payload
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(th) + len(payload), 1, 0x4000, 64, 6, 0, A4, B4) + th + payload


def ones_sum(data: bytes) -> int:
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def vnet(frame: bytes) -> tuple:
    return struct.unpack("<BBHHHH", frame[:VNET_HDR_LEN])


def test_contiguous_segments_of_one_flow_become_one_gso_frame():
    segs = [tcp(1000 + i * 1200, bytes([i]) * 1200) for i in range(5)] + [tcp(7000, b"end", flags=0x18)]
    (frame,) = coalesce(segs)
    flags, gso_type, hdr_len, gso_size, csum_start, csum_offset = vnet(frame)
    assert (flags, gso_type, hdr_len, gso_size, csum_start, csum_offset) == (
        offload.VIRTIO_NET_HDR_F_NEEDS_CSUM, offload.VIRTIO_NET_HDR_GSO_TCPV4, 52, 1200, 20, 16)
    pkt = frame[VNET_HDR_LEN:]
    assert struct.unpack("!H", pkt[2:4])[0] == len(pkt) == 52 + 6003
    assert ones_sum(pkt[:20]) == 0xFFFF  # IPv4 header checksum is valid
    assert pkt[52:] == b"".join(bytes([i]) * 1200 for i in range(5)) + b"end"
    assert pkt[20 + 4:20 + 8] == (1000).to_bytes(4, "big") and pkt[20 + 13] == 0x18  # first seq, PSH kept
    # partial checksum: the folded pseudo-header sum for the whole TCP length
    pseudo = ones_sum(A4 + B4 + struct.pack("!HH", 6, len(pkt) - 20))
    assert struct.unpack("!H", pkt[36:38])[0] == pseudo


def test_ipv6_segments_are_joined_as_tcpv6():
    segs = [tcp(5 + i * 1000, b"x" * 1000, v6=True) for i in range(3)]
    (frame,) = coalesce(segs)
    assert vnet(frame)[1:5] == (offload.VIRTIO_NET_HDR_GSO_TCPV6, 72, 1000, 40)
    pkt = frame[VNET_HDR_LEN:]
    assert struct.unpack("!H", pkt[4:6])[0] == len(pkt) - 40 == 32 + 3000


def test_runs_break_on_gap_other_flow_shorter_segment_and_control_flags():
    segs = [
        tcp(0, b"a" * 100), tcp(100, b"b" * 100),  # run 1
        tcp(300, b"c" * 100),  # gap: new run
        tcp(400, b"d" * 100, sport=1001),  # other flow
        tcp(500, b"e" * 50, sport=1001), tcp(550, b"f" * 50, sport=1001),  # shorter: ends the run
    ]
    frames = coalesce(segs)
    sizes = [len(f) - VNET_HDR_LEN - 52 for f in frames]
    # 'e' (shorter) closes run [d, e]; 'f' starts a new one
    assert sizes == [200, 100, 150, 50]
    fin = coalesce([tcp(0, b"a" * 100), tcp(100, b"b" * 100, flags=0x11)])
    assert len(fin) == 2 and vnet(fin[1])[0] == offload.VIRTIO_NET_HDR_F_DATA_VALID
    other_ack = coalesce([tcp(0, b"a" * 100), tcp(100, b"b" * 100, ack=78)])
    assert len(other_ack) == 2


def test_non_tcp_and_single_packets_go_in_unchanged_marked_valid():
    udp = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 36, 1, 0, 64, 17, 0, A4, B4) + bytes(16)
    one = tcp(0, b"a" * 10)
    frames = coalesce([udp, one, b"\x45short"])
    assert [f[VNET_HDR_LEN:] for f in frames] == [udp, one, b"\x45short"]
    assert all(vnet(f) == (offload.VIRTIO_NET_HDR_F_DATA_VALID, 0, 0, 0, 0, 0) for f in frames)


def test_run_stops_below_64k():
    segs = [tcp(i * 1400, b"x" * 1400) for i in range(60)]
    frames = coalesce(segs)
    assert all(len(f) - VNET_HDR_LEN <= 65535 for f in frames)
    assert sum(len(f) - VNET_HDR_LEN - 52 for f in frames) == 60 * 1400 and len(frames) == 2


def test_frame_read_with_partial_checksum_is_completed():
    pkt = bytearray(tcp(0, b"hello world!"))
    pseudo = ones_sum(A4 + B4 + struct.pack("!HH", 6, len(pkt) - 20))
    struct.pack_into("!H", pkt, 36, pseudo)
    frame = struct.pack("<BBHHHH", offload.VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, 20, 16) + bytes(pkt)
    out = offload.strip_header(frame)
    # a valid TCP checksum makes the sum over pseudo-header and segment 0xFFFF
    assert ones_sum(A4 + B4 + struct.pack("!HH", 6, len(out) - 20) + out[20:]) == 0xFFFF
    assert offload.strip_header(struct.pack("<BBHHHH", 0, 1, 0, 0, 0, 0) + bytes(pkt)) is None

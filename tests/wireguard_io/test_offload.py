"""Receive-side TCP coalescing for the TUN device (virtio-net GSO frames), checked field by field."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from hypothesis import given, settings
from hypothesis import strategies as st

from wiregate.wireguard import offload
from wiregate.wireguard.offload import VNET_HDR_LEN, coalesce

A4, B4 = ipaddress.ip_address("198.51.100.1").packed, ipaddress.ip_address("198.51.100.2").packed
A6, B6 = ipaddress.ip_address("fd00:51::1").packed, ipaddress.ip_address("fd00:51::2").packed
OPTS = b"\x01\x01\x08\x0a" + bytes(8)  # NOP NOP timestamps: a 32-byte TCP header as Linux sends it


def tcp(seq: int, payload: bytes, flags: int = 0x10, v6: bool = False, sport: int = 1000, ack: int = 77) -> bytes:
    th = struct.pack("!HHIIBBHHH", sport, 2000, seq, ack, 8 << 4, flags, 500, 0, 0) + OPTS
    if v6:
        return struct.pack("!IHBB16s16s", 6 << 28, len(th) + len(payload), 6, 64, A6, B6) + th + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(th) + len(payload), 1, 0x4000, 64, 6, 0, A4, B4)
    return ip + th + payload


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


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=120), max_size=20))
def test_any_bytes_give_frames_never_an_exception(packets):
    # decrypted packets come from authenticated peers but may still be garbage; a bad one must not sink the batch
    frames = coalesce([b"\x45" + p for p in packets] + [b"\x60" + p for p in packets] + packets)
    assert all(len(f) >= VNET_HDR_LEN for f in frames)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 1400), st.sampled_from([0x10, 0x18, 0x11]), st.booleans(),
                          st.booleans()), min_size=1, max_size=40))
def test_splitting_the_frames_again_gives_back_every_payload_in_order(spec):
    """Whatever the run boundaries, GSO frames cut at gso_size hold exactly the original payloads, in order."""
    packets, seq = [], 0
    for i, (size, flags, gap, v6) in enumerate(spec):
        seq += 7 if gap else 0
        packets.append(tcp(seq, bytes([i % 256]) * size, flags=flags, v6=v6))
        seq += size
    expect = [p[(72 if p[0] >> 4 == 6 else 52):] for p in packets]
    got = []
    for f in coalesce(packets):
        flags, gso_type, hdr_len, gso_size, _, _ = vnet(f)
        pkt = f[VNET_HDR_LEN:]
        if gso_type == 0:
            got.append(pkt[(72 if pkt[0] >> 4 == 6 else 52):])
            continue
        body = pkt[hdr_len:]
        got.extend(body[i:i + gso_size] for i in range(0, len(body), gso_size))
    assert got == expect


@pytest.mark.parametrize("v6", [False, True])
def test_every_header_byte_that_must_match_breaks_a_run_and_the_others_do_not(v6):
    """Mutate one header byte of the second segment: bytes the kernel would copy from the first segment into every
    segment it cuts (addresses, ports, TOS/TTL, ack, window, options...) must keep them apart; per-segment bytes
    (lengths, IP id and checksum, TCP checksum) must not."""
    first, second = tcp(0, b"a" * 100, v6=v6), tcp(100, b"b" * 100, v6=v6)
    t = 40 if v6 else 20
    h = t + 32
    if v6:
        free = {4, 5, t + 16, t + 17}
        other = {6} | set(range(t + 4, t + 8)) | {t + 12, t + 13}  # next header, seq, data offset, flags
    else:
        free = {2, 3, 4, 5, 10, 11, t + 16, t + 17}
        other = {0, 6, 7, 9} | set(range(t + 4, t + 8)) | {t + 12, t + 13}  # IHL, fragments, protocol, seq, ...
    assert len(coalesce([first, second])) == 1
    for i in range(h):
        if i in other:
            continue
        mutated = bytearray(second)
        mutated[i] ^= 0x01
        frames = coalesce([first, bytes(mutated)])
        assert len(frames) == (1 if i in free else 2), f"byte {i}"

"""Replay protection (transport window, TAI64N), MAC1/MAC2 and cookie replies, wrong keys, hostile datagrams."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st
from wgcore_helpers import ADDR_A, ADDR_B, KEY_A, KEY_B, Clock, Pair, ip4

from wiregate.wireguard.constants import REJECT_AFTER_MESSAGES, REKEY_TIMEOUT, UNDER_LOAD_HANDSHAKES
from wiregate.wireguard.device import Device, PeerConfig
from wiregate.wireguard.events import HandshakeComplete
from wiregate.wireguard.keys import generate_private_key, public_key
from wiregate.wireguard.replay import WINDOW_SIZE, ReplayFilter


def test_replayed_data_packet_is_dropped() -> None:
    p = Pair()
    p.connect()
    p.a.send_packets([ip4("10.0.0.1", "10.0.0.2", bytes([i])) for i in range(3)], p.now)
    out = [dg for dg, _ in p.a.take_datagrams()]
    p.b.receive_datagrams([(out[2], ADDR_A), (out[0], ADDR_A)], p.now)  # reordered: both fine
    p.b.receive_datagrams([(out[0], ADDR_A), (out[2], ADDR_A), (out[1], ADDR_A)], p.now)
    got = p.b.take_packets()
    assert got == [ip4("10.0.0.1", "10.0.0.2", bytes([i])) for i in (2, 0, 1)]
    assert p.b.drops["replay"] == 2


def test_replay_window_is_8128_and_rejects_old_and_duplicate_counters() -> None:
    f = ReplayFilter()
    assert WINDOW_SIZE == 8128
    assert f.validate(0, REJECT_AFTER_MESSAGES) and not f.validate(0, REJECT_AFTER_MESSAGES)
    assert f.validate(10_000, REJECT_AFTER_MESSAGES)
    assert f.validate(10_000 - WINDOW_SIZE, REJECT_AFTER_MESSAGES)  # oldest still inside the window
    assert not f.validate(10_000 - WINDOW_SIZE - 1, REJECT_AFTER_MESSAGES)
    assert not f.validate(10_000 - WINDOW_SIZE, REJECT_AFTER_MESSAGES)  # seen
    assert f.validate(9_999, REJECT_AFTER_MESSAGES) and not f.validate(9_999, REJECT_AFTER_MESSAGES)
    assert f.validate(10_000 + 200_000, REJECT_AFTER_MESSAGES)  # a big jump clears the ring
    assert f.validate(10_000 + 200_000 - 64, REJECT_AFTER_MESSAGES)
    assert not f.validate(REJECT_AFTER_MESSAGES, REJECT_AFTER_MESSAGES)
    # against a plain set model on a random walk
    g, seen, hi = ReplayFilter(), set(), 0
    rnd = random.Random(5)
    for _ in range(5000):
        c = max(0, hi + rnd.randint(-9000, 300))
        expect = c not in seen and (c > hi or hi - c <= WINDOW_SIZE)
        assert g.validate(c, REJECT_AFTER_MESSAGES) == expect
        if expect:
            seen.add(c)
            hi = max(hi, c)


def _initiator(seed: int, wall: float) -> Device:
    d = Device(KEY_A, wall_clock=Clock(wall), rng=random.Random(seed).randbytes)
    d.add_peer(PeerConfig(public_key(KEY_B), allowed_ips=("10.0.0.2/32",), endpoint=ADDR_B))
    d.send_packet(ip4("10.0.0.1", "10.0.0.2"), 0.0)
    return d


def test_old_or_duplicate_initiation_is_rejected_by_its_timestamp_and_flood_limit() -> None:
    b = Device(KEY_B, rng=random.Random(1).randbytes)
    b.add_peer(PeerConfig(public_key(KEY_A), allowed_ips=("10.0.0.1/32",)))
    old = _initiator(1, 1_700_000_000.0).take_datagrams()[0][0]
    new = _initiator(2, 1_700_000_001.0).take_datagrams()[0][0]
    newer = _initiator(3, 1_700_000_002.0).take_datagrams()[0][0]
    newest = _initiator(4, 1_700_000_003.0).take_datagrams()[0][0]
    b.receive_datagram(new, ADDR_A, 10.0)
    assert len(b.take_datagrams()) == 1  # answered
    b.receive_datagram(new, ADDR_A, 11.0)  # exact duplicate
    b.receive_datagram(old, ADDR_A, 12.0)  # older timestamp
    assert b.take_datagrams() == [] and b.drops["initiation_replay"] == 2
    b.receive_datagram(newer, ADDR_A, 12.0)
    assert len(b.take_datagrams()) == 1
    b.receive_datagram(newest, ADDR_A, 12.015)  # newer but within 20 ms of the last one
    assert b.take_datagrams() == [] and b.drops["initiation_flood"] == 1
    b.receive_datagram(newest, ADDR_A, 12.03)
    assert len(b.take_datagrams()) == 1


def test_cookie_reply_under_load_then_initiator_succeeds_with_mac2() -> None:
    p = Pair()
    p.b.under_load = True
    p.a.send_packet(ip4("10.0.0.1", "10.0.0.2", b"x"), p.now)
    (init, _), = p.a.take_datagrams()
    assert init[-16:] == bytes(16)  # no cookie yet
    p.b.receive_datagram(init, ADDR_A, p.now)
    (reply, to), = p.b.take_datagrams()
    assert reply[0] == 3 and len(reply) == 64 and to == ADDR_A and reply[4:8] == init[4:8]
    p.a.receive_datagram(reply, ADDR_B, p.now)
    assert p.a.take_datagrams() == []  # the cookie is kept for the next try, nothing is sent at once
    p.advance(REKEY_TIMEOUT + 0.4)
    (init2, _), = p.a.take_datagrams()
    assert init2[-16:] != bytes(16)  # MAC2 now set
    # the cookie is bound to the source address: from elsewhere it earns only another cookie
    p.b.receive_datagram(init2, ("203.0.113.9", 4000), p.now)
    assert p.b.take_datagrams()[0][0][0] == 3
    p.b.receive_datagram(init2, ADDR_A, p.now + 0.1)
    (resp, _), = p.b.take_datagrams()
    assert resp[0] == 2
    p.now += 0.1
    p.a.receive_datagram(resp, ADDR_B, p.now)
    assert HandshakeComplete(p.b.public_key) in p.a.take_events()
    p.pump()
    assert p.b.take_packets() == [ip4("10.0.0.1", "10.0.0.2", b"x")]


def test_a_burst_of_handshakes_puts_the_responder_under_load() -> None:
    p = Pair()
    p.a.send_packet(ip4("10.0.0.1", "10.0.0.2"), p.now)
    (init, _), = p.a.take_datagrams()
    assert not p.b.under_load
    for i in range(UNDER_LOAD_HANDSHAKES + 5):
        p.b.receive_datagram(init, ADDR_A, p.now + i * 0.001)  # valid MAC1, replays after the first
    cookies = [dg for dg, _ in p.b.take_datagrams() if dg[0] == 3]
    assert p.b.under_load and len(cookies) >= 4
    # a forged cookie reply (wrong key) is not taken
    forged = bytearray(cookies[0])
    forged[40] ^= 1
    p.a.receive_datagram(bytes(forged), ADDR_B, p.now)
    assert p.a.drops["cookie_reply"] == 1


def test_wrong_key_never_gets_a_session() -> None:
    stranger = generate_private_key()
    # B does not know A's key: the initiation decrypts but names an unknown peer
    b = Device(KEY_B)
    b.add_peer(PeerConfig(public_key(stranger), allowed_ips=("10.0.0.1/32",)))
    a = _initiator(9, 1_700_000_000.0)
    b.receive_datagram(a.take_datagrams()[0][0], ADDR_A, 1.0)
    assert b.take_datagrams() == [] and b.drops["initiation_unknown_peer"] == 1
    # A has a wrong key for B: MAC1 is computed over the wrong key and B drops it unread
    a2 = Device(KEY_A)
    a2.add_peer(PeerConfig(public_key(stranger), allowed_ips=("10.0.0.2/32",), endpoint=ADDR_B))
    a2.send_packet(ip4("10.0.0.1", "10.0.0.2"), 0.0)
    b2 = Device(KEY_B)
    b2.add_peer(PeerConfig(public_key(KEY_A), allowed_ips=("10.0.0.1/32",)))
    b2.receive_datagram(a2.take_datagrams()[0][0], ADDR_A, 1.0)
    assert b2.take_datagrams() == [] and b2.drops["mac1"] == 1 and b2.peers[public_key(KEY_A)].endpoint is None


def test_bad_and_short_datagrams_are_dropped_and_counted() -> None:
    p = Pair()
    p.connect()
    p.a.send_packet(ip4("10.0.0.1", "10.0.0.2"), p.now)
    (good, _), = p.a.take_datagrams()
    init_len = bytes([1, 0, 0, 0]) + bytes(144)
    cases = [b"", b"\x04", good[:31], b"\x05\x00\x00\x00" + bytes(60), b"\x04\x01\x00\x00" + good[4:],
             good[:-1] + bytes([good[-1] ^ 1]), init_len, init_len + b"x", bytes([2, 0, 0, 0]) + bytes(88),
             bytes([3, 0, 0, 0]) + bytes(60), b"\x01\x00\x00\x00" + bytes(143)]
    for c in cases:
        p.b.receive_datagram(c, ("203.0.113.5", 1), p.now)
    assert p.b.take_packets() == [] and p.b.take_datagrams() == []
    assert sum(p.b.drops.values()) == len(cases)
    assert p.peer_a.endpoint == ADDR_A  # nothing unauthenticated moved the endpoint
    p.b.receive_datagram(good, ADDR_A, p.now)
    assert p.b.take_packets() == [ip4("10.0.0.1", "10.0.0.2")]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([b"\x01\x00\x00\x00", b"\x02\x00\x00\x00", b"\x03\x00\x00\x00",
                                                 b"\x04\x00\x00\x00", b""]))
def test_arbitrary_datagrams_never_raise(data: bytes, prefix: bytes) -> None:
    d = Device(KEY_B, rng=random.Random(0).randbytes)
    d.add_peer(PeerConfig(public_key(KEY_A), allowed_ips=("0.0.0.0/0",), endpoint=ADDR_A))
    d.receive_datagram(prefix + data, ADDR_A, 1.0)
    assert d.take_packets() == []
    assert all(dg[0] == 3 for dg, _ in d.take_datagrams())


@settings(max_examples=150, deadline=None)
@given(which=st.sampled_from(["init", "resp", "data"]), pos=st.integers(min_value=0, max_value=147),
       bit=st.integers(min_value=0, max_value=7))
def test_any_flipped_bit_in_a_handshake_or_data_message_is_rejected(which: str, pos: int, bit: int) -> None:
    p = Pair()
    p.a.send_packet(ip4("10.0.0.1", "10.0.0.2", b"payload"), p.now)
    (init, _), = p.a.take_datagrams()
    if which == "init":
        msg, target = init, p.b
    else:
        p.b.receive_datagram(init, ADDR_A, p.now)
        (resp, _), = p.b.take_datagrams()
        if which == "resp":
            msg, target = resp, p.a
        else:
            p.a.receive_datagram(resp, ADDR_B, p.now)
            (data, _), = p.a.take_datagrams()
            msg, target = data, p.b
    pos %= len(msg)
    bad = bytearray(msg)
    bad[pos] ^= 1 << bit
    before = sum(target.drops.values())
    target.receive_datagram(bytes(bad), ADDR_A if target is p.b else ADDR_B, p.now)
    if which != "data" and pos >= len(msg) - 16:
        return  # MAC2 is only checked under load: flipping it is harmless here (the cookie tests cover it)
    assert target.take_packets() == [] and target.take_events() == []
    assert sum(target.drops.values()) == before + 1
    assert [dg for dg, _ in target.take_datagrams()] == []


def test_under_load_handshakes_from_one_address_are_rate_limited() -> None:
    p = Pair()
    p.b.under_load = True
    p.a.send_packet(ip4("10.0.0.1", "10.0.0.2"), p.now)
    p.pump()  # initiation -> cookie reply, which A keeps
    p.advance(REKEY_TIMEOUT + 0.4)
    (init, _), = p.a.take_datagrams()
    for i in range(10):  # the same MAC2-valid initiation, replayed fast from one address
        p.b.receive_datagram(init, ADDR_A, p.now + i * 0.001)
    assert [dg[0] for dg, _ in p.b.take_datagrams()] == [2]  # one response
    # burst of 5 passes the limiter (1 answered, 4 refused as replays), the other 5 are limited
    assert p.b.drops["initiation_replay"] == 4 and p.b.drops["ratelimited"] == 5

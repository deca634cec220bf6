"""Budgets for handshake work under a flood (issue 11 finding 5): token buckets with a fake clock, cookie replies
per source and overall, handshake messages processed per call, and a real peer still getting through."""

from __future__ import annotations

import random

import pytest
from wgcore_helpers import ADDR_A, KEY_A, KEY_B, Clock, Pair, ip4

from wiregate.wireguard.constants import (
    COOKIE_REPLIES_PER_SECOND, COOKIE_REPLIES_PER_SOURCE, COOKIE_REPLY_BURST, COOKIE_REPLY_SOURCE_BURST,
    HANDSHAKES_PER_BATCH, REKEY_TIMEOUT,
)
from wiregate.wireguard.device import Device, PeerConfig
from wiregate.wireguard.events import HandshakeComplete
from wiregate.wireguard.keys import public_key
from wiregate.wireguard.ratelimit import SourceLimiter, TokenBucket, source_key

FLOOD = 20_000  # valid-MAC1 initiations in one second, the rate that saturated the gateway


def test_token_bucket_starts_full_refills_at_its_rate_and_caps_at_its_burst() -> None:
    b = TokenBucket(10, 3)
    assert [b.allow(0.0) for _ in range(4)] == [True, True, True, False]
    assert b.ready_at(1) == pytest.approx(0.1)
    assert not b.allow(0.05)
    assert b.allow(0.1 + 1e-12)  # exactly when ready_at said, despite float rounding
    assert b.available(100.0) == 3  # capped at the burst however long it rested
    assert b.ready_at(5) == 100.0  # asking for more than the burst waits only for the burst
    with pytest.raises(ValueError):
        TokenBucket(0, 1)


def test_source_limiter_counts_ipv4_hosts_and_ipv6_slash64s_and_bounds_its_table() -> None:
    assert source_key("192.0.2.1") != source_key("192.0.2.2")
    assert source_key("fd00:1:2:3::1") == source_key("fd00:1:2:3:ffff::9")  # same /64
    assert source_key("fd00:1:2:4::1") != source_key("fd00:1:2:3::1")
    assert source_key("::ffff:192.0.2.1") == source_key("192.0.2.1")
    lim = SourceLimiter(20, 5, max_sources=100)
    assert sum(lim.allow("192.0.2.1", 0.0) for _ in range(10)) == 5
    assert sum(lim.allow("fd00:1:2:3::%x" % i, 0.0) for i in range(10)) == 5
    assert lim.allow("192.0.2.1", 0.05)  # one token back after 50 ms at 20/s
    assert not lim.allow("192.0.2.1", 0.06)
    for i in range(300):  # a spoofed flood of newcomers: the table never exceeds its bound
        lim.allow(f"198.51.100.{i % 250}", 1.0 + i * 1e-4)
        lim.allow(f"fd00:9:{i:x}::1", 1.0 + i * 1e-4)
    assert len(lim) <= 100
    lim.allow("203.0.113.1", 10.0)  # a second later every idle entry is full again: swept, room for newcomers
    assert len(lim) == 1


def _flood_messages(n: int) -> list[bytes]:
    """Distinct initiations with a valid MAC1 for B (anyone who knows B's public key can make them), from a key
    B does not know."""
    out = []
    stranger = random.Random(99).randbytes(32)
    for i in range(n):
        d = Device(stranger, wall_clock=Clock(1_700_000_000.0 + i), rng=random.Random(i).randbytes)
        d.add_peer(PeerConfig(public_key(KEY_B), allowed_ips=("10.0.0.2/32",), endpoint=("192.0.2.9", 1)))
        d.send_packet(ip4("10.0.0.1", "10.0.0.2"), 0.0)
        out.append(d.take_datagrams()[0][0])
    return out


@pytest.fixture(scope="module")
def flood_messages() -> list[bytes]:
    return _flood_messages(50)


def _flood(dev: Device, msgs: list[bytes], sources: list[tuple[str, int]], start: float) -> int:
    """FLOOD initiations spread over one second in batches of 256; returns the cookie replies sent."""
    cookies = 0
    per = 256
    for k in range(0, FLOOD, per):
        now = start + k / FLOOD
        dev.receive_datagrams([(msgs[(k + j) % len(msgs)], sources[(k + j) % len(sources)]) for j in range(per)], now)
        cookies += sum(1 for dg, _ in dev.take_datagrams() if dg[0] == 3)
    return cookies


def test_a_valid_mac1_flood_from_one_source_gets_a_handful_of_cookie_replies(flood_messages: list[bytes]) -> None:
    dev = Device(KEY_B, rng=random.Random(3).randbytes)
    dev.add_peer(PeerConfig(public_key(KEY_A), allowed_ips=("10.0.0.1/32",)))
    cookies = _flood(dev, flood_messages, [("203.0.113.7", 4000)], 10.0)
    # before the budget every one of the 20,000 was answered (a cookie costs ~40 MAC1 checks)
    assert 0 < cookies <= COOKIE_REPLY_SOURCE_BURST + COOKIE_REPLIES_PER_SOURCE + 1
    assert dev.drops["cookie_budget"] >= FLOOD - cookies - 200


def test_a_valid_mac1_flood_from_many_sources_is_held_by_the_overall_cookie_budget(
        flood_messages: list[bytes]) -> None:
    dev = Device(KEY_B, rng=random.Random(3).randbytes)
    dev.add_peer(PeerConfig(public_key(KEY_A), allowed_ips=("10.0.0.1/32",)))
    sources = [(f"fd00:{i >> 8:x}:{i & 255:x}::1", 4000) for i in range(FLOOD)]  # every one its own /64
    cookies = _flood(dev, flood_messages, sources, 10.0)
    assert COOKIE_REPLIES_PER_SECOND // 2 < cookies <= COOKIE_REPLY_BURST + COOKIE_REPLIES_PER_SECOND + 1


def test_a_real_peer_still_completes_its_handshake_during_a_flood(flood_messages: list[bytes]) -> None:
    p = Pair()
    p.a.send_packet(ip4("10.0.0.1", "10.0.0.2", b"x"), p.now)
    (init, _), = p.a.take_datagrams()
    flooders = [(f"198.51.100.{i}", 5000 + i) for i in range(1, 250)]
    # the flood puts B under load; A's first initiation (no MAC2 yet) earns it a cookie within its own budget
    p.b.receive_datagrams([(m, flooders[i % len(flooders)]) for i, m in enumerate(flood_messages * 4)], p.now)
    p.b.take_datagrams()
    assert p.b.under_load
    p.b.receive_datagram(init, ADDR_A, p.now)
    cookie = [dg for dg, to in p.b.take_datagrams() if to == ADDR_A]
    assert len(cookie) == 1 and cookie[0][0] == 3
    p.a.receive_datagram(cookie[0], p.b_addr, p.now)
    t_end = p.now + REKEY_TIMEOUT + 0.5
    while p.now < t_end:  # the flood goes on at 20,000/s while A waits for its retry
        p.now += 0.01
        p.wall.t += 0.01
        p.b.receive_datagrams([(flood_messages[i % 50], flooders[i % len(flooders)]) for i in range(200)], p.now)
        p.b.take_datagrams()
        for d in (p.a, p.b):  # as the interface loop does
            dl = d.next_deadline()
            if dl is not None and dl <= p.now:
                d.handle_timer(p.now)
        p.pump()
    assert HandshakeComplete(p.b.public_key) in p.a.take_events()
    p.pump()
    assert p.b.take_packets() == [ip4("10.0.0.1", "10.0.0.2", b"x")]


def test_handshake_work_per_call_is_bounded_and_the_rest_waits_for_the_timer() -> None:
    keys = [random.Random(100 + i).randbytes(32) for i in range(40)]
    b = Device(KEY_B, rng=random.Random(1).randbytes)
    inits = []
    for i, k in enumerate(keys):
        b.add_peer(PeerConfig(public_key(k), allowed_ips=(f"10.1.0.{i + 1}/32",)))
        a = Device(k, wall_clock=Clock(1_700_000_000.0), rng=random.Random(i).randbytes)
        a.add_peer(PeerConfig(b.public_key, allowed_ips=("10.0.0.2/32",), endpoint=("192.0.2.2", 51820)))
        a.send_packet(ip4(f"10.1.0.{i + 1}", "10.0.0.2"), 0.0)
        inits.append((a.take_datagrams()[0][0], (f"192.0.2.{i + 10}", 51820)))
    now = 50.0
    b.receive_datagrams(inits, now)  # one batch of 40 initiations: ~11 ms of X25519 work if done at once
    answered = [len(b.take_datagrams())]
    assert answered == [HANDSHAKES_PER_BATCH] and b.queued_handshakes == 40 - HANDSHAKES_PER_BATCH
    while b.queued_handshakes:
        dl = b.next_deadline()
        assert dl is not None and dl <= now + 0.1  # the queue asks for the timer, soon
        now = max(now, dl)
        b.handle_timer(now)
        answered.append(len(b.take_datagrams()))
    assert max(answered) <= HANDSHAKES_PER_BATCH and sum(answered) == 40
    assert all(dg[0] == 2 for dg, _ in b.take_datagrams()) and not b.drops

"""Timer rules (whitepaper 6; wireguard-go timers.go) driven by a fake clock."""

from __future__ import annotations

from itertools import pairwise

from wgcore_helpers import Pair, ip4, kinds, run_until

from wiregate.wireguard.constants import (
    KEEPALIVE_TIMEOUT, MAX_TIMER_HANDSHAKES, REJECT_AFTER_TIME, REKEY_AFTER_TIME, REKEY_ATTEMPT_TIME, REKEY_TIMEOUT,
)
from wiregate.wireguard.events import HandshakeComplete, HandshakeGaveUp, KeysZeroed


def _initiations_sent(p: Pair, until: float) -> list[float]:
    """Times at which A put an initiation on the wire while B stays silent."""
    times = []
    while p.now < until:
        dl = p.a.next_deadline()
        if dl is None or dl > until:
            break
        p.now = max(p.now, dl)
        p.wall.t = 1_700_000_000.0 + p.now
        p.a.handle_timer(p.now)
        times += [p.now for dg, _ in p.a.take_datagrams() if dg[0] == 1]
    return times


def test_initiation_is_retried_every_rekey_timeout_with_jitter_then_given_up() -> None:
    p = Pair()
    start = p.now
    p.a.send_packet(ip4("10.0.0.1", "10.0.0.2"), p.now)
    assert [dg[0] for dg, _ in p.a.take_datagrams()] == [1]
    times = [start] + _initiations_sent(p, start + 200)
    gaps = [b - a for a, b in pairwise(times)]
    assert all(REKEY_TIMEOUT <= g < REKEY_TIMEOUT + 0.334 for g in gaps), gaps
    assert len(set(round(g, 3) for g in gaps)) > 1  # jittered, not a fixed period
    # wireguard-go and the kernel: MAX_TIMER_HANDSHAKES + 2 tries, so initiations stop once
    # REKEY_ATTEMPT_TIME (90 s) has passed (last try before 90 s + 2 x REKEY_TIMEOUT with jitter)
    assert len(times) == MAX_TIMER_HANDSHAKES + 2
    assert REKEY_ATTEMPT_TIME <= times[-1] - start < REKEY_ATTEMPT_TIME + 2 * REKEY_TIMEOUT
    assert HandshakeGaveUp(p.b.public_key) in p.a.take_events()
    assert not p.peer_b.staged  # queued packets were dropped on giving up
    # new traffic starts a fresh round
    p.now += 1
    p.a.send_packet(ip4("10.0.0.1", "10.0.0.2"), p.now)
    assert [dg[0] for dg, _ in p.a.take_datagrams()] == [1]


def test_passive_keepalive_after_keepalive_timeout_when_data_received_and_nothing_sent() -> None:
    p = Pair()
    p.connect()
    run_until(p, p.now + KEEPALIVE_TIMEOUT - 0.01)
    assert p.b.take_datagrams() == [] and kinds(p.wire, "b->a").count(0) == 0
    p.advance(0.02)
    out = p.b.take_datagrams()
    assert len(out) == 1 and len(out[0][0]) == 32 and out[0][0][0] == 4  # a keepalive
    # B replying with data instead cancels the keepalive
    q = Pair(seed=3)
    q.connect()
    q.advance(5)
    q.b.send_packet(ip4("10.0.0.2", "10.0.0.1", b"reply"), q.now)
    q.pump()
    run_until(q, q.now + KEEPALIVE_TIMEOUT + 1)
    assert kinds(q.wire, "b->a")[-1] == 4  # the data packet, no keepalive after it


def test_new_handshake_when_data_sent_and_nothing_received_for_15_seconds() -> None:
    p = Pair()
    p.connect()
    p.advance(30)
    p.pump()
    wire_before = len(p.wire)
    p.a.send_packet(ip4("10.0.0.1", "10.0.0.2", b"lost"), p.now)
    p.a.take_datagrams()  # lost on the way
    t0 = p.now
    p.advance(KEEPALIVE_TIMEOUT + REKEY_TIMEOUT - 0.01)
    assert p.a.take_datagrams() == []
    p.advance(0.34)
    out = p.a.take_datagrams()
    assert [dg[0] for dg, _ in out] == [1] and p.now - t0 < 15.35
    assert len(p.wire) == wire_before


def test_initiator_rekeys_after_rekey_after_time_when_sending() -> None:
    p = Pair()
    p.connect()
    first = p.peer_b.keypairs.current
    run_until(p, p.now + REKEY_AFTER_TIME - 1)
    p.a.send_packet(ip4("10.0.0.1", "10.0.0.2", b"a"), p.now)
    p.pump()
    assert p.peer_b.keypairs.current is first
    run_until(p, p.now + 2)
    n = len(p.wire)
    p.a.send_packet(ip4("10.0.0.1", "10.0.0.2", b"b"), p.now)
    p.pump()
    assert 1 in kinds(p.wire[n:], "a->b")  # a new initiation after the data packet
    assert p.peer_b.keypairs.current is not first and p.peer_b.keypairs.previous is first
    assert HandshakeComplete(p.b.public_key) in p.a.take_events()
    assert p.b.take_packets()[-1] == ip4("10.0.0.1", "10.0.0.2", b"b")


def test_session_is_rejected_after_reject_after_time() -> None:
    p = Pair()
    p.connect()
    run_until(p, p.now + REJECT_AFTER_TIME - 10)
    p.b.send_packet(ip4("10.0.0.2", "10.0.0.1", b"late"), p.now)
    (late, _), = p.b.take_datagrams()
    run_until(p, p.now + 11)
    p.a.receive_datagram(late, p.b_addr, p.now)
    assert p.a.take_packets() == [] and p.a.drops["expired_keypair"] == 1
    # and B no longer sends with it: it starts a handshake instead
    p.b.send_packet(ip4("10.0.0.2", "10.0.0.1", b"new"), p.now)
    assert [dg[0] for dg, _ in p.b.take_datagrams()] == [1]


def test_all_keys_are_zeroed_after_three_times_reject_after_time() -> None:
    p = Pair()
    p.connect()
    t0 = p.now
    run_until(p, t0 + 3 * REJECT_AFTER_TIME - 1)
    assert p.peer_b.keypairs.current is not None and p.peer_a.keypairs.current is not None
    run_until(p, t0 + 3 * REJECT_AFTER_TIME + 1)
    assert p.peer_b.keypairs.all() == [] and p.peer_a.keypairs.all() == []
    assert KeysZeroed(p.b.public_key) in p.a.take_events()
    assert not p.a._kp_index and not p.b._kp_index


def test_persistent_keepalive_connects_out_and_repeats_every_interval() -> None:
    p = Pair(keepalive_a=25)
    # the interval being set makes A connect at once (due immediately)
    assert p.a.next_deadline() is not None and p.a.next_deadline() <= p.now
    run_until(p, p.now + 0.001)
    assert kinds(p.wire, "a->b")[:2] == [1, 0]  # initiation, then the keepalive confirming the session
    start = len(p.wire)
    t0 = p.now
    run_until(p, t0 + 101)
    sent = [dg for d, dg in p.wire[start:] if d == "a->b"]
    assert len(sent) == 4 and all(len(dg) == 32 for dg in sent)  # at 25, 50, 75, 100 s
    assert p.b.take_packets() == []

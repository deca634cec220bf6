"""The home's probe-and-restart rule (wiregate.probe_policy) on a fake clock, and the Prober adapter feeding it."""

from __future__ import annotations

import struct

from wiregate.probe_policy import (
    MAX_RTT,
    PROBE_SILENCE,
    RESOLVE_RETRY,
    RESTART_EVERY,
    ProbePolicy,
    resolve_delay,
    silence_limit,
)
from wiregate.runner import PROBE_MAGIC, Prober


def answered_at(t: float) -> ProbePolicy:
    p = ProbePolicy()
    p.probe_sent()
    assert p.answered(t - 0.01, t)
    return p


def test_a_gateway_never_heard_from_is_never_restarted_nor_reachable() -> None:
    p = ProbePolicy()
    for now in (0.0, 10.0, 1000.0):
        assert p.due_restart(now, 1.0) is None and not p.reachable(now, 1.0)


def test_silence_beyond_three_intervals_or_at_least_probe_silence_restarts_the_handshake() -> None:
    assert silence_limit(1.0) == PROBE_SILENCE == 3.0 and silence_limit(0.2) == PROBE_SILENCE
    assert silence_limit(2.0) == 6.0
    p = answered_at(100.0)
    assert p.due_restart(101.0, 1.0) is None and p.due_restart(103.0, 1.0) is None  # 3 s: still within
    assert p.reachable(103.0, 1.0) and not p.reachable(103.01, 1.0)
    assert p.due_restart(103.5, 1.0) == 3.5  # the seconds of silence, for the log line
    q = answered_at(100.0)
    assert q.due_restart(105.9, 2.0) is None  # two-second probes: six seconds of silence allowed
    assert q.due_restart(106.1, 2.0) is not None


def test_restarts_are_at_most_one_per_restart_every_while_the_gateway_stays_away() -> None:
    p = answered_at(0.0)
    assert p.due_restart(4.0, 1.0) == 4.0
    restarts = [t for t in (5.0, 8.0, 14.0, 14.01, 20.0, 24.02) if p.due_restart(t, 1.0) is not None]
    assert restarts == [14.01, 24.02]  # strictly more than RESTART_EVERY (10 s) after the previous one
    assert RESTART_EVERY == 10.0


def test_an_answer_resets_the_silence_and_the_count_is_what_the_tunnel_did() -> None:
    p = answered_at(0.0)
    assert p.due_restart(4.0, 1.0) is not None
    p.restarted()
    assert p.answered(19.99, 20.0) and p.reachable(20.0, 1.0) and p.silent_for(22.0) == 2.0
    assert p.due_restart(23.0, 1.0) is None  # answered again: silent for 3 s only
    assert p.due_restart(23.5, 1.0) == 3.5  # silent again, and the last restart is 19.5 s old
    # that one the tunnel could not do (an external interface without an endpoint): only restarted() counts
    assert p.restarts == 1 and p.replies == 2 and p.sent == 1


def test_an_echo_that_cannot_be_ours_is_ignored() -> None:
    p = answered_at(50.0)
    before = (p.replies, p.last_reply, p.rtt)
    assert not p.answered(51.0, 50.0)  # sent in the future
    assert not p.answered(50.0 - MAX_RTT, 50.0)  # older than MAX_RTT
    assert (p.replies, p.last_reply, p.rtt) == before


def test_the_gateway_name_is_looked_up_quickly_until_it_first_resolves() -> None:
    assert resolve_delay(False, 300.0) == RESOLVE_RETRY == 2.0
    assert resolve_delay(True, 300.0) == 300.0


class FakeTransport:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendto(self, data: bytes, addr: object = None) -> None:
        self.sent.append(data)


def test_prober_stamps_probes_with_its_clock_and_feeds_the_echoes_to_the_policy() -> None:
    now = [1000.0]
    prober = Prober(clock=lambda: now[0])
    transport = FakeTransport()
    prober.connection_made(transport)  # the datagram socket, faked: only sendto is used
    prober.send()
    (probe,) = transport.sent
    assert probe == PROBE_MAGIC + struct.pack("!d", 1000.0)
    now[0] = 1000.025
    prober.datagram_received(probe, ("192.0.2.1", 51819))  # the gateway echoes it
    prober.datagram_received(b"junk" + probe, ("192.0.2.1", 51819))  # not a probe: ignored
    now[0] = 1002.0
    st = prober.status()
    assert (st.sent, st.replies, st.rtt_ms, st.last_reply_ago, st.handshake_restarts) == (1, 1, 25.0, 2.0, 0)
    assert prober.policy.due_restart(1003.0, 1.0) is None
    assert prober.policy.due_restart(1003.1, 1.0) is not None

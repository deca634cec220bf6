"""The timer rules of the whitepaper (section 6) as wireguard-go's timers.go states them, for a sans-I/O Device.

Each peer carries five deadlines (monotonic seconds, None = not pending), named after wireguard-go's timers:

| deadline                 | armed by                                        | on expiry                                    |
|--------------------------|-------------------------------------------------|----------------------------------------------|
| t_retransmit_handshake   | an initiation sent (REKEY_TIMEOUT + jitter)     | resend, or give up after MAX_TIMER_HANDSHAKES |
| t_send_keepalive         | data received (KEEPALIVE_TIMEOUT)               | keepalive (passive keepalive)                |
| t_new_handshake          | data sent (KEEPALIVE + REKEY_TIMEOUT + jitter)  | new handshake: the peer stopped answering     |
| t_zero_key_material      | a session derived (3 x REJECT_AFTER_TIME)       | drop every key and handshake state           |
| t_persistent_keepalive   | any authenticated packet in or out (interval)   | keepalive (persistent keepalive)             |

`TimerRules` is mixed into `Device`: the `_timers_*` hooks are called where wireguard-go calls its `timers*`
functions (once per peer per batch on the data path), `handle_timer` runs what is due.

Finding the next deadline must not cost more with more peers (issue 15: it used to scan every peer after each
batch). `TimerQueue` is a heap with one live entry per peer, at or before the peer's earliest deadline; arming a
deadline later than that entry costs nothing (the common case: the data path pushes deadlines forward on every
batch), an earlier one pushes a new entry and the old one goes stale. Stale or early entries are corrected
lazily when they reach the top, so `next_deadline` and `handle_timer` cost O(log peers) per peer that is due and
nothing per peer that is not.
"""

from __future__ import annotations

import heapq
import itertools
from typing import TYPE_CHECKING, Callable

from wiregate.wireguard.constants import (
    KEEPALIVE_TIMEOUT, MAX_TIMER_HANDSHAKES, REJECT_AFTER_TIME, REKEY_TIMEOUT, REKEY_TIMEOUT_JITTER_MAX_MS,
    RESOLVE_EVERY_ATTEMPTS,
)
from wiregate.wireguard.events import HandshakeGaveUp, KeysZeroed, ResolveEndpoint

if TYPE_CHECKING:
    from wiregate.wireguard.device import Peer


_INF = float("inf")


def earliest_deadline(peer: "Peer") -> float:
    """The earliest of a peer's five deadlines, or +inf when none is pending."""
    m = _INF
    for t in (peer.t_retransmit_handshake, peer.t_send_keepalive, peer.t_new_handshake, peer.t_zero_key_material,
              peer.t_persistent_keepalive):
        if t is not None and t < m:
            m = t
    return m


class TimerQueue:
    """Peers ordered by their earliest deadline (see the module docstring). A peer's `timer_at` is the time of its
    live entry (+inf: none); the invariant is `timer_at <= earliest_deadline(peer)` for every peer in the queue.
    `ops` counts heap operations and entries examined, for the test that the cost does not grow with peers."""

    __slots__ = ("_heap", "_seq", "ops")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, "Peer"]] = []
        self._seq = itertools.count()
        self.ops = 0

    def __len__(self) -> int:
        return len(self._heap)

    def arm(self, peer: "Peer", t: float) -> None:
        """A deadline of `peer` was set to `t`: make sure the peer is woken no later than that."""
        if t < peer.timer_at:
            peer.timer_at = t
            self.ops += 1
            heapq.heappush(self._heap, (t, next(self._seq), peer))

    @staticmethod
    def forget(peer: "Peer") -> None:
        """`peer` left the device: its entries go stale and are dropped when they reach the top."""
        peer.timer_at = -_INF  # never equal to an entry's time again

    def peek(self) -> float | None:
        """The earliest deadline of any peer, or None."""
        heap = self._heap
        while heap:
            self.ops += 1
            t, _, peer = heap[0]
            if t != peer.timer_at:  # superseded by an earlier entry, or the peer is gone
                heapq.heappop(heap)
                continue
            m = earliest_deadline(peer)
            if m == t:
                return t
            if m == _INF:  # every deadline was cancelled
                peer.timer_at = _INF
                heapq.heappop(heap)
            else:  # the deadline moved (later, or set without arm): re-file the peer where it belongs
                peer.timer_at = m
                heapq.heapreplace(heap, (m, next(self._seq), peer))
        return None

    def pop_due(self, now: float) -> list["Peer"]:
        """Every peer with a deadline <= now, taken off the queue (re-arm them after running their timers)."""
        due = []
        heap = self._heap
        while True:
            t = self.peek()
            if t is None or t > now:
                return due
            peer = heapq.heappop(heap)[2]
            peer.timer_at = _INF
            due.append(peer)


class TimerRules:
    """Timer hooks and expiry handlers; needs `peers`, `_rng`, `_events`, `_timerq`, `_send_initiation`,
    `_send_keepalive` and `_zero_all` from the Device it is mixed into."""

    peers: dict[bytes, "Peer"]
    _rng: Callable[[int], bytes]
    _events: list[object]
    _timerq: TimerQueue

    # -- hooks -----------------------------------------------------------------------------------------------
    def _jitter(self) -> float:
        """0..333 ms, so peers that lost a handshake at the same moment do not retry in lockstep."""
        return (int.from_bytes(self._rng(2), "little") % REKEY_TIMEOUT_JITTER_MAX_MS) / 1000.0

    def _timers_data_sent(self, peer: "Peer", now: float) -> None:
        """Data (not a keepalive) went out: expect something back within KEEPALIVE_TIMEOUT + REKEY_TIMEOUT."""
        if peer.t_new_handshake is None:
            t = peer.t_new_handshake = now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + self._jitter()
            self._timerq.arm(peer, t)

    def _timers_data_received(self, peer: "Peer", now: float) -> None:
        """Data came in: answer with a keepalive unless we send something within KEEPALIVE_TIMEOUT."""
        if peer.t_send_keepalive is None:
            t = peer.t_send_keepalive = now + KEEPALIVE_TIMEOUT
            self._timerq.arm(peer, t)
        else:
            peer.need_another_keepalive = True

    @staticmethod
    def _timers_any_authenticated_packet_sent(peer: "Peer") -> None:
        """Anything authenticated we send counts as the keepalive the peer may be waiting for."""
        peer.t_send_keepalive = None

    @staticmethod
    def _timers_any_authenticated_packet_received(peer: "Peer") -> None:
        """The peer is alive: no need for the 'stopped hearing back' handshake."""
        peer.t_new_handshake = None

    def _timers_any_authenticated_packet_traversal(self, peer: "Peer", now: float) -> None:
        """Any authenticated packet in or out restarts the persistent keepalive interval."""
        if peer.persistent_keepalive:
            t = peer.t_persistent_keepalive = now + peer.persistent_keepalive
            self._timerq.arm(peer, t)

    def _timers_handshake_initiated(self, peer: "Peer", now: float) -> None:
        """An initiation went out: retry it after REKEY_TIMEOUT plus jitter unless answered."""
        t = peer.t_retransmit_handshake = now + REKEY_TIMEOUT + self._jitter()
        self._timerq.arm(peer, t)

    def _timers_session_derived(self, peer: "Peer", now: float) -> None:
        """A new session exists: if no newer one follows within 3 x REJECT_AFTER_TIME, zero everything."""
        t = peer.t_zero_key_material = now + 3 * REJECT_AFTER_TIME
        self._timerq.arm(peer, t)

    # -- expiry ----------------------------------------------------------------------------------------------
    def _peer_timers_next(self) -> float | None:
        """The earliest peer deadline (O(1) unless stale entries are dropped on the way)."""
        return self._timerq.peek()

    def _run_peer_timers(self, now: float) -> None:
        """Run every peer timer whose deadline is <= now; only the peers that are due are visited."""
        timerq = self._timerq
        for peer in timerq.pop_due(now):
            self._expire_peer(peer, now)
            if self.peers.get(peer.public_key) is peer:
                timerq.arm(peer, earliest_deadline(peer))

    def _expire_peer(self, peer: "Peer", now: float) -> None:
        """The five rules of one peer, in wireguard-go's order."""
        if peer.t_retransmit_handshake is not None and peer.t_retransmit_handshake <= now:
            peer.t_retransmit_handshake = None
            self._expired_retransmit_handshake(peer, now)
        if peer.t_send_keepalive is not None and peer.t_send_keepalive <= now:
            peer.t_send_keepalive = None
            self._expired_send_keepalive(peer, now)
        if peer.t_new_handshake is not None and peer.t_new_handshake <= now:
            peer.t_new_handshake = None
            self._send_initiation(peer, now, retry=False)  # type: ignore[attr-defined]
        if peer.t_zero_key_material is not None and peer.t_zero_key_material <= now:
            peer.t_zero_key_material = None
            self._zero_all(peer)  # type: ignore[attr-defined]
            self._events.append(KeysZeroed(peer.public_key))
        if peer.t_persistent_keepalive is not None and peer.t_persistent_keepalive <= now:
            peer.t_persistent_keepalive = None
            if peer.persistent_keepalive:
                self._send_keepalive(peer, now)  # type: ignore[attr-defined]

    def _expired_retransmit_handshake(self, peer: "Peer", now: float) -> None:
        """Retry every REKEY_TIMEOUT (+jitter); after MAX_TIMER_HANDSHAKES retries give up and drop the queue.
        Every RESOLVE_EVERY_ATTEMPTS failed tries, ask for a fresh DNS answer for a named endpoint."""
        if peer.handshake_attempts > MAX_TIMER_HANDSHAKES:
            peer.t_send_keepalive = None
            peer.staged.clear()
            if peer.t_zero_key_material is None:
                t = peer.t_zero_key_material = now + 3 * REJECT_AFTER_TIME
                self._timerq.arm(peer, t)
            self._events.append(HandshakeGaveUp(peer.public_key))
            return
        peer.handshake_attempts += 1
        if peer.endpoint_host and peer.handshake_attempts % RESOLVE_EVERY_ATTEMPTS == 0:
            self._events.append(ResolveEndpoint(peer.public_key, peer.endpoint_host, peer.endpoint_port))
        self._send_initiation(peer, now, retry=True)  # type: ignore[attr-defined]

    def _expired_send_keepalive(self, peer: "Peer", now: float) -> None:
        """Passive keepalive: data came in and we sent nothing back for KEEPALIVE_TIMEOUT."""
        self._send_keepalive(peer, now)  # type: ignore[attr-defined]
        if peer.need_another_keepalive:
            peer.need_another_keepalive = False
            t = peer.t_send_keepalive = now + KEEPALIVE_TIMEOUT
            self._timerq.arm(peer, t)

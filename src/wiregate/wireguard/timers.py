"""The timer rules of the whitepaper (section 6) as wireguard-go's timers.go states them, for a sans-I/O Device.

Each peer carries five deadlines (monotonic seconds, None = not pending), named after wireguard-go's timers:

| deadline               | armed by                                      | on expiry                                   |
|------------------------|-----------------------------------------------|---------------------------------------------|
| t_retransmit_handshake | an initiation sent (REKEY_TIMEOUT + jitter)   | resend; give up after MAX_TIMER_HANDSHAKES  |
| t_send_keepalive       | data received (KEEPALIVE_TIMEOUT)             | keepalive (passive keepalive)               |
| t_new_handshake        | data sent (KEEPALIVE + REKEY_TIMEOUT + jitter) | new handshake: the peer stopped answering  |
| t_zero_key_material    | a session derived (3 x REJECT_AFTER_TIME)     | drop every key and handshake state          |
| t_persistent_keepalive | any authenticated packet in or out (interval) | keepalive (persistent keepalive)            |

`PeerTimers` holds one peer's timer state. The Device calls its hooks where wireguard-go calls its `timers*`
functions (once per peer per batch on the data path); when a deadline passes, `PeerTimers.expire(now)` yields
`TimerAction`s (send an initiation, a keepalive, zero the keys, give up, resolve the endpoint) that the Device
carries out, one at a time and in wireguard-go's order, so each rule sees what the previous action changed. This
module knows nothing of the Device: a peer is only an opaque `owner`.

Finding the next deadline must not cost more with more peers (issue 15: it used to scan every peer after each
batch). `TimerQueue` is a heap with one live entry per peer, at or before the peer's earliest deadline; arming a
deadline later than that entry costs nothing (the common case: the data path pushes deadlines forward on every
batch), an earlier one pushes a new entry and the old one goes stale. Stale or early entries are corrected
lazily when they reach the top, so `next_deadline` and `handle_timer` cost O(log peers) per peer that is due and
nothing per peer that is not.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from typing import Callable, Generic, Iterator, Protocol, TypeVar

from wiregate.wireguard.constants import (
    KEEPALIVE_TIMEOUT, MAX_TIMER_HANDSHAKES, REJECT_AFTER_TIME, REKEY_TIMEOUT, REKEY_TIMEOUT_JITTER_MAX_MS,
    RESOLVE_EVERY_ATTEMPTS,
)

_INF = float("inf")

__all__ = ["PeerTimers", "TimerAction", "TimerQueue", "earliest_deadline", "jitter_from"]


class TimerAction(enum.Enum):
    """What an expired timer asks the Device to do for its peer."""

    RETRANSMIT_HANDSHAKE = "retransmit_handshake"  # send the initiation again (a retry: attempts are counted)
    RESOLVE_ENDPOINT = "resolve_endpoint"  # the endpoint is a DNS name and tries keep failing: resolve it again
    GIVE_UP = "give_up"  # no handshake after REKEY_ATTEMPT_TIME: drop the queued packets, report it
    SEND_KEEPALIVE = "send_keepalive"  # passive keepalive
    NEW_HANDSHAKE = "new_handshake"  # data sent, nothing heard back: start a handshake
    ZERO_KEYS = "zero_keys"  # no new session for 3 x REJECT_AFTER_TIME: drop every key and handshake state
    PERSISTENT_KEEPALIVE = "persistent_keepalive"


def jitter_from(rng: Callable[[int], bytes]) -> Callable[[], float]:
    """0..333 ms from `rng`, so peers that lost a handshake at the same moment do not retry in lockstep."""
    def jitter() -> float:
        return (int.from_bytes(rng(2), "little") % REKEY_TIMEOUT_JITTER_MAX_MS) / 1000.0
    return jitter


class Deadlines(Protocol):
    """What TimerQueue needs of an entry: its five deadlines and the time of its live heap entry."""

    timer_at: float
    t_retransmit_handshake: float | None
    t_send_keepalive: float | None
    t_new_handshake: float | None
    t_zero_key_material: float | None
    t_persistent_keepalive: float | None


EntryT = TypeVar("EntryT", bound=Deadlines)
OwnerT = TypeVar("OwnerT")


def earliest_deadline(t: Deadlines) -> float:
    """The earliest of a peer's five deadlines, or +inf when none is pending."""
    m = _INF
    for d in (t.t_retransmit_handshake, t.t_send_keepalive, t.t_new_handshake, t.t_zero_key_material,
              t.t_persistent_keepalive):
        if d is not None and d < m:
            m = d
    return m


class TimerQueue(Generic[EntryT]):
    """Peers' timers ordered by their earliest deadline (see the module docstring). An entry's `timer_at` is the
    time of its live heap entry (+inf: none); the invariant is `timer_at <= earliest_deadline(entry)` for every
    entry in the queue. `ops` counts heap operations and entries examined."""

    __slots__ = ("_heap", "_seq", "ops")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, EntryT]] = []
        self._seq = itertools.count()
        self.ops = 0

    def __len__(self) -> int:
        return len(self._heap)

    def arm(self, timers: EntryT, t: float) -> None:
        """A deadline of `timers` was set to `t`: make sure it is woken no later than that."""
        if t < timers.timer_at:
            timers.timer_at = t
            self.ops += 1
            heapq.heappush(self._heap, (t, next(self._seq), timers))

    @staticmethod
    def forget(timers: Deadlines) -> None:
        """The peer left the device: its entries go stale and are dropped when they reach the top."""
        timers.timer_at = -_INF  # never equal to an entry's time again, and never armed again

    def peek(self) -> float | None:
        """The earliest deadline of any peer, or None."""
        heap = self._heap
        while heap:
            self.ops += 1
            t, _, timers = heap[0]
            if t != timers.timer_at:  # superseded by an earlier entry, or the peer is gone
                heapq.heappop(heap)
                continue
            m = earliest_deadline(timers)
            if m == t:
                return t
            if m == _INF:  # every deadline was cancelled
                timers.timer_at = _INF
                heapq.heappop(heap)
            else:  # the deadline moved (later, or was set without arm): re-file where it belongs
                timers.timer_at = m
                heapq.heapreplace(heap, (m, next(self._seq), timers))
        return None

    def pop_due(self, now: float) -> list[EntryT]:
        """Every entry with a deadline <= now, taken off the queue (re-arm them after running their timers)."""
        due: list[EntryT] = []
        heap = self._heap
        while True:
            t = self.peek()
            if t is None or t > now:
                return due
            timers = heapq.heappop(heap)[2]
            timers.timer_at = _INF
            due.append(timers)


class PeerTimers(Generic[OwnerT]):
    """One peer's timer state and rules (wireguard-go timers.go). `owner` is the Device's peer, opaque here."""

    __slots__ = ("owner", "_queue", "_jitter", "persistent_keepalive", "handshake_attempts",
                 "need_another_keepalive", "sent_last_minute_handshake", "timer_at",
                 "t_retransmit_handshake", "t_send_keepalive", "t_new_handshake", "t_zero_key_material",
                 "t_persistent_keepalive")

    def __init__(self, owner: OwnerT, queue: TimerQueue[PeerTimers[OwnerT]], jitter: Callable[[], float],
                 persistent_keepalive: int = 0) -> None:
        self.owner = owner
        self._queue = queue
        self._jitter = jitter
        self.persistent_keepalive = persistent_keepalive
        self.handshake_attempts = 0
        self.need_another_keepalive = False
        self.sent_last_minute_handshake = False
        self.timer_at = _INF
        self.t_retransmit_handshake: float | None = None
        self.t_send_keepalive: float | None = None
        self.t_new_handshake: float | None = None
        self.t_zero_key_material: float | None = None
        self.t_persistent_keepalive: float | None = None

    def _arm(self, t: float) -> None:
        if t < self.timer_at:
            self._queue.arm(self, t)

    def rearm(self) -> None:
        """After `expire`: file the peer again at its earliest remaining deadline."""
        m = earliest_deadline(self)
        if m < self.timer_at:
            self._queue.arm(self, m)

    # -- hooks (wireguard-go timers* functions) --------------------------------------------------------------
    def data_sent(self, now: float) -> None:
        """Data (not a keepalive) went out: expect something back within KEEPALIVE_TIMEOUT + REKEY_TIMEOUT."""
        if self.t_new_handshake is None:
            t = self.t_new_handshake = now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + self._jitter()
            self._arm(t)

    def data_received(self, now: float) -> None:
        """Data came in: answer with a keepalive unless we send something within KEEPALIVE_TIMEOUT."""
        if self.t_send_keepalive is None:
            t = self.t_send_keepalive = now + KEEPALIVE_TIMEOUT
            self._arm(t)
        else:
            self.need_another_keepalive = True

    def any_authenticated_packet_sent(self) -> None:
        """Anything authenticated we send counts as the keepalive the peer may be waiting for."""
        self.t_send_keepalive = None

    def any_authenticated_packet_received(self) -> None:
        """The peer is alive: no need for the 'stopped hearing back' handshake."""
        self.t_new_handshake = None

    def any_authenticated_packet_traversal(self, now: float) -> None:
        """Any authenticated packet in or out restarts the persistent keepalive interval."""
        if self.persistent_keepalive:
            t = self.t_persistent_keepalive = now + self.persistent_keepalive
            self._arm(t)

    def handshake_initiated(self, now: float) -> None:
        """An initiation went out: retry it after REKEY_TIMEOUT plus jitter unless answered."""
        t = self.t_retransmit_handshake = now + REKEY_TIMEOUT + self._jitter()
        self._arm(t)

    def handshake_complete(self) -> None:
        """A session is confirmed: stop retransmitting, reset the counters."""
        self.t_retransmit_handshake = None
        self.handshake_attempts = 0
        self.sent_last_minute_handshake = False

    def session_derived(self, now: float) -> None:
        """A new session exists: if no newer one follows within 3 x REJECT_AFTER_TIME, zero everything."""
        t = self.t_zero_key_material = now + 3 * REJECT_AFTER_TIME
        self._arm(t)

    def retry_after_rate_limit(self, last_sent: float) -> None:
        """An initiation was not sent because one went out less than REKEY_TIMEOUT ago: retry when the limit
        lifts, unless a retry is pending already (wireguard-go just returns; see docs/wireguard.md)."""
        if self.t_retransmit_handshake is None:
            t = self.t_retransmit_handshake = last_sent + REKEY_TIMEOUT + self._jitter()
            self._arm(t)

    def retransmit_now(self) -> None:
        """An initiation waited for an endpoint that is now known: send it at the next timer."""
        self.t_retransmit_handshake = 0.0
        self._arm(0.0)

    def set_persistent_keepalive(self, interval: int) -> None:
        """A new interval: a non-zero one that changed connects out at once (as wg does), zero stops it."""
        if interval and interval != self.persistent_keepalive:
            self.t_persistent_keepalive = 0.0
            self._arm(0.0)
        elif not interval:
            self.t_persistent_keepalive = None
        self.persistent_keepalive = interval

    # -- expiry ----------------------------------------------------------------------------------------------
    def expire(self, now: float, *, named_endpoint: bool = False) -> Iterator[TimerAction]:
        """The actions of every deadline <= now, in wireguard-go's order. A generator: each rule is checked after
        the Device has carried out the previous action (a retransmitted initiation, for one, cancels a due
        passive keepalive, as in wireguard-go)."""
        if self.t_retransmit_handshake is not None and self.t_retransmit_handshake <= now:
            self.t_retransmit_handshake = None
            if self.handshake_attempts > MAX_TIMER_HANDSHAKES:
                self.t_send_keepalive = None
                if self.t_zero_key_material is None:
                    t = self.t_zero_key_material = now + 3 * REJECT_AFTER_TIME
                    self._arm(t)
                yield TimerAction.GIVE_UP
            else:
                self.handshake_attempts += 1
                if named_endpoint and self.handshake_attempts % RESOLVE_EVERY_ATTEMPTS == 0:
                    yield TimerAction.RESOLVE_ENDPOINT
                yield TimerAction.RETRANSMIT_HANDSHAKE
        if self.t_send_keepalive is not None and self.t_send_keepalive <= now:
            self.t_send_keepalive = None
            yield TimerAction.SEND_KEEPALIVE
            if self.need_another_keepalive:
                self.need_another_keepalive = False
                t = self.t_send_keepalive = now + KEEPALIVE_TIMEOUT
                self._arm(t)
        if self.t_new_handshake is not None and self.t_new_handshake <= now:
            self.t_new_handshake = None
            yield TimerAction.NEW_HANDSHAKE
        if self.t_zero_key_material is not None and self.t_zero_key_material <= now:
            self.t_zero_key_material = None
            yield TimerAction.ZERO_KEYS
        if self.t_persistent_keepalive is not None and self.t_persistent_keepalive <= now:
            self.t_persistent_keepalive = None
            if self.persistent_keepalive:
                yield TimerAction.PERSISTENT_KEEPALIVE

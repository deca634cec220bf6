"""Backend selection and health, sans-I/O: told what happened and when, it answers which backend is next.

    pool = BackendPool(service.backends, "leastconn", HealthCheck(rise=2, fall=3), now=0.0)
    i = pool.pick("203.0.113.7")          # index into service.backends, or None when nothing is usable
    pool.connect_ok(i, now); ...; pool.released(i)
    pool.connect_failed(i, now)           # passive marking: `fall` failures in a row take it down
    for i in pool.due_checks(now): ...    # active checks to start now; then pool.check_result(i, ok, now)
    pool.next_deadline()                  # when due_checks will next return something

Nothing here reads a clock or a socket; the asyncio layer feeds it the time.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Callable, Sequence, TypedDict

from wiregate.relay.config import Backend, HealthCheck

# Without active checks a passively failed backend is tried again after this long (HAProxy has no equivalent:
# it marks servers down only from checks; we do not want a backend lost forever on a transient failure).
PASSIVE_RETRY_AFTER = 10.0


class BackendStatus(TypedDict):
    """One backend in a service's status (`wiregate status`, the control socket, metrics)."""

    name: str
    host: str
    port: int
    weight: int
    backup: bool
    state: str  # "up" or "down"
    active: int
    total: int
    failed_connects: int


@dataclass(slots=True)
class BackendState:
    """Mutable per-backend bookkeeping (public for status and tests)."""

    backend: Backend
    up: bool = True
    successes: int = 0  # consecutive good checks while down (towards `rise`)
    failures: int = 0  # consecutive failures while up (towards `fall`)
    active: int = 0  # open connections now
    total: int = 0  # connections ever made through it
    failed_connects: int = 0
    down_since: float | None = None
    next_check: float = 0.0
    checking: bool = False
    # smooth weighted round robin state (nginx's algorithm): current weight
    current: int = 0

    def as_dict(self) -> BackendStatus:
        b = self.backend
        return {"name": b.label, "host": b.host, "port": b.port, "weight": b.weight, "backup": b.backup,
                "state": "up" if self.up else "down", "active": self.active, "total": self.total,
                "failed_connects": self.failed_connects}


def _roundrobin(pool: "BackendPool", candidates: list[int], source: str) -> int:
    """Smooth weighted round robin: over sum(weights) picks each backend weight times, interleaved."""
    states = pool.states
    total = 0
    best = -1
    for i in candidates:
        st = states[i]
        st.current += st.backend.weight
        total += st.backend.weight
        if best < 0 or st.current > states[best].current:
            best = i
    states[best].current -= total
    return best


def _leastconn(pool: "BackendPool", candidates: list[int], source: str) -> int:
    """Fewest open connections per unit of weight; ties go round robin so equal backends share the load."""
    states = pool.states
    low = min(states[i].active / states[i].backend.weight for i in candidates)
    tied = [i for i in candidates if states[i].active / states[i].backend.weight == low]
    return tied[0] if len(tied) == 1 else _roundrobin(pool, tied, source)


def _source(pool: "BackendPool", candidates: list[int], source: str) -> int:
    """Weighted rendezvous hashing of the client address: a client keeps its backend while that backend is up,
    and when one goes down only its own clients move (HAProxy's `balance source` remaps more)."""
    best, best_score = candidates[0], -math.inf
    for i in candidates:
        b = pool.states[i].backend
        digest = hashlib.blake2b(f"{source}|{b.host}|{b.port}".encode(), digest_size=8).digest()
        h = (int.from_bytes(digest, "big") + 1) / 2.0**64  # in (0, 1]
        score = -b.weight / math.log(h) if h < 1.0 else math.inf
        if score > best_score:
            best, best_score = i, score
    return best


# name -> picker(pool, candidate indexes (non-empty, all usable), client address) -> index. Add one here.
ALGORITHMS: dict[str, Callable[["BackendPool", list[int], str], int]] = {
    "roundrobin": _roundrobin,
    "leastconn": _leastconn,
    "source": _source,
}


class BackendPool:
    """Health state and balancing for one service's backends (indexes follow the configured order)."""

    def __init__(self, backends: Sequence[Backend], balance: str = "roundrobin",
                 health: HealthCheck | None = None, now: float = 0.0,
                 previous: "BackendPool | None" = None) -> None:
        self.backends = tuple(backends)
        self.balance = balance
        self._pick = ALGORITHMS[balance]
        self.health = health
        self.states = [BackendState(b) for b in self.backends]
        # HAProxy starts servers up and lets checks take them down; with checks, the first round runs at once
        for st in self.states:
            st.next_check = now
        if previous is not None:
            # A reload keeps the state object of every backend still configured (same host and port): its health
            # and its open-connection count carry over, and connections made before the reload release into it.
            old = {(s.backend.host, s.backend.port): s for s in previous.states}
            for k, st in enumerate(self.states):
                o = old.pop((st.backend.host, st.backend.port), None)
                if o is not None:
                    o.backend, o.current, o.checking = st.backend, 0, False
                    o.next_check = min(o.next_check, now + (health.interval if health else 0.0))
                    self.states[k] = o

    # -- choosing ------------------------------------------------------------------------------------------
    def usable(self, i: int, now: float) -> bool:
        """Up, or (without active checks) down long enough ago to deserve another try."""
        st = self.states[i]
        if st.up:
            return True
        return self.health is None and st.down_since is not None and now - st.down_since >= PASSIVE_RETRY_AFTER

    def pick(self, source: str, now: float = 0.0, exclude: Sequence[int] = ()) -> int | None:
        """The backend for a new connection from `source`, skipping `exclude`; None when none is usable.

        Primaries first; backups only when no primary is usable (all usable backups share the load, like
        HAProxy's `option allbackups`)."""
        if len(self.states) == 1:  # the usual service (one site): the same answer without building candidate lists
            return 0 if 0 not in exclude and self.usable(0, now) else None
        for backup in (False, True):
            cands = [i for i, st in enumerate(self.states)
                     if st.backend.backup is backup and i not in exclude and self.usable(i, now)]
            if cands:
                return cands[0] if len(cands) == 1 else self._pick(self, cands, source)
        return None

    # -- what happened -------------------------------------------------------------------------------------
    def connect_ok(self, i: int, now: float) -> None:
        """A connection to backend i was established (counts as open until released)."""
        st = self.states[i]
        st.active += 1
        st.total += 1
        st.failures = 0
        if not st.up and self.health is None:  # passive recovery: a real connection worked
            self._mark(st, True, now)

    def released(self, i: int) -> None:
        """A connection to backend i ended."""
        self.release_state(self.states[i])

    @staticmethod
    def release_state(st: BackendState) -> None:
        """A connection ended whose backend state was taken at connect time (still right after a reload)."""
        if st.active > 0:
            st.active -= 1

    def connect_failed(self, i: int, now: float) -> None:
        """A connect to backend i failed or timed out: `fall` in a row mark it down (HAProxy `observe layer4`)."""
        st = self.states[i]
        st.failed_connects += 1
        if st.up:
            st.failures += 1
            fall = self.health.fall if self.health else 1
            if st.failures >= fall:
                self._mark(st, False, now)
        elif self.health is None:
            st.down_since = now  # tried again after the pause, failed again: wait another pause

    def due_checks(self, now: float) -> list[int]:
        """Backends whose active check should start now (marks them in progress)."""
        if self.health is None:
            return []
        due = []
        for i, st in enumerate(self.states):
            if not st.checking and st.next_check <= now:
                st.checking = True
                due.append(i)
        return due

    def check_result(self, i: int, ok: bool, now: float) -> bool | None:
        """Record an active check; returns the new up/down state when it changed, else None."""
        st = self.states[i]
        st.checking = False
        st.next_check = now + (self.health.interval if self.health else 0.0)
        if self.health is None:
            return None
        if ok:
            st.failures = 0
            if not st.up:
                st.successes += 1
                if st.successes >= self.health.rise:
                    self._mark(st, True, now)
                    return True
        else:
            st.successes = 0
            if st.up:
                st.failures += 1
                if st.failures >= self.health.fall:
                    self._mark(st, False, now)
                    return False
        return None

    def next_deadline(self) -> float | None:
        """The earliest time a check falls due (None without active checks)."""
        if self.health is None:
            return None
        times = [st.next_check for st in self.states if not st.checking]
        return min(times) if times else None

    def _mark(self, st: BackendState, up: bool, now: float) -> None:
        st.up = up
        st.successes = st.failures = 0
        st.down_since = None if up else now

    def status(self) -> list[BackendStatus]:
        """Per backend: name, address, state, open and total connections."""
        return [st.as_dict() for st in self.states]


class SourceLimits:
    """Connection counts per service and per client address; refuses beyond either limit."""

    __slots__ = ("max_total", "max_per_source", "total", "per_source")

    def __init__(self, max_total: int, max_per_source: int) -> None:
        self.max_total = max_total
        self.max_per_source = max_per_source
        self.total = 0
        self.per_source: dict[str, int] = {}

    def full(self) -> bool:
        """True when the service holds max_total connections (the listener should stop accepting)."""
        return self.total >= self.max_total

    def admit(self, source: str) -> str | None:
        """Count a new connection from `source`; returns the reason when refused (nothing is counted then)."""
        if self.total >= self.max_total:
            return f"service at its limit of {self.max_total} connections"
        n = self.per_source.get(source, 0)
        if n >= self.max_per_source:
            return f"{source} already has {n} connections (max_per_source {self.max_per_source})"
        self.per_source[source] = n + 1
        self.total += 1
        return None

    def release(self, source: str) -> None:
        """A connection admitted for `source` ended."""
        n = self.per_source.get(source, 0)
        if n <= 1:
            self.per_source.pop(source, None)
        else:
            self.per_source[source] = n - 1
        if self.total > 0:
            self.total -= 1

"""When to order a certificate, sans-I/O: fed the stored certificate's validity, results and the time; tells the
adapter when to act next. No clock, no sockets, the rng injected (tests run a fake clock).

    s = Schedule(names, rng=random.Random(1))
    s.load(not_before, not_after)           # a certificate found in storage (or none: due now)
    s.next_deadline                         # when to look again
    s.due(now)                              # True: order now
    s.succeeded(not_before, not_after, now) # a new certificate is stored and live
    s.failed(reason, now)                   # keep the old certificate, retry after an exponential backoff

Renewal is due at two thirds of the lifetime (Let's Encrypt's advice for 90-day certificates: 30 days before
expiry), or at the time the CA's renewal information (ARI, RFC 9773) suggests when it gave one. A failure never
touches the current certificate: the adapter only swaps after success.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

RENEW_FRACTION = 2 / 3  # of the lifetime (notAfter - notBefore)
BACKOFF_BASE = 60.0  # seconds after the first failure
BACKOFF_CAP = 6 * 3600.0  # never wait longer than this between attempts
JITTER = 0.5  # a retry waits between (1 - JITTER) and 1 times the backoff, so many homes do not retry in step
MIN_RETRY = 60.0  # near expiry retries come sooner than the backoff, but never more often than this (rate limits)


def renew_at(not_before: float, not_after: float) -> float:
    """The time (UNIX seconds) a certificate valid from `not_before` to `not_after` should be renewed."""
    return not_before + (not_after - not_before) * RENEW_FRACTION


def backoff(failures: int, rng: random.Random, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """Seconds to wait after the `failures`-th consecutive failure (1-based): base * 2^(n-1), capped, jittered."""
    delay: float = min(cap, base * 2 ** max(0, failures - 1))
    return delay * (1 - JITTER * rng.random())


@dataclass(slots=True)
class Schedule:
    """The renewal state of one certificate (one set of names)."""

    names: tuple[str, ...]
    rng: random.Random = field(default_factory=random.Random)
    base: float = BACKOFF_BASE
    cap: float = BACKOFF_CAP
    not_before: float | None = None
    not_after: float | None = None
    ari_at: float | None = None  # the CA's suggested renewal time, when it gave one
    failures: int = 0
    last_error: str | None = None
    retry_at: float | None = None
    next_deadline: float = 0.0  # 0: due at once (nothing stored yet)

    def load(self, not_before: float | None, not_after: float | None) -> None:
        """The certificate found in storage at start (None, None: none) sets the first deadline."""
        self.not_before, self.not_after = not_before, not_after
        self._plan()

    def suggest(self, at: float | None) -> None:
        """The CA's renewal information suggested renewing at `at` (None: it offers none)."""
        self.ari_at = at
        self._plan()

    def has_certificate(self, now: float) -> bool:
        """A certificate is stored and not yet expired."""
        return self.not_after is not None and now < self.not_after

    def due(self, now: float) -> bool:
        """It is time to order (renewal time reached, or the retry time after a failure)."""
        return now >= self.next_deadline

    def succeeded(self, not_before: float, not_after: float, now: float) -> None:
        """A new certificate was obtained, stored and put live."""
        self.not_before, self.not_after = not_before, not_after
        self.ari_at = None
        self.failures, self.last_error, self.retry_at = 0, None, None
        self._plan()

    def failed(self, reason: str, now: float) -> float:
        """An order failed; the stored certificate stays. Returns the seconds until the retry."""
        self.failures += 1
        self.last_error = reason
        delay = backoff(self.failures, self.rng, self.base, self.cap)
        if self.not_after is not None and now < self.not_after:
            # do not sleep past expiry: halve the time left, yet never retry more often than MIN_RETRY
            delay = min(delay, max(MIN_RETRY, (self.not_after - now) / 2))
        self.retry_at = now + delay
        self._plan()
        return delay

    def _plan(self) -> None:
        if self.retry_at is not None:
            self.next_deadline = self.retry_at
        elif self.not_before is None or self.not_after is None:
            self.next_deadline = 0.0
        elif self.ari_at is not None:
            self.next_deadline = min(self.ari_at, self.not_after)
        else:
            self.next_deadline = renew_at(self.not_before, self.not_after)

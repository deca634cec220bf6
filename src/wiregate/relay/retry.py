"""Which backend a client connection tries next, and when it gives up (sans-I/O, fed the time).

A connection makes at most `retries + 1` connect attempts. Each attempt asks the pool for a usable backend not
tried yet by this connection (a failed connect was already reported with `pool.connect_failed`, so a backend that
fell down is skipped by the pool itself). When every usable backend was tried once and attempts remain, they are
offered again in the pool's order (a lone backend gets its retries: a restart or a lost SYN). The connection gives
up when its attempts are spent or when the pool has no usable backend at all.

`TCPConnection` (relay/tcp.py) owns the socket and the connect timer and calls `next_attempt` before every
attempt; the rule is tested here with a fake clock (tests/relay/test_retry.py). Nothing is allocated per call: the
answer is a backend index or the reason for giving up.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

NO_ANSWER = "no backend answered"  # every attempt failed
NONE_UP = "no backend is up"  # the pool offers nothing (all down, or passively failed and not yet retried)


class Picker(Protocol):
    """What the rule needs of a BackendPool."""

    def pick(self, source: str, now: float = 0.0, exclude: Sequence[int] = ()) -> int | None: ...


def next_attempt(pool: Picker, source: str, now: float, tried: Sequence[int], retries: int) -> int | str:
    """The backend index for the next connect attempt, or the reason to give up (NO_ANSWER, NONE_UP).

    `tried`: the backends this connection already attempted, in order (failed ones; the caller appends the
    answer before connecting). `retries`: attempts allowed after the first."""
    if len(tried) > retries:
        return NO_ANSWER
    i = pool.pick(source, now, tried)
    if i is None and tried:  # every usable backend tried once and attempts remain: offer them again
        i = pool.pick(source, now)
    return NONE_UP if i is None else i

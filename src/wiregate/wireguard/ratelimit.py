"""Token buckets for handshake work: a global budget and one bucket per source (wireguard-go ratelimiter.go).

Sans-I/O: every call takes `now` (monotonic seconds); nothing reads a clock. The Device uses them to bound what a
flood of handshake messages with a valid MAC1 can cost the event loop it shares with the data path:

* cookie replies, per source and overall (wireguard-go has no such budget: its handshake workers run on their own
  cores; ours share one event loop with the relay, where 20,000 initiations/s answered one by one saturated it);
* handshake messages processed (the Diffie-Hellman work), overall;
* handshake messages with a valid MAC2 under load, per source (wireguard-go: 20/s, burst 5).
"""

from __future__ import annotations

import socket

__all__ = ["SourceLimiter", "TokenBucket", "source_key"]

_EPS = 1e-9


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved; starts full."""

    __slots__ = ("rate", "burst", "tokens", "last")

    def __init__(self, rate: float, burst: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("TokenBucket: rate must be > 0 and burst >= 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self.tokens = float(burst)
        self.last = float("-inf")

    def _refill(self, now: float) -> None:
        if now > self.last:
            if self.last == float("-inf"):
                self.tokens = self.burst
            else:
                self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now

    def allow(self, now: float) -> bool:
        """Take one token if there is one."""
        self._refill(now)
        if self.tokens >= 1.0 - _EPS:  # ready_at's answer must be enough despite float rounding
            self.tokens -= 1.0
            return True
        return False

    def available(self, now: float) -> int:
        """Whole tokens available at `now` (none taken)."""
        self._refill(now)
        return int(self.tokens + _EPS)

    def ready_at(self, n: int) -> float:
        """When `n` tokens (capped at the burst) are available: a time at or before the last call's `now` when
        they already are, else when the refill gets there."""
        n2 = min(float(n), self.burst)
        if self.tokens >= n2 - _EPS:
            return self.last
        return self.last + (n2 - self.tokens) / self.rate + _EPS


def source_key(ip: str) -> bytes:
    """What a per-source limit counts by: the IPv4 address, or the /64 of an IPv6 address (wireguard-go does the
    same: one host usually owns a whole /64). IPv4-mapped IPv6 counts as the IPv4 address."""
    if ":" not in ip:
        try:
            return socket.inet_aton(ip)
        except OSError:
            return ip.encode()
    try:
        packed = socket.inet_pton(socket.AF_INET6, ip.split("%", 1)[0])
    except OSError:
        return ip.encode()
    if packed[:12] == b"\x00" * 10 + b"\xff\xff":
        return packed[12:]
    return packed[:8]


class SourceLimiter:
    """One token bucket per source (`rate`/s, `burst`), in a table of at most `max_sources` entries.

    An entry idle for long enough to be full again is the same as no entry, so the table is swept of those at most
    once per `sweep_every` seconds (amortised O(1) per call). When the table is full of live sources a new source
    is not tracked and `allow` returns True: it is then held only by the global budget the caller also applies
    (refusing it would let a spoofed flood lock every newcomer out)."""

    __slots__ = ("rate", "burst", "max_sources", "sweep_every", "_table", "_last_sweep", "_idle_full")

    def __init__(self, rate: float, burst: float, *, max_sources: int = 16384, sweep_every: float = 1.0) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("SourceLimiter: rate must be > 0 and burst >= 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_sources = max_sources
        self.sweep_every = sweep_every
        self._table: dict[bytes, list[float]] = {}  # source -> [tokens, last]
        self._last_sweep = float("-inf")
        self._idle_full = burst / rate  # an entry idle this long holds a full bucket again

    def __len__(self) -> int:
        return len(self._table)

    def allow(self, ip: str, now: float) -> bool:
        """Take one token from `ip`'s bucket if it has one."""
        table = self._table
        key = source_key(ip)
        entry = table.get(key)
        if entry is None:
            if len(table) >= self.max_sources and now - self._last_sweep >= self.sweep_every:
                self._last_sweep = now
                idle = max(self._idle_full, self.sweep_every)
                for k in [k for k, v in table.items() if now - v[1] >= idle]:
                    del table[k]
            if len(table) >= self.max_sources:
                return True
            table[key] = [self.burst - 1.0, now]
            return True
        tokens = entry[0]
        if now > entry[1]:
            tokens += (now - entry[1]) * self.rate
            if tokens > self.burst:
                tokens = self.burst
            entry[1] = now
        if tokens >= 1.0:
            entry[0] = tokens - 1.0
            return True
        entry[0] = tokens
        return False

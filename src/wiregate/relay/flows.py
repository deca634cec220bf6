"""UDP flow table, sans-I/O: client address -> flow, with idle expiry and a size bound.

Entries are kept in last-seen order, so expiry only looks at the oldest ones. When the table is full after
expiry, a new client is refused (its datagram dropped) rather than evicting a live flow: evicting would let a
flood of spoofed sources cut every real client off. Flows are also counted per source (the client's address,
whatever its ports) so one address cannot take the whole table (`max_per_source`).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from typing import Generic, Hashable, Iterator, TypeVar

V = TypeVar("V")


class FlowTable(Generic[V]):
    """Bounded map from a key (the client address) to a flow value, expiring flows idle for `idle_timeout`."""

    def __init__(self, max_flows: int, idle_timeout: float, max_per_source: int | None = None) -> None:
        self.max_flows = max_flows
        self.idle_timeout = idle_timeout
        self.max_per_source = max_per_source
        self._flows: OrderedDict[Hashable, list] = OrderedDict()  # key -> [value, last_seen, source]
        self._per_source: Counter = Counter()

    def __len__(self) -> int:
        return len(self._flows)

    def __iter__(self) -> Iterator[V]:
        return (entry[0] for entry in self._flows.values())

    def get(self, key: Hashable, now: float) -> V | None:
        """The flow for `key`, marking it seen at `now`; None when there is none."""
        entry = self._flows.get(key)
        if entry is None:
            return None
        entry[1] = now
        self._flows.move_to_end(key)
        return entry[0]

    def touch(self, key: Hashable, now: float) -> None:
        """Traffic in either direction keeps a flow alive."""
        entry = self._flows.get(key)
        if entry is not None:
            entry[1] = now
            self._flows.move_to_end(key)

    def room(self, now: float) -> tuple[bool, list[V]]:
        """Whether a new flow fits at `now`, after expiring idle ones (returned so the caller closes them)."""
        expired = self.expire(now)
        return len(self._flows) < self.max_flows, expired

    def source_full(self, source: Hashable) -> bool:
        """Whether `source` already holds max_per_source flows."""
        return self.max_per_source is not None and self._per_source[source] >= self.max_per_source

    def add(self, key: Hashable, value: V, now: float, source: Hashable = None) -> None:
        """Insert a flow; the caller checked `room` (and `source_full`) first."""
        if len(self._flows) >= self.max_flows:
            raise OverflowError("flow table full")
        self._flows[key] = [value, now, source]
        if source is not None:
            self._per_source[source] += 1

    def _forget(self, entry: list) -> None:
        source = entry[2]
        if source is not None:
            n = self._per_source[source] - 1
            if n > 0:
                self._per_source[source] = n
            else:
                del self._per_source[source]

    def pop(self, key: Hashable) -> V | None:
        """Remove and return the flow for `key`."""
        entry = self._flows.pop(key, None)
        if entry is None:
            return None
        self._forget(entry)
        return entry[0]

    def expire(self, now: float) -> list[V]:
        """Remove and return flows idle for at least idle_timeout."""
        out: list[V] = []
        flows = self._flows
        limit = now - self.idle_timeout
        while flows:
            key, entry = next(iter(flows.items()))
            if entry[1] > limit:
                break
            flows.popitem(last=False)
            self._forget(entry)
            out.append(entry[0])
        return out

    def next_deadline(self) -> float | None:
        """When the oldest flow expires (None when empty)."""
        if not self._flows:
            return None
        return next(iter(self._flows.values()))[1] + self.idle_timeout

    def clear(self) -> list[V]:
        """Remove and return every flow."""
        out = [e[0] for e in self._flows.values()]
        self._flows.clear()
        self._per_source.clear()
        return out

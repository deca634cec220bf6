"""Sliding-window replay filter for transport counters (RFC 6479 style, as in wireguard-go replay/replay.go).

A ring of 128 blocks of 64 bits; the newest block is always being filled, so the usable window is 127 * 64 = 8128
counters behind the highest one seen. It is consulted only after a packet authenticated (whitepaper 5.4.6), so a
forged counter cannot move the window.
"""

from __future__ import annotations

BLOCK_BIT_LOG = 6
BLOCK_BITS = 1 << BLOCK_BIT_LOG
RING_BLOCKS = 1 << 7
WINDOW_SIZE = (RING_BLOCKS - 1) * BLOCK_BITS  # 8128
_BLOCK_MASK = RING_BLOCKS - 1
_BIT_MASK = BLOCK_BITS - 1


class ReplayFilter:
    """Accepts each counter at most once, and none more than WINDOW_SIZE behind the highest accepted."""

    __slots__ = ("last", "ring")

    def __init__(self) -> None:
        self.last = 0
        self.ring = [0] * RING_BLOCKS

    def validate(self, counter: int, limit: int) -> bool:
        """True (and remember it) when `counter` < limit is new and inside the window."""
        if counter >= limit:
            return False
        index = counter >> BLOCK_BIT_LOG
        last = self.last
        ring = self.ring
        if counter > last:
            current = last >> BLOCK_BIT_LOG
            diff = index - current
            if diff:
                if diff > RING_BLOCKS:
                    diff = RING_BLOCKS
                for i in range(current + 1, current + diff + 1):
                    ring[i & _BLOCK_MASK] = 0
            self.last = counter
        elif last - counter > WINDOW_SIZE:
            return False
        index &= _BLOCK_MASK
        bit = 1 << (counter & _BIT_MASK)
        old = ring[index]
        if old & bit:
            return False
        ring[index] = old | bit
        return True

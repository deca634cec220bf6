"""AllowedIPs: the cryptokey routing table (whitepaper section 2), longest-prefix match for IPv4 and IPv6.

One hash table per prefix length present, probed from the longest length down: a lookup costs one dict probe per
distinct prefix length in use (usually one to three), which is cheaper in Python than walking a bit trie.
A prefix belongs to at most one peer; inserting it for another peer moves it, as `wg set` does.
"""

from __future__ import annotations

import ipaddress
from typing import Generic, TypeVar

from wiregate.errors import ConfigError

T = TypeVar("T")


def parse_prefix(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """Parse 'addr/len' (or a bare address = host route); host bits are cleared as wg does. ConfigError if bad."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except (ValueError, TypeError):
        raise ConfigError(f"AllowedIPs: {text!r} is not an IP prefix (expected e.g. 10.0.0.2/32 or fd00::/64)") \
            from None


class _Family(Generic[T]):
    __slots__ = ("bits", "tables", "levels")

    def __init__(self, bits: int) -> None:
        self.bits = bits
        self.tables: dict[int, dict[int, T]] = {}
        self.levels: list[tuple[int, dict[int, T]]] = []  # (shift, table), longest prefix first

    def _relevel(self) -> None:
        self.levels = [(self.bits - plen, self.tables[plen]) for plen in sorted(self.tables, reverse=True)]

    def insert(self, net: int, plen: int, value: T) -> None:
        table = self.tables.get(plen)
        if table is None:
            table = self.tables[plen] = {}
            self._relevel()
        table[net >> (self.bits - plen)] = value

    def remove_value(self, value: T) -> None:
        changed = False
        for plen in list(self.tables):
            table = self.tables[plen]
            for k in [k for k, v in table.items() if v is value]:
                del table[k]
            if not table:
                del self.tables[plen]
                changed = True
        if changed:
            self._relevel()

    def remove(self, net: int, plen: int, value: T) -> None:
        table = self.tables.get(plen)
        if table is None:
            return
        key = net >> (self.bits - plen)
        if table.get(key) is value:
            del table[key]
            if not table:
                del self.tables[plen]
                self._relevel()

    def exact(self, net: int, plen: int) -> T | None:
        table = self.tables.get(plen)
        return None if table is None else table.get(net >> (self.bits - plen))

    def lookup(self, addr: int) -> T | None:
        for shift, table in self.levels:
            v = table.get(addr >> shift)
            if v is not None:
                return v
        return None


class AllowedIPs(Generic[T]):
    """Prefix -> owner table; `lookup_v4`/`lookup_v6` take the raw 4/16 address bytes from a packet header."""

    def __init__(self) -> None:
        self._v4: _Family[T] = _Family(32)
        self._v6: _Family[T] = _Family(128)

    def insert(self, prefix: str, value: T) -> str:
        """Map `prefix` to `value` (replacing any previous owner); returns the normalised prefix text."""
        net = parse_prefix(prefix)
        fam = self._v4 if net.version == 4 else self._v6
        fam.insert(int(net.network_address), net.prefixlen, value)
        return str(net)

    def owner(self, prefix: str) -> T | None:
        """Who holds exactly this prefix (not a longest match), or None."""
        net = parse_prefix(prefix)
        fam = self._v4 if net.version == 4 else self._v6
        return fam.exact(int(net.network_address), net.prefixlen)

    def remove(self, prefix: str, value: T) -> None:
        """Remove `prefix` if `value` owns it (cost independent of the table's size, unlike remove_value)."""
        net = parse_prefix(prefix)
        fam = self._v4 if net.version == 4 else self._v6
        fam.remove(int(net.network_address), net.prefixlen, value)

    def remove_value(self, value: T) -> None:
        """Remove every prefix owned by `value` (scans the whole table)."""
        self._v4.remove_value(value)
        self._v6.remove_value(value)

    def lookup_v4(self, addr: bytes) -> T | None:
        """Owner of the longest prefix containing the IPv4 address `addr` (4 bytes)."""
        return self._v4.lookup(int.from_bytes(addr, "big"))

    def lookup_v6(self, addr: bytes) -> T | None:
        """Owner of the longest prefix containing the IPv6 address `addr` (16 bytes)."""
        return self._v6.lookup(int.from_bytes(addr, "big"))

    def lookup(self, addr: bytes) -> T | None:
        """Owner for a 4- or 16-byte address."""
        return self.lookup_v4(addr) if len(addr) == 4 else self.lookup_v6(addr)

"""The one `host:port` syntax of wiregate: `parse`, `format` and `unmap` (IPv4-mapped IPv6 back to IPv4).

Every file, command line, UAPI message and log line that carries an address with a port goes through here; a test
(tests/test_hostport.py) fails when another module splits `host:port` text itself.

The rules, decided once:
- Text is `HOST:PORT`. HOST is an IPv4 address (`192.0.2.1`), an IPv6 address in brackets (`[2001:db8::1]`,
  with an optional zone: `[fe80::1%eth0]`), or a DNS name where the caller takes names (`vpn.example.net`).
- An IPv6 address is always written in brackets, with or without a port: `2001:db8::1:443` would be both an address
  and an address plus a port, so a bare IPv6 address is refused with a hint.
- The port is 1..65535 in decimal ASCII digits; port 0 only where the caller asks (`allow_port_zero`: "any port"
  for a socket to bind, or what UAPI may carry).
- A bare `HOST` (no `:PORT`) only where the caller gives a `default_port` (WireGuard endpoints: 51820).
- A DNS name is 1-253 characters of dot-separated labels (letters, digits, inner `-`, at most 63 each; a final `.`
  allowed) whose last label is not all digits (`1.2.3.999` is a bad IPv4 address, not a name). Where only IP
  literals make sense (addresses to bind, UAPI), `names=False` refuses names; `keywords` admits fixed words such
  as the home side's `tunnel`.
- An IPv4-mapped IPv6 address (`[::ffff:192.0.2.1]`) denotes the IPv4 host and comes out as IPv4; `unmap` /
  `unmap_host` do the same to socket addresses (a dual-stack socket reports an IPv4 peer that way).
- The value is canonical: IP addresses as Python's `ipaddress` writes them (lower case, shortest IPv6), names as
  given. `parse(format(a)) == a` for every canonical `Address` (property-tested).
- The standalone relay and ingress files also take the list form `["HOST", PORT]` (IPv6 without brackets there,
  the list makes it unambiguous); it is checked by the same rules.

Errors are one `AddressError` (a ConfigError) whose message is `what: value: why`, as everywhere in the config.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection
from typing import Any, NamedTuple

from wiregate.errors import ConfigError, show

__all__ = ["Address", "AddressError", "format", "parse", "unmap", "unmap_host"]

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_NAME = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})*\.?\Z")
_ZONE = re.compile(r"[A-Za-z0-9_.-]{1,15}\Z")  # an interface name or index
_V6_HINT = "an IPv6 address goes in brackets: \"[2001:db8::1]:443\""


class AddressError(ConfigError):
    """A `host:port` value that does not follow the rules; `why` is the reason alone (for protocol replies)."""

    def __init__(self, what: str, value: object, why: str) -> None:
        super().__init__(f"{what}: {show(value)}: {why}")
        self.why = why


class Address(NamedTuple):
    """A host and a port. A NamedTuple (frozen, slotted) on purpose: it is a `(host, port)` tuple, so sockets,
    unpacking and the code that keeps plain tuples take it unchanged."""

    host: str
    port: int

    def __str__(self) -> str:
        return format(self)

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        """The host as an IP address, None for a DNS name or keyword."""
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None

    def unscoped(self) -> Address:
        """The same address without an IPv6 zone (`fe80::1%eth0` -> `fe80::1`)."""
        return Address(self.host.partition("%")[0], self.port) if "%" in self.host else self


def format(addr: tuple[Any, ...]) -> str:  # noqa: A001 - the module's one formatter, used as hostport.format
    """`(host, port)` (or a longer socket address) -> `host:port` text, IPv6 in brackets."""
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def unmap_host(host: str, *, drop_scope: bool = False) -> str:
    """An IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, or `::ffff:c000:201` as Python 3.11 writes it) as IPv4;
    other hosts unchanged, except that `drop_scope` drops an IPv6 zone (`fe80::1%eth0` -> `fe80::1`)."""
    if host.startswith("::ffff:"):
        if "." in host:  # inet_ntop's form, what sockets report: no parse needed
            return host[7:]
        try:
            mapped = ipaddress.IPv6Address(host).ipv4_mapped
        except ValueError:
            return host
        return host if mapped is None else str(mapped)
    if drop_scope and "%" in host:
        return host.partition("%")[0]
    return host


def unmap(sockaddr: tuple[Any, ...], *, drop_scope: bool = False) -> tuple[str, int]:
    """A socket address as `(host, port)` with `unmap_host` applied (a dual-stack socket reports an IPv4 peer as
    `::ffff:a.b.c.d`; clients, logs and PROXY headers want the IPv4 address)."""
    host = sockaddr[0]
    if host.startswith("::ffff:") or (drop_scope and "%" in host):  # per connection / datagram: the usual host
        host = unmap_host(host, drop_scope=drop_scope)              # costs no call (160 -> 120 ns)
    return host, sockaddr[1]


def _ip(text: str, v6: bool) -> str | None:
    """Canonical text of an IP literal (IPv4, or IPv6 with an optional zone), or None."""
    try:
        ip = ipaddress.IPv6Address(text) if v6 else ipaddress.IPv4Address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id is not None:
            return str(ip) if _ZONE.match(ip.scope_id) else None
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
    return str(ip)


def _port(what: str, value: object, port: str | int, allow_zero: bool) -> int:
    if isinstance(port, str):
        digits = port.lstrip("0") or "0"
        if not (port.isascii() and port.isdigit()) or len(digits) > 5:
            raise AddressError(what, value, "port is not a number")
        port = int(digits)
    if not (0 if allow_zero else 1) <= port <= 65535:
        raise AddressError(what, value, "port out of range")
    return port


def _host(what: str, value: object, text: str, names: bool, keywords: Collection[str], v6: bool) -> str:
    if not text:
        raise AddressError(what, value, "missing host")
    ip = _ip(text, v6)
    if ip is not None:
        return ip
    if v6:
        raise AddressError(what, value, "not an IPv6 address in the brackets")
    if text in keywords:
        return text
    if names and _NAME.match(text) and not text.rstrip(".").rpartition(".")[2].isdigit():
        return text
    also = f" (or {' or '.join(repr(k) for k in keywords)})" if keywords else ""
    raise AddressError(what, value, f"host is neither an IP address{also} nor a DNS name" if names
                       else f"address must be an IP address{also}")


def parse(value: object, *, default_port: int | None = None, allow_port_zero: bool = False, names: bool = True,
          keywords: Collection[str] = (), what: str = "address") -> Address:
    """`HOST:PORT` text (or a `[HOST, PORT]` list) -> a canonical Address, by the rules in the module docstring;
    AddressError `what: value: why` otherwise. `default_port` admits a bare HOST; `names=False` takes IP
    literals only; `keywords` are words taken as hosts as they are."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or not isinstance(value[0], str):
            raise AddressError(what, value, "must be \"HOST:PORT\" or [HOST, PORT]")
        text = value[0]
        v6 = ":" in text
        if v6 and text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        if type(value[1]) is not int:  # a number in the list form, as it always was
            raise AddressError(what, value, "port must be an integer")
        return Address(_host(what, value, text, names, keywords, v6), _port(what, value, value[1], allow_port_zero))
    if not isinstance(value, str):
        raise AddressError(what, value, "must be a string \"HOST:PORT\"")
    port_text: str | None
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise AddressError(what, value, "missing ']' after an IPv6 address")
        text, rest = value[1:end], value[end + 1:]
        if rest and not rest.startswith(":"):
            raise AddressError(what, value, "expected ':port' after ']'")
        port_text = rest[1:] if rest else None
        v6 = True
    elif value.count(":") > 1:
        raise AddressError(what, value, _V6_HINT)
    else:
        text, sep, port_text = value.partition(":")
        port_text = port_text if sep else None
        v6 = False
    host = _host(what, value, text, names, keywords, v6)
    if port_text is None:
        if default_port is None:
            raise AddressError(what, value, "missing ':port'")
        return Address(host, default_port)
    return Address(host, _port(what, value, port_text, allow_port_zero))

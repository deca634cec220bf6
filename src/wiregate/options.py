"""The one schema machinery of wiregate's configuration files: typed options, tables, value parsers, one error format.

Every part declares the options of its own values beside its frozen dataclasses (relay/config.py: services,
backends, health checks; ingress/config.py: listeners and routes); the gateway and home files
(config/schema.py) compose those very `Opt` objects into their tables instead of declaring them again, and the
standalone relay and ingress files are read by the same tables. So an option has one name, one parser (type and
bounds), one default and one line of documentation wherever it is written (docs/extending.md: how to add one).

    MAX = Opt("max_widgets", int_range(1, 100), 10, "widgets at most")
    values = parse({"max_widgets": 500}, Table("svc", "a service", (MAX,)), "services[2]")
    # ConfigError: services[2].max_widgets: 500: out of range 1..100

Errors are one line, `path: value: why` (`fail`): the key path as written in the file
(`listeners[2].max_sniff_bytes`), the value as JSON would write it, the reason. The loaders put the file name in
front (`home.toml: listeners[2]...`).

This module is below every part: it imports only `wiregate.errors` and `wiregate.hostport` (the one `host:port`
parser), never config/, relay/ or ingress/ (tests/test_layers.py).
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from wiregate import hostport
from wiregate.errors import ConfigError, show

__all__ = [
    "REQUIRED", "Opt", "Parser", "Table", "carry", "check", "choice", "endpoint_parser", "fail", "int_range",
    "list_of", "listen_list_parser", "listen_parser", "name_parser", "p_bool", "p_hostname", "p_ifname",
    "p_interface", "p_int", "p_ip", "p_label", "p_listen", "p_listen_list", "p_name", "p_network", "p_opt_listen",
    "p_opt_str", "p_path", "p_seconds", "p_seconds0", "p_str", "p_target", "p_url", "parse", "size_range",
    "suggest", "target_parser",
]

Parser = Callable[[str, object], Any]
REQUIRED: Any = object()  # marks an option without a default

_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}\Z")
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(\.{_LABEL})*\.?\Z")


def fail(path: str, value: object, why: str) -> ConfigError:
    """The ConfigError `path: value: why` for `path` holding `value` (the caller raises it)."""
    return ConfigError(f"{path}: {show(value)}: {why}")


# -- value parsers: (path, raw) -> parsed; they raise fail(...). Each takes its own output back unchanged, so a
#    frozen dataclass built in code is checked by the same parsers (`check`). --------------------------------------
def p_str(path: str, v: object) -> str:
    if not isinstance(v, str):
        raise fail(path, v, "must be a string")
    return v


def p_opt_str(path: str, v: object) -> str:
    """A string; null (JSON) reads as "" (the standalone files write an unset value as null)."""
    return "" if v is None else p_str(path, v)


p_opt_str.__doc__ = "string"


def name_parser(longest: int) -> Parser:
    pattern = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{longest - 1}}}\Z")

    def parse(path: str, v: object) -> str:
        if not isinstance(v, str) or not pattern.match(v):
            raise fail(path, v, f"must be 1-{longest} letters, digits, '_', '.', '-' (starting with a letter or "
                                "digit)")
        return v
    parse.__doc__ = "name"
    return parse


p_name = name_parser(32)


def p_ifname(path: str, v: object) -> str:
    if not isinstance(v, str) or not _IFNAME.match(v) or v in (".", ".."):
        raise fail(path, v, "must be an interface name of 1-15 letters, digits, '_', '.', '-'")
    return v


def p_bool(path: str, v: object) -> bool:
    if type(v) is not bool:
        raise fail(path, v, "must be true or false")
    return v


def p_int(path: str, v: object) -> int:
    if type(v) is not int:
        raise fail(path, v, "must be an integer")
    return v


p_int.__doc__ = "integer"


def int_range(lo: int, hi: int, unit: str = "") -> Parser:
    """An integer lo..hi (bounds included); `unit` only documents it (`bytes`)."""
    def parse(path: str, v: object) -> int:
        if type(v) is not int:
            raise fail(path, v, "must be an integer")
        if not lo <= v <= hi:
            raise fail(path, v, f"out of range {lo}..{hi}")
        return v
    parse.__doc__ = f"integer {lo}..{hi}" + (f" ({unit})" if unit else "")
    return parse


def size_range(lo: int, hi: int) -> Parser:
    """A size in bytes, lo..hi."""
    return int_range(lo, hi)


def _number(v: object) -> float | None:
    return float(v) if type(v) in (int, float) and math.isfinite(v) else None  # type: ignore[arg-type]


def p_seconds(path: str, v: object) -> float:
    """A duration in seconds, > 0."""
    n = _number(v)
    if n is None or n <= 0:
        raise fail(path, v, "must be a number of seconds > 0")
    return n


def p_seconds0(path: str, v: object) -> float:
    """A duration in seconds, >= 0."""
    n = _number(v)
    if n is None or n < 0:
        raise fail(path, v, "must be a number of seconds >= 0")
    return n


def choice(*options: str) -> Parser:
    """One of fixed strings."""
    def parse(path: str, v: object) -> str:
        if not isinstance(v, str) or v not in options:
            raise fail(path, v, f"must be one of {', '.join(options)}")
        return v
    parse.__doc__ = " \\| ".join(f"`{o}`" for o in options)
    return parse


def p_ip(path: str, v: object) -> str:
    """An IP address (no prefix)."""
    if not isinstance(v, str):
        raise fail(path, v, "must be an IP address string")
    try:
        return str(ipaddress.ip_address(v))
    except ValueError:
        raise fail(path, v, "not an IP address") from None


def p_interface(path: str, v: object) -> str:
    """An address with its prefix length, e.g. 192.0.2.1/24."""
    if not isinstance(v, str) or "/" not in v:
        raise fail(path, v, "must be an address with a prefix length, e.g. \"192.0.2.1/24\"")
    try:
        iface = ipaddress.ip_interface(v)
    except ValueError:
        raise fail(path, v, "not an address/prefix") from None
    if iface.ip in (iface.network.network_address, iface.network.broadcast_address) and \
            iface.network.num_addresses > 2:
        raise fail(path, v, "is the network or broadcast address of its prefix, not a host address")
    return str(iface)


# Addresses: every one goes through wiregate.hostport (the only host:port parser). Files write "HOST:PORT"; a value
# built in code is a (host, port) tuple. The standalone relay and ingress files also take the older list form
# ["HOST", PORT]: their reader hands lists over as tuples (`parse(..., lists=True)`), checked by the same rules.
def listen_parser(*, keywords: tuple[str, ...] = (), port_zero: bool = False) -> Parser:
    """`ADDRESS:PORT` to bind: an IP literal (`[::]:443` for IPv6), or one of `keywords`."""
    def parse(path: str, v: object) -> hostport.Address:
        if not isinstance(v, (str, tuple)):
            raise fail(path, v, "must be a string \"ADDRESS:PORT\"")
        return hostport.parse(v, names=False, keywords=keywords, allow_port_zero=port_zero, what=path)
    parse.__doc__ = "`ADDRESS:PORT`"
    return parse


def listen_list_parser(item: Parser) -> Parser:
    """A non-empty list of addresses to bind, each parsed by `item` (a single one is accepted too)."""
    def parse(path: str, v: object) -> tuple[hostport.Address, ...]:
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, (list, tuple)) or not v:
            raise fail(path, v, "must be a non-empty list of \"ADDRESS:PORT\" strings")
        out = [item(f"{path}[{i}]", x) for i, x in enumerate(v)]
        if len(set(out)) != len(out):
            raise fail(path, [hostport.format(a) for a in out], "lists the same address twice")
        return tuple(out)
    parse.__doc__ = "list of `ADDRESS:PORT`"
    return parse


# the home side's `tunnel:PORT` means the home tunnel address; the gateway file refuses the keyword in its checks
p_listen = listen_parser(keywords=("tunnel",))
p_listen_list = listen_list_parser(p_listen)


def endpoint_parser(default_port: int) -> Parser:
    def parse(path: str, v: object) -> hostport.Address:
        if not isinstance(v, str):
            raise fail(path, v, "must be a string \"HOST[:PORT]\"")
        return hostport.parse(v, default_port=default_port, what=path)
    parse.__doc__ = f"`HOST[:PORT]` (DNS name or IP; port {default_port} when left out)"
    return parse


def target_parser() -> Parser:
    """`HOST:PORT` to connect to (IP or DNS name)."""
    def parse(path: str, v: object) -> hostport.Address:
        if not isinstance(v, (str, tuple)):
            raise fail(path, v, "must be a string \"HOST:PORT\"")
        return hostport.parse(v, what=path)
    parse.__doc__ = "`HOST:PORT`"
    return parse


p_target = target_parser()


def p_label(path: str, v: object) -> str:
    """A non-empty string (a name in the standalone files)."""
    if not isinstance(v, str) or not v:
        raise fail(path, v, "must be a non-empty string")
    return v


def p_path(path: str, v: object) -> str:
    """A file path; relative paths are taken from the directory of the config file."""
    if not isinstance(v, str) or not v or "\0" in v:
        raise fail(path, v, "must be a non-empty file path")
    return v


def p_opt_listen(path: str, v: object) -> hostport.Address | None:
    """`ADDRESS:PORT`, or "" to turn it off."""
    if v == "" or v is None:
        return None
    return p_listen(path, v)


def list_of(item: Parser, doc: str, *, nonempty: bool = False) -> Parser:
    def parse(path: str, v: object) -> tuple[Any, ...]:
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, (list, tuple)) or (nonempty and not v):
            raise fail(path, v, "must be a " + ("non-empty " if nonempty else "") + "list")
        return tuple(item(f"{path}[{i}]", x) for i, x in enumerate(v))
    parse.__doc__ = doc
    return parse


def p_network(path: str, v: object) -> str:
    if not isinstance(v, str):
        raise fail(path, v, "must be an address or prefix string")
    try:
        return str(ipaddress.ip_network(v, strict=False))
    except ValueError:
        raise fail(path, v, "not an IP address or prefix") from None


def p_hostname(path: str, v: object) -> str:
    if not isinstance(v, str) or not (_HOST.match(v.removeprefix("*.")) and v):
        raise fail(path, v, "not a host name (a leading '*.' is allowed)")
    return v.lower().rstrip(".")


def p_url(path: str, v: object) -> str:
    """An https:// URL (http:// only for a CA on loopback)."""
    if not isinstance(v, str) or not re.match(r"https://[^/\s]+(/\S*)?\Z|http://(127\.0\.0\.1|localhost|\[::1\])"
                                             r"(:\d+)?(/\S*)?\Z", v):
        raise fail(path, v, "must be an https:// URL")
    return v


# -- options and tables -----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Opt:
    """One key: its parser (type and bounds), its default (REQUIRED when none) and one line of documentation."""

    key: str
    parse: Parser
    default: Any
    doc: str

    def but(self, **changes: Any) -> Opt:
        """The same option with another default or doc (the parser, so type and bounds, stay the same)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, slots=True)
class Table:
    """A TOML table (`[name]`) or array of tables (`[[name]]`) with its keys and nested tables."""

    name: str
    doc: str
    opts: tuple[Opt, ...]
    array: bool = False
    required: bool = False
    children: tuple[Table, ...] = ()

    def opt(self, key: str) -> Opt:
        """The option called `key` (KeyError when absent)."""
        for o in self.opts:
            if o.key == key:
                return o
        raise KeyError(key)

    def child(self, name: str) -> Table:
        for c in self.children:
            if c.name == name:
                return c
        raise KeyError(name)

    def keys(self) -> tuple[str, ...]:
        return tuple(o.key for o in self.opts)

    def except_(self, *keys: str) -> tuple[Opt, ...]:
        """Its options but `keys`, in declaration order (what a composing table takes over)."""
        return tuple(o for o in self.opts if o.key not in keys)


def _tuples(v: object) -> object:
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


def parse(doc: Mapping[str, Any], table: Table, path: str = "", *, lists: bool = False) -> dict[str, Any]:
    """Validate `doc` against `table` recursively; returns a dict with defaults filled (REQUIRED keys present).
    `lists`: a standalone part file, whose lists (the old address form ["HOST", PORT] among them) are read as
    tuples, as values built in code are."""
    out: dict[str, Any] = {}
    known = {o.key: o for o in table.opts}
    kids = {c.name: c for c in table.children}
    where = (lambda k: f"{path}.{k}") if path else (lambda k: k)
    for key, value in doc.items():
        sub = where(key)
        if key in known:
            out[key] = known[key].parse(sub, _tuples(value) if lists else value)
        elif key in kids:
            child = kids[key]
            if child.array:
                if isinstance(value, dict):
                    value = [value]
                if not isinstance(value, list) or not all(isinstance(x, dict) for x in value):
                    raise fail(sub, value, f"must be an array of tables ([[{key}]])")
                out[key] = tuple(parse(item, child, f"{sub}[{i}]", lists=lists) for i, item in enumerate(value))
            else:
                if not isinstance(value, dict):
                    raise fail(sub, value, f"must be a table ([{key}])")
                out[key] = parse(value, child, sub, lists=lists)
        else:
            close = suggest(key, [*known, *kids])
            hint = f" (did you mean {close!r}?)" if close else ""
            raise ConfigError(f"{sub}: unknown key{hint}")
    for o in table.opts:
        if o.key not in out:
            if o.default is REQUIRED:
                raise ConfigError(f"{where(o.key)}: missing (required)")
            out[o.key] = o.default
    for c in table.children:
        if c.name not in out:
            if c.required:
                raise ConfigError(f"{where(c.name)}: missing table [{c.name}]")
            out[c.name] = () if c.array else parse({}, c, where(c.name))
    return out


def suggest(key: object, candidates: list[str]) -> str | None:
    """The known key a misspelt one was most likely meant to be (`send_prxy` -> `send_proxy`), or None."""
    if not isinstance(key, str):
        return None
    norm = key.lower().replace("-", "_")
    for c in candidates:
        if c == norm or (len(c) > 3 and len(norm) > 3 and (c in norm or norm in c)):
            return c
    close = difflib.get_close_matches(norm, candidates, n=1, cutoff=0.7)
    return close[0] if close else None


def check(obj: Any, opts: Iterable[Opt], where: str, skip: Iterable[str] = ()) -> None:
    """Check a frozen dataclass built in code by the parsers of its options (the same type, bounds and message
    as in a file); the parsed (canonical) value replaces the given one. Call it from `__post_init__`."""
    skipped = set(skip)
    for o in opts:
        if o.key in skipped:
            continue
        value = getattr(obj, o.key)
        parsed = o.parse(f"{where}.{o.key}" if where else o.key, value)
        if parsed != value or type(parsed) is not type(value):
            object.__setattr__(obj, o.key, parsed)


def carry(file_table: Table, part_opts: Iterable[Opt], values: Mapping[str, Any],
          exclude: Iterable[str] = ()) -> Mapping[str, Any]:
    """The values a composed file (gateway, home) hands to a part unchanged: every option of the part that the
    file's table took over as it is (the very same Opt), but `exclude` (what the file resolves itself). A new
    option declared in the part therefore reaches it from every file without touching the file's code."""
    mine = {o.key: o for o in file_table.opts}
    skipped = set(exclude)
    return MappingProxyType({o.key: values[o.key] for o in part_opts
                             if o.key not in skipped and mine.get(o.key) is o})

"""Ingress configuration values: frozen, validated on construction (ConfigError names the field and the value).

A JSON/TOML document maps 1:1 onto these classes (`from_dict`, `load_config`):

    {"listeners": [{"name": "web", "listen": "0.0.0.0:443", "trusted": ["10.8.0.1"],
                    "routes": [{"name": "app", "target": "127.0.0.1:8443", "sni": ["app.example.org"],
                                "send_proxy": "v2"}],
                    "default_route": null}]}

Addresses are `HOST:PORT` text as everywhere in wiregate (wiregate.hostport); the older list form
`["0.0.0.0", 443]` is still read, by the same rules.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from wiregate import hostport
from wiregate.datafile import load_file
from wiregate.errors import ConfigError

log = logging.getLogger("wiregate.ingress")

SEND_PROXY = ("none", "v1", "v2")
PROTOCOLS = ("tcp", "udp")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network




def _check_name_pattern(where: str, name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: expected a host name, got {name!r}")
    from wiregate.sniff import SniffError, normalize_hostname

    body = name[2:] if name.startswith("*.") else name
    try:
        norm = normalize_hostname(body, where)
    except SniffError:
        raise ConfigError(f"{where}: {name!r} is not a host name (or *.wildcard)") from None
    return ("*." + norm) if name.startswith("*.") else norm


def parse_networks(where: str, items: tuple[str, ...]) -> tuple[Network, ...]:
    """Addresses and CIDRs as networks; ConfigError naming the bad entry."""
    out = []
    for i, item in enumerate(items):
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except (ValueError, TypeError):
            raise ConfigError(f"{where}[{i}]: {item!r} is not an IP address or CIDR") from None
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Route:
    """Where matching connections go and how the client address is passed on."""

    name: str
    target: tuple[str, int]
    sni: tuple[str, ...] = ()
    host: tuple[str, ...] = ()
    path_prefix: str = ""
    send_proxy: str = "none"
    http_headers: bool = False
    tls_cert: str | None = None
    tls_key: str | None = None
    acme: bool = False  # terminate TLS with the certificate the ACME manager keeps for this route (wiregate.acme)
    internal: tuple[str, ...] = ()  # admit only real clients in these networks (empty: everyone)

    def __post_init__(self) -> None:
        w = f"route {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"route.name: expected a non-empty string, got {self.name!r}")
        object.__setattr__(self, "target", hostport.parse(self.target, what=f"{w}.target"))
        object.__setattr__(self, "sni", tuple(_check_name_pattern(f"{w}.sni", n) for n in self.sni))
        object.__setattr__(self, "host", tuple(_check_name_pattern(f"{w}.host", n) for n in self.host))
        if self.path_prefix and (not isinstance(self.path_prefix, str) or not self.path_prefix.startswith("/")):
            raise ConfigError(f"{w}.path_prefix: must start with '/', got {self.path_prefix!r}")
        if self.path_prefix and not self.host:
            raise ConfigError(f"{w}.path_prefix: needs host names to match with (path routing is HTTP only)")
        if self.send_proxy not in SEND_PROXY:
            raise ConfigError(f"{w}.send_proxy: {self.send_proxy!r} is not one of {', '.join(SEND_PROXY)}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError(f"{w}: tls_cert and tls_key go together (got only one)")
        object.__setattr__(self, "internal", tuple(self.internal))
        parse_networks(f"{w}.internal", self.internal)
        if self.acme and (self.tls_cert is not None or not self.sni):
            raise ConfigError(f"{w}.acme: an ACME route needs sni names and no tls_cert/tls_key")
        if self.tls_cert is not None:
            if not self.sni:
                raise ConfigError(f"{w}.tls_cert: TLS termination needs sni names to pick this route")
            for field_, path in (("tls_cert", self.tls_cert), ("tls_key", self.tls_key)):
                if not isinstance(path, str) or not os.path.isfile(path):
                    raise ConfigError(f"{w}.{field_}: {path!r} is not a readable file")
            mode = os.stat(self.tls_key).st_mode  # type: ignore[arg-type]
            if mode & 0o077:
                raise ConfigError(f"{w}.tls_key: {self.tls_key!r} is readable by group/others "
                                  f"(mode {mode & 0o777:o}); chmod 600 it")


@dataclass(frozen=True, slots=True)
class Listener:
    """One listening address: who is trusted to send PROXY headers, and the routes connections may take."""

    name: str
    listen: tuple[str, int]
    protocol: str = "tcp"
    trusted: tuple[str, ...] = ()
    proxy_optional: bool = False
    routes: tuple[Route, ...] = ()
    default_route: str | None = None
    header_timeout: float = 5.0
    max_header_bytes: int = 4096
    sniff_timeout: float = 5.0
    max_connections: int = 10000
    idle_timeout: float = 3600.0
    max_sniff_bytes: int = 16384  # TLS ClientHello / HTTP request head bound (post-quantum hellos pass 2 KiB)
    # the service speaks first (SMTP, MySQL...): untrusted peers of a listener without sni/host routes are
    # connected at once instead of waiting for their first bytes (which are then not checked for a PROXY header)
    server_first: bool = False
    # UDP: flows hold a socket each, so they have their own bounds (see ingress/udp.py and wiregate.limits)
    max_flows: int = 4096
    max_per_source: int = 256  # UDP flows per client address
    flow_idle_timeout: float = 60.0
    # trusted sources count only when their packets arrive on this interface (home: the tunnel's), or on one of
    # these (a home with several gateways: one interface each); None = any
    trusted_interface: str | tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        w = f"listener {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"listener.name: expected a non-empty string, got {self.name!r}")
        # an address to bind; port 0 = any free port (tests, and `addresses` tells which)
        object.__setattr__(self, "listen", hostport.parse(self.listen, names=False, allow_port_zero=True,
                                                          what=f"{w}.listen"))
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"{w}.protocol: {self.protocol!r} is not one of {', '.join(PROTOCOLS)}")
        object.__setattr__(self, "trusted", tuple(self.trusted))
        object.__setattr__(self, "routes", tuple(self.routes))
        parse_networks(f"{w}.trusted", self.trusted)
        names = [r.name for r in self.routes]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ConfigError(f"{w}.routes: route name {sorted(dup)[0]!r} used twice")
        if self.default_route is not None and self.default_route not in names:
            raise ConfigError(f"{w}.default_route: {self.default_route!r} is not one of its routes {names}")
        for f in ("header_timeout", "sniff_timeout", "idle_timeout", "flow_idle_timeout"):
            v = getattr(self, f)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0:
                raise ConfigError(f"{w}.{f}: expected a positive number of seconds, got {v!r}")
        for f, lo in (("max_header_bytes", 16), ("max_connections", 1), ("max_sniff_bytes", 512), ("max_flows", 1),
                      ("max_per_source", 1)):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ConfigError(f"{w}.{f}: expected an integer >= {lo}, got {v!r}")
        ti = self.trusted_interface
        if ti is not None and not (isinstance(ti, str) or (isinstance(ti, tuple) and ti)) or any(
                not isinstance(n, str) or not 0 < len(n) < 16 for n in ((ti,) if isinstance(ti, str) else ti or ())):
            raise ConfigError(f"{w}.trusted_interface: expected an interface name (or a list of them), got {ti!r}")
        if self.max_header_bytes > 65551:
            raise ConfigError(f"{w}.max_header_bytes: {self.max_header_bytes} is over 65551 (largest v2 header)")
        if self.protocol == "udp":
            if self.default_route is None:
                raise ConfigError(f"{w}.default_route: a UDP listener routes by port and needs its route")
            for r in self.routes:
                if r.sni or r.host or r.tls_cert or r.acme or r.http_headers or r.send_proxy == "v1":
                    raise ConfigError(f"{w}: route {r.name!r} uses TCP-only matching or options (sni/host/"
                                      "tls/http_headers/send_proxy v1) on a UDP listener")
        if self.proxy_optional and not self.trusted:
            raise ConfigError(f"{w}.proxy_optional: set without any trusted sources")


@dataclass(frozen=True, slots=True)
class IngressConfig:
    """Every listener of one ingress."""

    listeners: tuple[Listener, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "listeners", tuple(self.listeners))
        names = [x.name for x in self.listeners]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ConfigError(f"listeners: name {sorted(dup)[0]!r} used twice")
        addrs = [(x.protocol, x.listen) for x in self.listeners]
        dup2 = {a for a in addrs if addrs.count(a) > 1}
        if dup2:
            p, a = sorted(dup2)[0]
            raise ConfigError(f"listeners: {p} {hostport.format(a)} is bound twice")


def _build(cls: type, where: str, data: Any, nested: dict[str, Any]) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a table/object, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    extra = sorted(set(data) - known)
    if extra:
        raise ConfigError(f"{where}: unknown key {extra[0]!r} (known: {', '.join(sorted(known))})")
    kw = {}
    for k, v in data.items():
        if k in nested:
            if not isinstance(v, list):
                raise ConfigError(f"{where}.{k}: expected a list, got {type(v).__name__}")
            kw[k] = tuple(nested[k](f"{where}.{k}[{i}]", item) for i, item in enumerate(v))
        elif isinstance(v, list):
            kw[k] = tuple(v)
        else:
            kw[k] = v
    try:
        return cls(**kw)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def route_from_dict(where: str, data: Any) -> Route:
    return _build(Route, where, data, {})


def listener_from_dict(where: str, data: Any) -> Listener:
    return _build(Listener, where, data, {"routes": route_from_dict})


def from_dict(data: Any) -> IngressConfig:
    """An IngressConfig from plain data (parsed JSON or TOML)."""
    return _build(IngressConfig, "ingress", data, {"listeners": listener_from_dict})


def to_dict(config: IngressConfig) -> dict[str, Any]:
    """Plain data that `from_dict` maps back to the same config."""

    def plain(obj: Any) -> Any:
        if isinstance(obj, hostport.Address):
            return hostport.format(obj)
        if hasattr(obj, "__dataclass_fields__"):
            return {f.name: plain(getattr(obj, f.name)) for f in fields(obj)}
        if isinstance(obj, tuple):
            return [plain(x) for x in obj]
        return obj

    return plain(config)


def load_config(path: str | Path) -> IngressConfig:
    """Read a .json or .toml ingress file; ConfigError names the file and what is wrong."""
    return load_file(path, from_dict)

"""Ingress configuration values: frozen, validated on construction (ConfigError `path: value: why`).

The options of a listener and of a route are declared once, in LISTENER and ROUTE below (wiregate.options): the
standalone ingress file is read by them, the home file's `[[listeners]]` and `[[listeners.routes]]` take them over
(config/schema.py), and the dataclasses check themselves with the same parsers. A JSON/TOML document maps 1:1
onto these classes (`from_dict`, `load_config`):

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from wiregate import hostport, options
from wiregate.datafile import load_file
from wiregate.errors import ConfigError
from wiregate.options import REQUIRED, Opt, Table, choice, fail, int_range, list_of, p_bool, p_seconds

log = logging.getLogger("wiregate.ingress")

SEND_PROXY = ("none", "v1", "v2")
PROTOCOLS = ("tcp", "udp")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _p_interfaces(path: str, v: object) -> str | tuple[str, ...] | None:
    """An interface name, a non-empty list of them, or null (any)."""
    if v is None or v == "":
        return None
    names = (v,) if isinstance(v, str) else v
    if not isinstance(names, (list, tuple)) or not names or any(
            not isinstance(n, str) or not 0 < len(n) < 16 for n in names):
        raise fail(path, v, "must be an interface name (or a list of them)")
    return v if isinstance(v, str) else tuple(names)


# -- the options, declared once ---------------------------------------------------------------------------------
# ROUTE and LISTENER list the keys of Route and Listener below (a test keeps them in step); the home file takes
# them over as they are (its own: names, `listen` with `tunnel:PORT`, and the ACME keys of a route).
ROUTE = Table("routes", "where a listener sends a connection; the first match wins", (
    Opt("name", options.p_label, REQUIRED, "route name"),
    Opt("target", options.p_target, REQUIRED, "`HOST:PORT` of the service at home"),
    Opt("sni", list_of(options.p_hostname, "list of host names"), (), "TLS SNI names (passthrough, `*.` wildcards)"),
    Opt("host", list_of(options.p_hostname, "list of host names"), (), "HTTP Host names"),
    Opt("path_prefix", options.p_str, "", "HTTP path prefix (with `host`)"),
    Opt("send_proxy", choice(*SEND_PROXY), "none", "PROXY header sent to the target"),
    Opt("http_headers", p_bool, False, "add X-Forwarded-For / Forwarded to plain HTTP requests"),
    Opt("tls_cert", options.p_path, "",
        "certificate file: terminate TLS at wiregate for the route's `sni` names (else passed through)"),
    Opt("tls_key", options.p_path, "", "key file for tls_cert (mode 0600)"),
    Opt("acme", p_bool, False, "terminate TLS with the certificate `wiregate run` keeps for this route"),
    Opt("internal", list_of(options.p_network, "list of addresses/prefixes"), (),
        "admit only real clients in these networks (empty: everyone)"),
), array=True)

LISTENER = Table("listeners", "ingress listeners: PROXY from trusted peers, plain from anyone else allowed", (
    Opt("name", options.p_label, REQUIRED, "listener name"),
    Opt("listen", options.listen_parser(port_zero=True), REQUIRED, "`ADDRESS:PORT` to bind"),
    Opt("protocol", choice(*PROTOCOLS), "tcp", "transport"),
    Opt("trusted", list_of(options.p_network, "list of addresses/prefixes"), (),
        "peers that must send a PROXY header"),
    Opt("default_route", options.p_opt_str, "",
        "route used when none matches; \"\" = the route naming no `sni`/`host` if there is one, else refuse "
        "(a lone `sni` route serves only its names)"),
    Opt("proxy_optional", p_bool, False,
        "Traefik's mode: trusted peers may omit the PROXY header (off: the PROXY spec forbids guessing; warns)"),
    Opt("header_timeout", p_seconds, 5.0, "seconds to receive the PROXY header"),
    Opt("max_header_bytes", options.size_range(16, 65551), 4096, "longest PROXY header taken"),
    Opt("sniff_timeout", p_seconds, 5.0, "seconds to receive the TLS ClientHello / HTTP head"),
    Opt("max_sniff_bytes", options.size_range(512, 1_048_576), 16384, "longest TLS ClientHello / HTTP request head"),
    Opt("max_connections", int_range(1, 1_000_000), 10000, "open connections at most"),
    Opt("idle_timeout", p_seconds, 3600.0, "seconds a TCP connection may stay silent"),
    Opt("flow_idle_timeout", p_seconds, 60.0, "UDP: seconds a silent client flow is kept"),
    Opt("max_flows", int_range(1, 1_000_000), 4096,
        "UDP: client flows at most, one socket each (held lower when the descriptor limit cannot hold it)"),
    Opt("max_per_source", int_range(1, 1_000_000), 256, "UDP: flows per client address at most"),
    Opt("server_first", p_bool, False,
        "the service speaks first (SMTP, SSH...): plain peers are connected without waiting for their bytes"),
    Opt("trusted_interface", _p_interfaces, None,
        "trusted peers count only when their packets arrive on this interface (or one of these); null = any"),
), array=True, children=(ROUTE,))


# -- rules across keys, shared with the home file (config/model.py) ------------------------------------------------
def check_route(where: str, r: Mapping[str, Any]) -> None:
    """The rules between a route's keys (plain values: "" or None for an unset file)."""
    prefix = r.get("path_prefix") or ""
    if prefix and not prefix.startswith("/"):
        raise fail(f"{where}.path_prefix", prefix, "must start with '/'")
    if prefix and not r.get("host"):
        raise fail(f"{where}.path_prefix", prefix, "needs host names to match with (path routing is HTTP only)")
    cert, key = r.get("tls_cert") or "", r.get("tls_key") or ""
    if bool(cert) != bool(key):
        raise fail(f"{where}.tls_cert", str(cert), "tls_cert and tls_key go together")
    if cert and not r.get("sni"):
        raise fail(f"{where}.tls_cert", str(cert), "terminating TLS needs the sni names this certificate serves "
                   "(sni = [...])")


def resolve_default(where: str, routes: Sequence[tuple[str, bool]], default: str) -> str:
    """The listener's default route from (name, names no sni/host/path) per route and `default_route` ("": unset).

    A route naming no sni/host matches no name, so it can only be the listener's default: that is what it means.
    A route with sni/host is never a default unless default_route says so (one SNI route must not serve every
    name); "" with no such route refuses what no route matches."""
    names = [n for n, _ in routes]
    if default and default not in names:
        raise fail(f"{where}.default_route", default, "is not a route of this listener")
    catch_all = [j for j, (_, plain) in enumerate(routes) if plain]
    if len(catch_all) > 1:
        j = catch_all[1]
        raise fail(f"{where}.routes[{j}]", names[j],
                   f"names no sni/host, like route {names[catch_all[0]]!r} before it (which takes every "
                   "connection no other route matches); give it sni or host")
    if catch_all and default and names[catch_all[0]] != default:
        j = catch_all[0]
        raise fail(f"{where}.routes[{j}]", names[j], f"names no sni/host, so it would match nothing while "
                   f"default_route is {default!r}; give it sni or host, or name it in default_route")
    return default or (names[catch_all[0]] if catch_all else "")


def parse_networks(where: str, items: tuple[str, ...]) -> tuple[Network, ...]:
    """Addresses and CIDRs as networks; ConfigError naming the bad entry."""
    out = []
    for i, item in enumerate(items):
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except (ValueError, TypeError):
            raise fail(f"{where}[{i}]", item, "not an IP address or prefix") from None
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
        options.check(self, ROUTE.opts[:1], "route")
        w = f"route {self.name!r}"
        options.check(self, ROUTE.opts[1:], w, skip=("tls_cert", "tls_key"))
        check_route(w, {f.name: getattr(self, f.name) for f in fields(self)})
        if self.acme and (self.tls_cert is not None or not self.sni):
            raise fail(f"{w}.acme", True, "an ACME route needs sni names and no tls_cert/tls_key")
        if self.tls_cert is not None:
            for field_, path in (("tls_cert", self.tls_cert), ("tls_key", self.tls_key)):
                if not isinstance(path, str) or not os.path.isfile(path):
                    raise fail(f"{w}.{field_}", path, "is not a readable file")
            mode = os.stat(self.tls_key).st_mode  # type: ignore[arg-type]
            if mode & 0o077:
                raise fail(f"{w}.tls_key", self.tls_key, f"is readable by group/others (mode {mode & 0o777:o}); "
                           "chmod 600 it")


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
        options.check(self, LISTENER.opts[:1], "listener")
        w = f"listener {self.name!r}"
        # an address to bind; port 0 = any free port (tests, and `addresses` tells which)
        options.check(self, LISTENER.opts[1:], w, skip=("default_route", "trusted_interface"))
        if self.default_route is not None:
            options.p_str(f"{w}.default_route", self.default_route)
        _p_interfaces(f"{w}.trusted_interface", self.trusted_interface)
        object.__setattr__(self, "routes", tuple(self.routes))
        names = [r.name for r in self.routes]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise fail(f"{w}.routes", sorted(dup)[0], "route name used twice")
        if self.default_route is not None and self.default_route not in names:
            raise fail(f"{w}.default_route", self.default_route, f"is not one of its routes {names}")
        if self.protocol == "udp":
            if self.default_route is None:
                raise ConfigError(f"{w}.default_route: missing: a UDP listener routes by port and needs its route")
            for r in self.routes:
                if r.sni or r.host or r.tls_cert or r.acme or r.http_headers or r.send_proxy == "v1":
                    raise fail(f"{w}.routes", r.name, "uses TCP-only matching or options (sni/host/tls/"
                               "http_headers/send_proxy v1) on a UDP listener")
        if self.proxy_optional and not self.trusted:
            raise fail(f"{w}.proxy_optional", True, "set without any trusted sources")


@dataclass(frozen=True, slots=True)
class IngressConfig:
    """Every listener of one ingress."""

    listeners: tuple[Listener, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "listeners", tuple(self.listeners))
        names = [x.name for x in self.listeners]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise fail("listeners", sorted(dup)[0], "name used twice")
        addrs = [(x.protocol, x.listen) for x in self.listeners]
        dup2 = {a for a in addrs if addrs.count(a) > 1}
        if dup2:
            p, a = sorted(dup2)[0]
            raise fail("listeners", f"{p} {hostport.format(a)}", "is bound twice")


def route_from_dict(where: str, data: Any) -> Route:
    """A Route from one `[[listeners.routes]]` table of the standalone file."""
    if not isinstance(data, dict):
        raise fail(where, data, "must be a table/object")
    r = options.parse(data, ROUTE, where, lists=True)
    check_route(where, r)
    r["tls_cert"], r["tls_key"] = r["tls_cert"] or None, r["tls_key"] or None
    return _anchored(where, (f"route {r['name']!r}", "route"), lambda: Route(**r))


def listener_from_dict(where: str, data: Any) -> Listener:
    """A Listener from one `[[listeners]]` table; the default route follows the home file's rule."""
    if not isinstance(data, dict):
        raise fail(where, data, "must be a table/object")
    data = dict(data)
    raw = data.pop("routes", [])
    if not isinstance(raw, list):
        raise fail(f"{where}.routes", raw, "must be an array of tables ([[listeners.routes]])")
    routes = tuple(route_from_dict(f"{where}.routes[{i}]", r) for i, r in enumerate(raw))
    v = options.parse(data, LISTENER, where, lists=True)
    v.pop("routes")
    default = resolve_default(where, [(r.name, not (r.sni or r.host or r.path_prefix)) for r in routes],
                              v["default_route"])
    v["default_route"] = default or None
    return _anchored(where, (f"listener {v['name']!r}", "listener"), lambda: Listener(**v, routes=routes))


def _anchored(where: str, labels: tuple[str, ...], build: Any) -> Any:
    """Build a value; its own error path (`listener 'web'`, `route 'app'`) becomes its place in the file."""
    try:
        return build()
    except ConfigError as exc:
        msg = str(exc)
        for label in labels:
            if msg.startswith((label + ".", label + ":")):
                msg = where + msg[len(label):]
                break
        raise ConfigError(msg) from None


def from_dict(data: Any) -> IngressConfig:
    """An IngressConfig from plain data (parsed JSON or TOML)."""
    if not isinstance(data, dict):
        raise fail("ingress", data, "must be a table/object")
    extra = sorted(set(data) - {"listeners"})
    if extra:
        raise ConfigError(f"{extra[0]}: unknown key")
    raw = data.get("listeners", [])
    if not isinstance(raw, list):
        raise fail("listeners", raw, "must be an array of tables ([[listeners]])")
    return IngressConfig(listeners=tuple(listener_from_dict(f"listeners[{i}]", x) for i, x in enumerate(raw)))


def to_dict(config: IngressConfig) -> dict[str, Any]:
    """Plain data that `from_dict` maps back to the same config."""

    def plain(obj: Any) -> Any:
        if isinstance(obj, hostport.Address):
            return hostport.format(obj)
        if hasattr(obj, "__dataclass_fields__"):
            return {f.name: plain(getattr(obj, f.name)) for f in fields(obj)  # unset (None): left out
                    if getattr(obj, f.name) is not None}
        if isinstance(obj, tuple):
            return [plain(x) for x in obj]
        return obj

    return plain(config)


def load_config(path: str | Path) -> IngressConfig:
    """Read a .json or .toml ingress file; ConfigError names the file and what is wrong."""
    return load_file(path, from_dict)

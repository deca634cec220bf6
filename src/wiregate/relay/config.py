"""Relay configuration: frozen values validated on construction, plus a small JSON/TOML file format.

The options of each value are declared once, in the tables below (wiregate.options): the standalone relay file
is read by them, the gateway file's `[[services]]` takes them over (config/schema.py) and the dataclasses check
themselves with the same parsers. Every error is one line `path: value: why`, e.g.
``services[0].backends[1]: ["10.0.0.2", 70000]: port out of range``. The file format maps 1:1 onto these
classes (see docs/relay.md and ``config_from_dict``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Union

from wiregate import hostport, options
from wiregate.datafile import load_file
from wiregate.errors import ConfigError
from wiregate.options import REQUIRED, Opt, Table, choice, fail, int_range, list_of, p_bool, p_seconds

PROXY_VERSIONS_TCP = ("none", "v1", "v2")
PROXY_VERSIONS_UDP = ("none", "v2")
BALANCE_ALGORITHMS = ("roundrobin", "leastconn", "source")
# TLVs a byte relay can fill in (HAProxy's proxy-v2-options of the same names); TLS ones need decryption
PROXY_TLVS = ("crc32c", "unique-id")

# -- the options, declared once ---------------------------------------------------------------------------------
# Each table lists the keys of one dataclass below (a test keeps the two in step). The gateway file takes the
# service and health options over as they are, so a new option here is a new gateway option too.
BACKEND = Table("backends", "where a service forwards to; backups take traffic only while no primary is up", (
    Opt("host", options.p_str, REQUIRED, "IP address or DNS name"),
    Opt("port", options.p_int, REQUIRED, "port 1..65535"),
    Opt("weight", int_range(1, 256), 1, "share of new connections relative to other sites"),
    Opt("backup", p_bool, False, "take traffic only when no other site is up"),
    Opt("name", options.p_str, "", "name in logs and status (default: host:port)"),
), array=True, required=True)

HEALTH = Table("health", "active health checks of the sites (TCP connect through the tunnel)", (
    Opt("interval", p_seconds, 2.0, "seconds between checks"),
    Opt("timeout", p_seconds, 1.0, "seconds a check may take"),
    Opt("rise", int_range(1, 100), 2, "consecutive successes that mark a site up"),
    Opt("fall", int_range(1, 100), 3, "consecutive failures that mark a site down"),
    Opt("send_proxy", p_bool, False, "checks send a PROXY LOCAL header first (HAProxy's check-send-proxy)"),
))

_NAME = Opt("name", options.name_parser(63), REQUIRED, "service name (logs, metrics, status)")
_LISTEN = Opt("listen", options.listen_list_parser(options.listen_parser()), REQUIRED,
              "public `ADDRESS:PORT` list to listen on")
_MAX_PER_SOURCE = Opt("max_per_source", int_range(1, 1_000_000), 256,
                      "open TCP connections (UDP: flows) per client address at most")

TCP_SERVICE = Table("services", "a TCP service: listeners forwarding to backends, a PROXY header first", (
    _NAME,
    _LISTEN,
    Opt("proxy_protocol", choice(*PROXY_VERSIONS_TCP), "v2", "PROXY header sent to the site (UDP: `none` or `v2`)"),
    Opt("proxy_tlvs", list_of(choice(*PROXY_TLVS), "list of `crc32c`, `unique-id`"), (),
        "TCP with `v2`: extra TLVs in the header (checksum; a unique connection id for the logs at home)"),
    Opt("balance", choice(*BALANCE_ALGORITHMS), "roundrobin",
        "how a site is picked for a TCP connection (a UDP client always stays with one site)"),
    Opt("connect_timeout", p_seconds, 5.0, "seconds to connect through the tunnel"),
    Opt("retries", int_range(0, 10), 2, "other sites tried when a connect fails"),
    Opt("idle_timeout", p_seconds, 3600.0, "seconds a TCP connection may stay silent"),
    Opt("max_connections", int_range(1, 1_000_000), 10000, "open TCP connections at most"),
    _MAX_PER_SOURCE,
), array=True, children=(BACKEND, HEALTH))

UDP_SERVICE = Table("services", "a UDP service: one upstream socket per client address (a flow)", (
    _NAME,
    _LISTEN,
    Opt("proxy_protocol", choice(*PROXY_VERSIONS_UDP), "none", "PROXY v2 DGRAM header per datagram, or none"),
    Opt("flow_idle_timeout", p_seconds, 60.0, "UDP: seconds a silent client flow is kept"),
    Opt("max_flows", int_range(1, 1_000_000), 4096,
        "UDP: client flows at most (held lower when the descriptor limit cannot hold it; see `wiregate check`)"),
    Opt("balance", choice(*BALANCE_ALGORITHMS), "source", "how a backend is picked for a new flow"),
    _MAX_PER_SOURCE,
), array=True, children=(BACKEND,))

RELAY = Table("relay file", "the standalone relay (`python -m wiregate.relay --config FILE`)", (
    Opt("workers", int_range(1, 64), 1, "worker processes (SO_REUSEPORT)"),
    Opt("drain_timeout", options.p_seconds0, 30.0, "seconds open connections may finish after SIGTERM"),
    Opt("splice", p_bool, True, "zero-copy splice(2) where both ends are TCP on Linux; false: buffered copies"),
))


@dataclass(frozen=True, slots=True)
class Backend:
    """One place to forward to. Backups take traffic only while no primary backend is up."""

    host: str
    port: int
    weight: int = 1
    backup: bool = False
    name: str = ""

    def __post_init__(self) -> None:
        self.validate("backend")

    def validate(self, path: str) -> None:
        """Raise ConfigError naming `path` when a field is invalid."""
        options.check(self, BACKEND.opts, path, skip=("port",))
        hostport.parse((self.host, self.port), what=path)  # an IP address or a DNS name, port 1..65535

    @property
    def label(self) -> str:
        """The name, or host:port when unnamed (used in logs and status)."""
        return self.name or format_addr((self.host, self.port))


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """Active TCP-connect checks, as HAProxy's `check inter rise fall` (optionally `check-send-proxy`)."""

    interval: float = 2.0
    timeout: float = 1.0
    rise: int = 2
    fall: int = 3
    send_proxy: bool = False

    def __post_init__(self) -> None:
        self.validate("health")

    def validate(self, path: str) -> None:
        """Raise ConfigError naming `path` when a field is invalid."""
        options.check(self, HEALTH.opts, path)


def _check_backends(path: str, backends: object) -> None:
    if not isinstance(backends, tuple) or not backends:
        raise fail(path, backends, "must be a non-empty list of backends")
    for i, b in enumerate(backends):
        if not isinstance(b, Backend):
            raise fail(f"{path}[{i}]", b, "is not a Backend")
        b.validate(f"{path}[{i}]")
    if all(b.backup for b in backends):
        raise fail(path, [b.label for b in backends], "has only backup backends; at least one must be primary")


@dataclass(frozen=True, slots=True)
class TCPService:
    """A TCP listener set forwarding to backends, with a PROXY header written first on each backend connection."""

    name: str
    listen: tuple[tuple[str, int], ...]
    backends: tuple[Backend, ...]
    proxy_protocol: str = "v2"
    proxy_tlvs: tuple[str, ...] = ()
    balance: str = "roundrobin"
    health: HealthCheck | None = field(default_factory=HealthCheck)
    connect_timeout: float = 5.0
    retries: int = 2
    idle_timeout: float = 3600.0
    max_connections: int = 10000
    max_per_source: int = 256

    def __post_init__(self) -> None:
        self.validate("service")

    def validate(self, path: str) -> None:
        """Raise ConfigError naming `path` when a field is invalid."""
        options.check(self, TCP_SERVICE.opts, path)
        _check_backends(f"{path}.backends", self.backends)
        if self.proxy_tlvs and self.proxy_protocol != "v2":
            raise fail(f"{path}.proxy_tlvs", list(self.proxy_tlvs), "needs proxy_protocol = \"v2\" (v1 has no TLVs)")
        if self.health is not None:
            if not isinstance(self.health, HealthCheck):
                raise fail(f"{path}.health", self.health, "is not a HealthCheck (or None)")
            self.health.validate(f"{path}.health")
            if self.health.send_proxy and self.proxy_protocol == "none":
                raise fail(f"{path}.health.send_proxy", True, "needs proxy_protocol \"v1\" or \"v2\" (the header's "
                           "version)")


@dataclass(frozen=True, slots=True)
class UDPService:
    """UDP listeners; one upstream socket per client address (a flow), optional PROXY v2 DGRAM per datagram."""

    name: str
    listen: tuple[tuple[str, int], ...]
    backends: tuple[Backend, ...]
    proxy_protocol: str = "none"
    flow_idle_timeout: float = 60.0
    max_flows: int = 4096
    balance: str = "source"
    max_per_source: int = 256  # flows per client address (a flood from one address's ports cannot fill the table)

    def __post_init__(self) -> None:
        self.validate("service")

    def validate(self, path: str) -> None:
        """Raise ConfigError naming `path` when a field is invalid."""
        options.check(self, UDP_SERVICE.opts, path)
        _check_backends(f"{path}.backends", self.backends)


Service = Union[TCPService, UDPService]


@dataclass(frozen=True, slots=True)
class RelayConfig:
    """The whole relay: services, worker processes (SO_REUSEPORT), drain deadline, data path choice."""

    services: tuple[Service, ...]
    workers: int = 1
    drain_timeout: float = 30.0
    splice: bool = True  # zero-copy splice(2) where both ends are TCP on Linux; False forces the buffered path

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check everything, including clashes between services; raise ConfigError on the first fault."""
        if not isinstance(self.services, tuple):
            raise fail("services", self.services, "must be a tuple of services")
        names: set[str] = set()
        bound: dict[tuple[str, Any, int], str] = {}
        for i, s in enumerate(self.services):
            if not isinstance(s, (TCPService, UDPService)):
                raise fail(f"services[{i}]", s, "is not a TCPService or UDPService")
            s.validate(f"services[{i}]")
            if s.name in names:
                raise fail(f"services[{i}].name", s.name, "is used by another service")
            names.add(s.name)
            kind = "tcp" if isinstance(s, TCPService) else "udp"
            for host, port in s.listen:
                key = (kind, ipaddress.ip_address(host), port)
                if key in bound:
                    raise fail(f"services[{i}].listen", format_addr((host, port)),
                               f"is already a {kind} listener of service {bound[key]!r}")
                bound[key] = s.name
        options.check(self, RELAY.opts, "")

    def service(self, name: str) -> Service:
        """The service called `name` (KeyError when absent)."""
        for s in self.services:
            if s.name == name:
                return s
        raise KeyError(name)


format_addr = hostport.format  # the relay's modules and its users spell it this way


# ---- file format: the tables above ------------------------------------------------------------------------------
def _service(path: str, data: object) -> Service:
    if not isinstance(data, dict):
        raise fail(path, data, "must be a table/object")
    data = dict(data)
    kind = data.pop("protocol", "tcp")
    if kind not in ("tcp", "udp"):
        raise fail(f"{path}.protocol", kind, "must be one of tcp, udp")
    health = data.get("health", True)
    if kind == "tcp" and health in (True, False, None):  # `health = false` turns the checks off
        data.pop("health", None)
    table = TCP_SERVICE if kind == "tcp" else UDP_SERVICE
    v = options.parse(data, table, path, lists=True)
    backends = tuple(_anchored(f"{path}.backends[{j}]", lambda b=b: Backend(**b))
                     for j, b in enumerate(v.pop("backends")))
    if kind == "udp":
        return _anchored(path, lambda: UDPService(**v, backends=backends))
    h = v.pop("health")
    check = None if health is False or health is None else _anchored(f"{path}.health", lambda: HealthCheck(**h))
    return _anchored(path, lambda: TCPService(**v, backends=backends, health=check))


def _anchored(path: str, build: Any) -> Any:
    """Build a value; a cross-key error of its own ("service.x: ...") is re-anchored at its place in the file."""
    try:
        return build()
    except ConfigError as exc:
        msg = str(exc)
        for prefix in ("service", "backend", "health"):
            if msg.startswith((prefix + ".", prefix + ":", prefix + "[")):
                msg = path + msg[len(prefix):]
                break
        raise ConfigError(msg) from None


def config_from_dict(data: object) -> RelayConfig:
    """Build a RelayConfig from parsed JSON/TOML; services carry `protocol = "tcp"|"udp"` (default tcp)."""
    if not isinstance(data, dict):
        raise fail("relay", data, "must be a table/object")
    data = dict(data)
    raw = data.pop("services", REQUIRED)
    if raw is REQUIRED:
        raise ConfigError("services: missing (required)")
    if not isinstance(raw, list):
        raise fail("services", raw, "must be an array of tables ([[services]])")
    services = tuple(_service(f"services[{i}]", s) for i, s in enumerate(raw))
    v = options.parse(data, RELAY, lists=True)
    return RelayConfig(services=services, **v)


def load_config(path: str | Path) -> RelayConfig:
    """Read a .json or .toml relay file; ConfigError names the file and what is wrong in it."""
    return load_file(path, config_from_dict)


def config_to_dict(config: RelayConfig) -> dict[str, Any]:
    """The inverse of config_from_dict (what `load_config` reads back to an equal RelayConfig)."""
    def svc(s: Service) -> dict[str, Any]:
        d: dict[str, Any] = {"protocol": "tcp" if isinstance(s, TCPService) else "udp"}
        for f in fields(s):
            v = getattr(s, f.name)
            if f.name == "listen":
                v = [format_addr(a) for a in v]
            elif f.name == "backends":
                v = [{g.name: getattr(b, g.name) for g in fields(b)} for b in v]
            elif f.name == "health":
                v = False if v is None else {g.name: getattr(v, g.name) for g in fields(v)}
            elif isinstance(v, tuple):
                v = list(v)
            d[f.name] = v
        return d
    return {"services": [svc(s) for s in config.services], "workers": config.workers,
            "drain_timeout": config.drain_timeout, "splice": config.splice}


__all__ = [
    "BACKEND", "BALANCE_ALGORITHMS", "Backend", "HEALTH", "HealthCheck", "PROXY_TLVS", "RELAY", "RelayConfig",
    "Service", "TCPService", "TCP_SERVICE", "UDPService", "UDP_SERVICE", "config_from_dict", "config_to_dict",
    "format_addr", "load_config", "replace",
]

"""Relay configuration: frozen values validated on construction, plus a small JSON/TOML file format.

Every check raises ConfigError naming the field path and the value, e.g.
``services[0].backends[1]: ["10.0.0.2", 70000]: port out of range``.
The file format maps 1:1 onto these classes (see docs/relay.md and ``config_from_dict``).
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Union

from wiregate import hostport
from wiregate.datafile import load_file
from wiregate.errors import ConfigError

PROXY_VERSIONS_TCP = ("none", "v1", "v2")
PROXY_VERSIONS_UDP = ("none", "v2")
BALANCE_ALGORITHMS = ("roundrobin", "leastconn", "source")
# TLVs a byte relay can fill in (HAProxy's proxy-v2-options of the same names); TLS ones need decryption
PROXY_TLVS = ("crc32c", "unique-id")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")


def _fail(path: str, value: object, why: str) -> None:
    raise ConfigError(f"{path}: {value!r} {why}")


def _positive(path: str, value: object, *, integer: bool = False, allow_zero: bool = False) -> None:
    ok_type = type(value) is int if integer else type(value) in (int, float)
    if not ok_type or (isinstance(value, float) and not math.isfinite(value)) or value < 0 or (
            value == 0 and not allow_zero):
        kind = "an integer" if integer else "a number"
        _fail(path, value, f"must be {kind} {'>= 0' if allow_zero else '> 0'}")


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
        if not isinstance(self.host, str):
            _fail(f"{path}.host", self.host, "must be a host string")
        hostport.parse((self.host, self.port), what=path)  # an IP address or a DNS name, port 1..65535
        if type(self.weight) is not int or not 1 <= self.weight <= 256:
            _fail(f"{path}.weight", self.weight, "must be an integer 1..256")
        if type(self.backup) is not bool:
            _fail(f"{path}.backup", self.backup, "must be true or false")
        if not isinstance(self.name, str):
            _fail(f"{path}.name", self.name, "must be a string")

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
        _positive(f"{path}.interval", self.interval)
        _positive(f"{path}.timeout", self.timeout)
        if type(self.rise) is not int or not 1 <= self.rise <= 100:
            _fail(f"{path}.rise", self.rise, "must be an integer 1..100")
        if type(self.fall) is not int or not 1 <= self.fall <= 100:
            _fail(f"{path}.fall", self.fall, "must be an integer 1..100")
        if type(self.send_proxy) is not bool:
            _fail(f"{path}.send_proxy", self.send_proxy, "must be true or false")


def _check_listen(path: str, listen: object) -> None:
    if not isinstance(listen, tuple) or not listen:
        _fail(path, listen, "must be a non-empty tuple of (address, port)")
    seen = set()
    for i, item in enumerate(listen):  # type: ignore[arg-type]
        if not isinstance(item, tuple):
            _fail(f"{path}[{i}]", item, "must be (address, port)")
        hostport.parse(item, names=False, what=f"{path}[{i}]")
        key = (ipaddress.ip_address(item[0]), item[1])
        if key in seen:
            _fail(f"{path}[{i}]", format_addr(item), "is listed twice")
        seen.add(key)


def _check_backends(path: str, backends: object) -> None:
    if not isinstance(backends, tuple) or not backends:
        _fail(path, backends, "must be a non-empty tuple of Backend")
    for i, b in enumerate(backends):  # type: ignore[arg-type]
        if not isinstance(b, Backend):
            _fail(f"{path}[{i}]", b, "is not a Backend")
        b.validate(f"{path}[{i}]")
    if all(b.backup for b in backends):  # type: ignore[union-attr]
        _fail(path, tuple(b.label for b in backends), "has only backup backends; at least one must be primary")


def _check_name(path: str, name: object) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        _fail(path, name, "must be 1-63 characters of letters, digits, '_', '.', '-'")


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
        _check_name(f"{path}.name", self.name)
        _check_listen(f"{path}.listen", self.listen)
        _check_backends(f"{path}.backends", self.backends)
        if self.proxy_protocol not in PROXY_VERSIONS_TCP:
            _fail(f"{path}.proxy_protocol", self.proxy_protocol, f"must be one of {', '.join(PROXY_VERSIONS_TCP)}")
        if not isinstance(self.proxy_tlvs, tuple):
            _fail(f"{path}.proxy_tlvs", self.proxy_tlvs, "must be a tuple of TLV names")
        for i, t in enumerate(self.proxy_tlvs):
            if t not in PROXY_TLVS:
                _fail(f"{path}.proxy_tlvs[{i}]", t, f"is not a supported TLV ({', '.join(PROXY_TLVS)})")
        if self.proxy_tlvs and self.proxy_protocol != "v2":
            _fail(f"{path}.proxy_tlvs", self.proxy_tlvs, "needs proxy_protocol = 'v2' (v1 has no TLVs)")
        if self.balance not in BALANCE_ALGORITHMS:
            _fail(f"{path}.balance", self.balance, f"must be one of {', '.join(BALANCE_ALGORITHMS)}")
        if self.health is not None:
            if not isinstance(self.health, HealthCheck):
                _fail(f"{path}.health", self.health, "is not a HealthCheck (or None)")
            self.health.validate(f"{path}.health")
            if self.health.send_proxy and self.proxy_protocol == "none":
                _fail(f"{path}.health.send_proxy", True, "needs proxy_protocol 'v1' or 'v2' (the header's version)")
        _positive(f"{path}.connect_timeout", self.connect_timeout)
        if type(self.retries) is not int or not 0 <= self.retries <= 10:
            _fail(f"{path}.retries", self.retries, "must be an integer 0..10")
        _positive(f"{path}.idle_timeout", self.idle_timeout)
        if type(self.max_connections) is not int or not 1 <= self.max_connections <= 1_000_000:
            _fail(f"{path}.max_connections", self.max_connections, "must be an integer 1..1000000")
        if type(self.max_per_source) is not int or not 1 <= self.max_per_source <= 1_000_000:
            _fail(f"{path}.max_per_source", self.max_per_source, "must be an integer 1..1000000")


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
        _check_name(f"{path}.name", self.name)
        _check_listen(f"{path}.listen", self.listen)
        _check_backends(f"{path}.backends", self.backends)
        if self.proxy_protocol not in PROXY_VERSIONS_UDP:
            _fail(f"{path}.proxy_protocol", self.proxy_protocol, f"must be one of {', '.join(PROXY_VERSIONS_UDP)}")
        _positive(f"{path}.flow_idle_timeout", self.flow_idle_timeout)
        if type(self.max_flows) is not int or not 1 <= self.max_flows <= 1_000_000:
            _fail(f"{path}.max_flows", self.max_flows, "must be an integer 1..1000000")
        if self.balance not in BALANCE_ALGORITHMS:
            _fail(f"{path}.balance", self.balance, f"must be one of {', '.join(BALANCE_ALGORITHMS)}")
        if type(self.max_per_source) is not int or not 1 <= self.max_per_source <= 1_000_000:
            _fail(f"{path}.max_per_source", self.max_per_source, "must be an integer 1..1000000")


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
            _fail("services", self.services, "must be a tuple of services")
        names: set[str] = set()
        bound: dict[tuple[str, Any, int], str] = {}
        for i, s in enumerate(self.services):
            if not isinstance(s, (TCPService, UDPService)):
                _fail(f"services[{i}]", s, "is not a TCPService or UDPService")
            s.validate(f"services[{i}]")
            if s.name in names:
                _fail(f"services[{i}].name", s.name, "is used by another service")
            names.add(s.name)
            kind = "tcp" if isinstance(s, TCPService) else "udp"
            for host, port in s.listen:
                key = (kind, ipaddress.ip_address(host), port)
                if key in bound:
                    _fail(f"services[{i}].listen", format_addr((host, port)),
                          f"is already a {kind} listener of service {bound[key]!r}")
                bound[key] = s.name
        if type(self.workers) is not int or not 1 <= self.workers <= 64:
            _fail("workers", self.workers, "must be an integer 1..64")
        _positive("drain_timeout", self.drain_timeout, allow_zero=True)
        if type(self.splice) is not bool:
            _fail("splice", self.splice, "must be true or false")

    def service(self, name: str) -> Service:
        """The service called `name` (KeyError when absent)."""
        for s in self.services:
            if s.name == name:
                return s
        raise KeyError(name)


format_addr = hostport.format  # the relay's modules and its users spell it this way


# ---- file format ------------------------------------------------------------------------------------------------

def _parse_addr(path: str, value: object) -> tuple[str, int]:
    """'1.2.3.4:80', '[::1]:80', or the list form ["::1", 80] (IP addresses only: these are bound)."""
    return hostport.parse(value, names=False, what=path)


def _build(cls: type, path: str, data: object, convert: dict[str, Any]) -> Any:
    if not isinstance(data, dict):
        _fail(path, data, "must be a table/object")
    known = {f.name for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():  # type: ignore[union-attr]
        sub = f"{path}.{key}" if path else key
        if key not in known:
            _fail(sub, value, f"is not a known key (known: {', '.join(sorted(known))})")
        kwargs[key] = convert[key](sub, value) if key in convert else value
    missing = [f.name for f in fields(cls) if _is_required(f) and f.name not in kwargs]
    if missing:
        raise ConfigError(f"{path or 'relay'}: missing required key(s) {', '.join(missing)}")
    try:
        obj = cls(**kwargs)
    except ConfigError as exc:  # re-anchor "service.x" style paths at this position in the file
        msg = str(exc)
        for prefix in ("service", "backend", "health"):
            if msg.startswith((prefix + ".", prefix + ":")):
                msg = path + msg[len(prefix):]
                break
        raise ConfigError(msg) from None
    except TypeError as exc:
        raise ConfigError(f"{path or 'relay'}: {exc}") from None
    return obj


def _is_required(f: Any) -> bool:
    from dataclasses import MISSING
    return f.default is MISSING and f.default_factory is MISSING


def _tuple_of(conv: Any) -> Any:
    def inner(path: str, value: object) -> tuple:
        if not isinstance(value, (list, tuple)):
            _fail(path, value, "must be a list")
        return tuple(conv(f"{path}[{i}]", v) for i, v in enumerate(value))  # type: ignore[arg-type]
    return inner


def _backend(path: str, data: object) -> Backend:
    return _build(Backend, path, data, {})


def _health(path: str, data: object) -> HealthCheck | None:
    if data is None or data is False:
        return None
    if data is True:
        return HealthCheck()
    return _build(HealthCheck, path, data, {})


def _service(path: str, data: object) -> Service:
    if not isinstance(data, dict):
        _fail(path, data, "must be a table/object")
    data = dict(data)  # type: ignore[arg-type]
    kind = data.pop("protocol", "tcp")
    if kind not in ("tcp", "udp"):
        _fail(f"{path}.protocol", kind, "must be 'tcp' or 'udp'")
    conv: dict[str, Any] = {
        "listen": _tuple_of(_parse_addr),
        "backends": _tuple_of(_backend),
        "proxy_tlvs": _tuple_of(lambda p, v: v),
        "health": _health,
    }
    return _build(TCPService if kind == "tcp" else UDPService, path, data, conv)


def config_from_dict(data: object) -> RelayConfig:
    """Build a RelayConfig from parsed JSON/TOML; services carry `protocol = "tcp"|"udp"` (default tcp)."""
    return _build(RelayConfig, "", data, {"services": _tuple_of(_service)})


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
    "BALANCE_ALGORITHMS", "Backend", "HealthCheck", "PROXY_TLVS", "RelayConfig", "Service", "TCPService",
    "UDPService", "config_from_dict", "config_to_dict", "format_addr", "load_config", "replace",
]

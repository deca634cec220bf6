"""The two config files as frozen dataclasses, loaded and checked: keys one by one (schema), then across keys.

    cfg = load("/etc/wiregate/gateway.toml")    # GatewayConfig or HomeConfig; ConfigError names key and value
    key = read_key(cfg.tunnel.private_key_file) # refuses a group/world readable file
"""

from __future__ import annotations

import ipaddress
import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

from wiregate import hostport, options
from wiregate.config import schema
from wiregate.errors import ConfigError
from wiregate.ingress import config as ingress
from wiregate.options import fail
from wiregate.relay import config as relay
from wiregate.wireguard.keys import decode_key

MAX_CONFIG_BYTES = 1 << 20
MAX_KEY_FILE_BYTES = 4096
DEFAULT_CONFIG_DIR = Path("/etc/wiregate")
DEFAULT_RUN_DIR = Path("/run/wiregate")
_NONE: Mapping[str, Any] = MappingProxyType({})


def _no_options() -> Mapping[str, Any]:
    return _NONE

# The typed fields below are what this package and its users read (export, limits, status). The options a part
# declares (relay/config.py, ingress/config.py) reach it through `part_options`, as the file gave them: a new
# option of a part needs no change here nor in the runner (docs/extending.md).


@dataclass(frozen=True, slots=True)
class Health:
    enabled: bool = True
    interval: float = 2.0
    timeout: float = 1.0
    rise: int = 2
    fall: int = 3
    part_options: Mapping[str, Any] = field(default_factory=_no_options, hash=False)  # relay.HealthCheck's


@dataclass(frozen=True, slots=True)
class GatewayTunnel:
    mode: str
    interface: str
    private_key_file: Path
    endpoint: tuple[str, int]
    listen_port: int
    address: str  # "192.0.2.1/24"
    mtu: int

    @property
    def ip(self) -> str:
        """The gateway's own tunnel address, without the prefix length."""
        return str(ipaddress.ip_interface(self.address).ip)


@dataclass(frozen=True, slots=True)
class Site:
    name: str
    public_key: str
    address: str
    preshared_key_file: Path | None = None
    weight: int = 1
    backup: bool = False
    acme_names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    protocol: str
    listen: tuple[tuple[str, int], ...]
    port: int
    sites: tuple[str, ...]
    proxy_protocol: str
    proxy_tlvs: tuple[str, ...]
    balance: str
    connect_timeout: float
    retries: int
    idle_timeout: float
    max_connections: int
    max_per_source: int
    flow_idle_timeout: float
    max_flows: int
    health: Health
    # relay.TCPService's / UDPService's options, from the file
    part_options: Mapping[str, Any] = field(default_factory=_no_options, hash=False)


@dataclass(frozen=True, slots=True)
class AcmeDns:
    """The gateway's `[acme_dns]` table: the DNS-01 challenge zone it answers for its sites."""

    zone: str
    nameserver: str
    listen: tuple[tuple[str, int], ...]
    publish_port: int
    record_ttl: float
    max_names_per_site: int


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    role: str
    name: str
    tunnel: GatewayTunnel
    sites: tuple[Site, ...]
    services: tuple[Service, ...]
    control_socket: Path
    metrics_listen: tuple[str, int] | None
    drain_timeout: float
    path: Path | None = None
    acme_dns: AcmeDns | None = None

    def site(self, name: str) -> Site:
        """The site called `name` (KeyError when absent)."""
        for s in self.sites:
            if s.name == name:
                return s
        raise KeyError(name)

    def service_sites(self, svc: Service) -> tuple[Site, ...]:
        """The sites a service forwards to (all sites when the service names none)."""
        return tuple(s for s in self.sites if not svc.sites or s.name in svc.sites)


@dataclass(frozen=True, slots=True)
class HomeTunnel:
    mode: str
    interface: str
    private_key_file: Path
    preshared_key_file: Path | None
    address: str
    gateway_endpoint: tuple[str, int]
    gateway_public_key: str
    gateway_address: str
    persistent_keepalive: int
    resolve_interval: float
    probe_interval: float
    listen_port: int
    mtu: int

    @property
    def ip(self) -> str:
        """This site's tunnel address without the prefix length."""
        return str(ipaddress.ip_interface(self.address).ip)


@dataclass(frozen=True, slots=True)
class GatewayLink:
    """One gateway of a home: the [tunnel] one (named `gateway`, `where` = "tunnel") or a [[gateways]] table.

    Each has its own WireGuard interface, key and tunnel address: the join token of each gateway carries a private
    key of its own (the gateway keeps only its public key), and one interface holds one private key."""

    name: str
    where: str  # the key path prefix of its settings in the file, for messages: "tunnel" or "gateways[0]"
    interface: str
    private_key_file: Path
    preshared_key_file: Path | None
    address: str
    gateway_endpoint: tuple[str, int]
    gateway_public_key: str
    gateway_address: str
    persistent_keepalive: int
    listen_port: int

    @property
    def ip(self) -> str:
        """This site's tunnel address on this gateway, without the prefix length."""
        return str(ipaddress.ip_interface(self.address).ip)


FIRST_GATEWAY = "gateway"  # the name of the [tunnel] gateway (status, metrics: the tunnel peer's label)


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    target: tuple[str, int]
    sni: tuple[str, ...] = ()
    host: tuple[str, ...] = ()
    path_prefix: str = ""
    send_proxy: str = "none"
    http_headers: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls: str = ""  # "acme": terminate with an ACME certificate
    acme_challenge: str = ""  # "" = AcmeConfig.challenge
    acme_cert_file: Path | None = None  # passthrough: write the ACME certificate here
    acme_key_file: Path | None = None
    acme_deploy_hook: str = ""
    internal: tuple[str, ...] = ()  # internal_only: the client networks admitted (empty: everyone)
    part_options: Mapping[str, Any] = field(default_factory=_no_options, hash=False)  # ingress.Route's, from the file

    @property
    def acme(self) -> bool:
        """This route needs an ACME certificate (terminated here, or written to files)."""
        return self.tls == "acme" or self.acme_cert_file is not None


@dataclass(frozen=True, slots=True)
class Rfc2136Config:
    server: str
    zone: str
    tsig_key_name: str
    tsig_algorithm: str
    tsig_secret_file: Path


@dataclass(frozen=True, slots=True)
class AcmeConfig:
    """The home `[acme]` table (docs/acme.md)."""

    directory: str
    email: str
    agree_tos: bool
    account_key_file: Path
    key_type: str
    ca_bundle: Path | None
    storage_dir: Path
    challenge: str
    dns_provider: str
    rfc2136: Rfc2136Config | None = None


@dataclass(frozen=True, slots=True)
class Listener:
    name: str
    listen: tuple[str, int]  # host is an IP ("tunnel" already replaced)
    protocol: str
    trusted: tuple[str, ...]
    routes: tuple[Route, ...]
    default_route: str
    header_timeout: float
    sniff_timeout: float
    max_connections: int
    idle_timeout: float
    server_first: bool = False
    proxy_optional: bool = False
    max_header_bytes: int = 4096
    max_sniff_bytes: int = 16384
    flow_idle_timeout: float = 60.0
    max_flows: int = 4096
    max_per_source: int = 256
    on_tunnel: bool = False  # `tunnel:PORT`: bound on every gateway's tunnel address (listen = the first one's)
    part_options: Mapping[str, Any] = field(default_factory=_no_options, hash=False)  # ingress.Listener's


@dataclass(frozen=True, slots=True)
class HomeConfig:
    role: str
    name: str
    tunnel: HomeTunnel
    listeners: tuple[Listener, ...]
    control_socket: Path
    metrics_listen: tuple[str, int] | None
    drain_timeout: float
    path: Path | None = None
    acme: AcmeConfig | None = None
    gateways: tuple[GatewayLink, ...] = ()  # the [[gateways]] tables: every gateway after the [tunnel] one

    @property
    def links(self) -> tuple[GatewayLink, ...]:
        """Every gateway of this home, the [tunnel] one first."""
        t = self.tunnel  # [tunnel] holds every key of a GatewayLink (config/schema.py: _LINK)
        same = {f.name: getattr(t, f.name) for f in fields(GatewayLink) if f.name not in ("name", "where")}
        first = GatewayLink(name=FIRST_GATEWAY, where="tunnel", **same)
        return (first, *self.gateways)

    def acme_routes(self) -> list[tuple[Listener, Route]]:
        """Every route that needs an ACME certificate, with its listener."""
        return [(ln, r) for ln in self.listeners for r in ln.routes if r.acme]


Config = GatewayConfig | HomeConfig


_SERVICES = schema.GATEWAY.child("services")
_HEALTH = _SERVICES.child("health")
_LISTENERS = schema.HOME.child("listeners")
_ROUTES = _LISTENERS.child("routes")


def _file(base: Path, value: str) -> Path | None:
    if not value:
        return None
    p = Path(value)
    return p if p.is_absolute() else base / p


def _path(base: Path, value: str) -> Path:
    """A file the schema requires (p_path: never empty), relative to `base`."""
    p = Path(value)
    return p if p.is_absolute() else base / p


def _control(base_name: str, value: str, base: Path) -> Path:
    return _file(base, value) or DEFAULT_RUN_DIR / f"{base_name}.ctl"


def build(doc: dict, base: Path, path: Path | None = None) -> Config:
    """Validate a parsed TOML document and build the config; relative file names are resolved against `base`."""
    if not isinstance(doc, dict):
        raise ConfigError("the file must be a TOML table")
    role = doc.get("role")
    if role == "gateway":
        return _gateway(schema.parse(doc, schema.GATEWAY), base, path)
    if role == "home":
        home = _home(schema.parse(doc, schema.HOME), base, path)
        return _with_acme(home, doc, base)
    if role is None:
        raise ConfigError('role: missing (required): "gateway" or "home"')
    raise fail("role", role, 'must be "gateway" or "home"')


def _gateway(d: dict[str, Any], base: Path, path: Path | None) -> GatewayConfig:
    t = d["tunnel"]
    net = ipaddress.ip_interface(t["address"]).network
    gw_ip = ipaddress.ip_interface(t["address"]).ip
    tunnel = GatewayTunnel(mode=t["mode"], interface=t["interface"],
                           private_key_file=_path(base, t["private_key_file"]), endpoint=t["endpoint"],
                           listen_port=t["listen_port"], address=t["address"], mtu=t["mtu"])
    sites: list[Site] = []
    names: set[str] = set()
    keys: set[str] = set()
    addrs: set[str] = {str(gw_ip)}
    for i, s in enumerate(d["sites"]):
        p = f"sites[{i}]"
        if s["name"] in names:
            raise fail(f"{p}.name", s["name"], "is used by another site")
        if s["public_key"] in keys:
            raise fail(f"{p}.public_key", s["public_key"], "is the key of another site")
        ip = ipaddress.ip_address(s["address"])
        if ip not in net:
            raise fail(f"{p}.address", s["address"], f"is outside the tunnel prefix {net} (tunnel.address)")
        if s["address"] in addrs:
            raise fail(f"{p}.address", s["address"], "is taken (by the gateway or another site)")
        if ip in (net.network_address, net.broadcast_address) and net.num_addresses > 2:
            raise fail(f"{p}.address", s["address"], "is the network or broadcast address of the tunnel prefix")
        names.add(s["name"])
        keys.add(s["public_key"])
        addrs.add(s["address"])
        sites.append(Site(name=s["name"], public_key=s["public_key"], address=s["address"],
                          preshared_key_file=_file(base, s["preshared_key_file"]), weight=s["weight"],
                          backup=s["backup"], acme_names=tuple(dict.fromkeys(s["acme_names"]))))
    services: list[Service] = []
    snames: set[str] = set()
    bound: dict[tuple[str, str, int], str] = {}
    for i, s in enumerate(d["services"]):
        p = f"services[{i}]"
        if s["name"] in snames:
            raise fail(f"{p}.name", s["name"], "is used by another service")
        snames.add(s["name"])
        for j, n in enumerate(s["sites"]):
            if n not in names:
                raise fail(f"{p}.sites[{j}]", n, "is not a site of this gateway (see [[sites]])")
        for j, (host, port) in enumerate(s["listen"]):
            if host == "tunnel":
                raise fail(f"{p}.listen[{j}]", hostport.format((host, port)),
                           "'tunnel' is only for home listeners; give an IP address")
            key = (s["protocol"], host, port)
            if key in bound:
                raise fail(f"{p}.listen[{j}]", hostport.format((host, port)),
                           f"is already a {s['protocol']} listener of service {bound[key]!r}")
            bound[key] = s["name"]
        if s["protocol"] == "udp" and s["proxy_protocol"] == "v1":
            raise fail(f"{p}.proxy_protocol", "v1", "UDP needs \"v2\" or \"none\" (v1 has no datagram form)")
        if s["proxy_tlvs"] and (s["protocol"] == "udp" or s["proxy_protocol"] != "v2"):
            raise fail(f"{p}.proxy_tlvs", list(s["proxy_tlvs"]), "needs a TCP service with proxy_protocol = \"v2\"")
        h = s["health"]
        services.append(Service(
            name=s["name"], protocol=s["protocol"], listen=s["listen"], port=s["port"] or s["listen"][0][1],
            sites=s["sites"], proxy_protocol=s["proxy_protocol"], proxy_tlvs=s["proxy_tlvs"],
            balance=s["balance"],
            connect_timeout=s["connect_timeout"], retries=s["retries"], idle_timeout=s["idle_timeout"],
            max_connections=s["max_connections"], max_per_source=s["max_per_source"],
            flow_idle_timeout=s["flow_idle_timeout"], max_flows=s["max_flows"],
            health=Health(enabled=h["enabled"], interval=h["interval"], timeout=h["timeout"], rise=h["rise"],
                          fall=h["fall"], part_options=options.carry(_HEALTH, relay.HEALTH.opts, h)),
            part_options=options.carry(_SERVICES, (relay.TCP_SERVICE if s["protocol"] == "tcp" else
                                                   relay.UDP_SERVICE).opts, s)))
    cfg = GatewayConfig(role="gateway", name=d["name"], tunnel=tunnel, sites=tuple(sites),
                        services=tuple(services), control_socket=_control(d["name"], d["control"]["socket"], base),
                        metrics_listen=d["metrics"]["listen"], drain_timeout=d["drain_timeout"], path=path,
                        acme_dns=_acme_dns(d["acme_dns"], d["sites"], bound))
    for i, svc in enumerate(cfg.services):
        if sites and not cfg.service_sites(svc):
            raise fail(f"services[{i}].sites", list(svc.sites), "selects no site")
    return cfg


def _overlaps(a: str, b: str) -> bool:
    return a == b or ipaddress.ip_address(a).is_unspecified or ipaddress.ip_address(b).is_unspecified


def _acme_dns(a: dict[str, Any], sites: tuple[dict[str, Any], ...],
              bound: dict[tuple[str, str, int], str]) -> AcmeDns | None:
    """The `[acme_dns]` table, checked against the sites' `acme_names` and the services' listeners."""
    if not a["zone"]:
        for i, s in enumerate(sites):
            if s["acme_names"]:
                raise fail(f"sites[{i}].acme_names", list(s["acme_names"]),
                           "needs [acme_dns] with a zone on this gateway")
        return None
    zone, ns = a["zone"], a["nameserver"]
    if zone.startswith("*."):
        raise fail("acme_dns.zone", zone, "is a zone name, not a wildcard")
    if "." not in zone:
        raise fail("acme_dns.zone", zone, "must be a zone under a domain you control, e.g. acme.vps.example.net")
    if not ns:
        raise ConfigError("acme_dns.nameserver: missing: the gateway's public DNS name (the NS target of the zone)")
    if ns.startswith("*.") or ns == zone or ns.endswith("." + zone):
        raise fail("acme_dns.nameserver", ns, f"must be a name outside the zone {zone} (its address record lives "
                   "at your DNS provider)")
    for j, (host, port) in enumerate(a["listen"]):
        if host == "tunnel":
            raise fail(f"acme_dns.listen[{j}]", hostport.format((host, port)), "give an IP address")
        for (proto, h2, p2), svc in bound.items():
            if p2 == port and _overlaps(host, h2):
                raise fail(f"acme_dns.listen[{j}]", hostport.format((host, port)),
                           f"is already a {proto} listener of service {svc!r}")
    for i, s in enumerate(sites):
        for k, n in enumerate(s["acme_names"]):
            base = n.removeprefix("*.")
            if "." not in base:
                raise fail(f"sites[{i}].acme_names[{k}]", n, "is not a name a certificate can be issued for")
            if base == zone or base.endswith("." + zone):
                raise fail(f"sites[{i}].acme_names[{k}]", n, f"is inside the challenge zone {zone}")
    return AcmeDns(zone=zone, nameserver=ns, listen=a["listen"], publish_port=a["publish_port"],
                   record_ttl=a["record_ttl"], max_names_per_site=a["max_names_per_site"])


def _check_link(where: str, g: dict[str, Any]) -> None:
    iface = ipaddress.ip_interface(g["address"])
    if ipaddress.ip_address(g["gateway_address"]) == iface.ip:
        raise fail(f"{where}.gateway_address", g["gateway_address"], "is this site's own tunnel address")
    if ipaddress.ip_address(g["gateway_address"]).version != iface.version:
        raise fail(f"{where}.gateway_address", g["gateway_address"],
                   f"is not an IPv{iface.version} address like {where}.address")


def _gateway_links(t: dict[str, Any], gateways: tuple[dict[str, Any], ...], base: Path) -> tuple[GatewayLink, ...]:
    """The [[gateways]] tables, checked against [tunnel] and each other: every gateway needs its own name,
    interface, key and tunnel prefix (routes and source addresses at home are chosen by prefix, so two gateways
    handing out overlapping prefixes, e.g. both left at init's default 192.0.2.1/24, cannot share a host)."""
    seen: list[tuple[str, dict[str, Any]]] = [("tunnel", dict(t, name=FIRST_GATEWAY))]
    out: list[GatewayLink] = []
    for i, g in enumerate(gateways):
        p = f"gateways[{i}]"
        _check_link(p, g)
        for other, o in seen:
            what = f"gateway {o['name']!r} ({other})"
            if g["name"] == o["name"]:
                raise fail(f"{p}.name", g["name"], f"is the name of {what}")
            if g["interface"] == o["interface"]:
                raise fail(f"{p}.interface", g["interface"], f"is the interface of {what}; each gateway has its own")
            if g["gateway_public_key"] == o["gateway_public_key"]:
                raise fail(f"{p}.gateway_public_key", g["gateway_public_key"],
                           f"is the key of {what}: that gateway is joined already")
            net, onet = ipaddress.ip_interface(g["address"]).network, ipaddress.ip_interface(o["address"]).network
            if net.version == onet.version and net.overlaps(onet):
                raise fail(f"{p}.address", g["address"], f"overlaps {other}.address {o['address']} of {what}: "
                           "each gateway needs its own tunnel prefix (give one gateway another tunnel.address)")
            if g["listen_port"] and g["listen_port"] == o["listen_port"]:
                raise fail(f"{p}.listen_port", g["listen_port"], f"is the listen_port of {what}")
        seen.append((p, g))
        out.append(GatewayLink(name=g["name"], where=p, interface=g["interface"],
                               private_key_file=base / g["private_key_file"],  # (an absolute path stays as it is)
                               preshared_key_file=_file(base, g["preshared_key_file"]), address=g["address"],
                               gateway_endpoint=g["gateway_endpoint"], gateway_public_key=g["gateway_public_key"],
                               gateway_address=g["gateway_address"], persistent_keepalive=g["persistent_keepalive"],
                               listen_port=g["listen_port"]))
    return tuple(out)


def _home(d: dict[str, Any], base: Path, path: Path | None) -> HomeConfig:
    t = d["tunnel"]
    _check_link("tunnel", t)
    gateways = _gateway_links(t, d["gateways"], base)
    gateway_nets = tuple(str(ipaddress.ip_network(x)) for x in
                         (t["gateway_address"], *(g.gateway_address for g in gateways)))
    tunnel = HomeTunnel(mode=t["mode"], interface=t["interface"],
                        private_key_file=_path(base, t["private_key_file"]),
                        preshared_key_file=_file(base, t["preshared_key_file"]), address=t["address"],
                        gateway_endpoint=t["gateway_endpoint"], gateway_public_key=t["gateway_public_key"],
                        gateway_address=t["gateway_address"], persistent_keepalive=t["persistent_keepalive"],
                        resolve_interval=t["resolve_interval"], probe_interval=t["probe_interval"],
                        listen_port=t["listen_port"], mtu=t["mtu"])
    listeners: list[Listener] = []
    lnames: set[str] = set()
    bound: dict[tuple[str, str, int], str] = {}
    for i, ln in enumerate(d["listeners"]):
        p = f"listeners[{i}]"
        if ln["name"] in lnames:
            raise fail(f"{p}.name", ln["name"], "is used by another listener")
        lnames.add(ln["name"])
        host, port = ln["listen"]
        on_tunnel = host == "tunnel"
        if on_tunnel:
            host = tunnel.ip
        key = (ln["protocol"], host, port)
        if key in bound:
            raise fail(f"{p}.listen", hostport.format(ln["listen"]),
                       f"is already a {ln['protocol']} listener ({bound[key]!r})")
        bound[key] = ln["name"]
        routes: list[Route] = []
        rnames: set[str] = set()
        for j, r in enumerate(ln["routes"]):
            rp = f"{p}.routes[{j}]"
            if r["name"] in rnames:
                raise fail(f"{rp}.name", r["name"], "is used by another route of this listener")
            rnames.add(r["name"])
            ingress.check_route(rp, r)
            if r["internal_only"] and not r["internal_networks"]:
                raise fail(f"{rp}.internal_networks", [], "internal_only needs at least one network to admit")
            if ln["protocol"] == "udp" and (r["sni"] or r["host"] or r["path_prefix"]):
                raise fail(rp, r["name"], "a UDP listener cannot route by sni/host/path; use default_route")
            _check_acme_route(rp, r, ln["protocol"])
            routes.append(Route(name=r["name"], target=r["target"], sni=r["sni"], host=r["host"],
                                path_prefix=r["path_prefix"], send_proxy=r["send_proxy"],
                                http_headers=r["http_headers"], tls_cert=_file(base, r["tls_cert"]),
                                tls_key=_file(base, r["tls_key"]), tls=r["tls"], acme_challenge=r["acme_challenge"],
                                acme_cert_file=_file(base, r["acme_cert_file"]),
                                acme_key_file=_file(base, r["acme_key_file"]),
                                acme_deploy_hook=r["acme_deploy_hook"],
                                internal=r["internal_networks"] if r["internal_only"] else (),
                                part_options=options.carry(_ROUTES, ingress.ROUTE.opts, r,
                                                           exclude=("tls_cert", "tls_key"))))
        if not routes:
            raise ConfigError(f"{p}.routes: missing: a listener needs at least one [[listeners.routes]]")
        if ln["default_route"] and ln["default_route"] not in rnames:
            raise fail(f"{p}.default_route", ln["default_route"], "is not a route of this listener")
        if ln["protocol"] == "udp" and len(routes) > 1:
            raise fail(f"{p}.routes", [r.name for r in routes], "a UDP listener has exactly one route")
        default = ingress.resolve_default(p, [(r.name, not (r.sni or r.host or r.path_prefix)) for r in routes],
                                          ln["default_route"])
        trusted = ln["trusted"] or gateway_nets
        listeners.append(Listener(name=ln["name"], listen=(host, port), protocol=ln["protocol"], trusted=trusted,
                                  routes=tuple(routes), default_route=default,
                                  header_timeout=ln["header_timeout"], sniff_timeout=ln["sniff_timeout"],
                                  max_connections=ln["max_connections"], idle_timeout=ln["idle_timeout"],
                                  server_first=ln["server_first"], proxy_optional=ln["proxy_optional"],
                                  max_header_bytes=ln["max_header_bytes"], max_sniff_bytes=ln["max_sniff_bytes"],
                                  flow_idle_timeout=ln["flow_idle_timeout"], max_flows=ln["max_flows"],
                                  max_per_source=ln["max_per_source"], on_tunnel=on_tunnel,
                                  part_options=options.carry(_LISTENERS, ingress.LISTENER.opts, ln,
                                                             exclude=("default_route",))))
    if gateways:  # a `tunnel:PORT` listener binds every gateway's address: none may be taken by another listener
        for (proto, host, port), name in bound.items():
            for g in gateways:
                if host == g.ip and any(ln.on_tunnel and ln.protocol == proto and ln.listen[1] == port
                                        for ln in listeners):
                    raise fail(f"listeners[{[x.name for x in listeners].index(name)}].listen",
                               hostport.format((host, port)), f"is bound by a tunnel:{port} listener too ({g.where})")
    return HomeConfig(role="home", name=d["name"], tunnel=tunnel, listeners=tuple(listeners),
                      control_socket=_control(d["name"], d["control"]["socket"], base),
                      metrics_listen=d["metrics"]["listen"], drain_timeout=d["drain_timeout"], path=path,
                      gateways=gateways)


def _check_acme_route(rp: str, r: dict[str, Any], protocol: str) -> None:
    """The ACME keys of one route, alone (what needs the [acme] table is checked in _with_acme)."""
    if r["tls"] == "acme":
        if r["tls_cert"]:
            raise fail(f"{rp}.tls", "acme", "a route takes its certificate from tls_cert/tls_key or from ACME, "
                       "not both")
        if r["acme_cert_file"]:
            raise fail(f"{rp}.acme_cert_file", r["acme_cert_file"], "is for passthrough routes; with tls = \"acme\" "
                       "the certificate stays inside wiregate")
    if bool(r["acme_cert_file"]) != bool(r["acme_key_file"]):
        raise fail(f"{rp}.acme_cert_file", r["acme_cert_file"], "acme_cert_file and acme_key_file go together")
    if r["acme_deploy_hook"] and not r["acme_cert_file"]:
        raise fail(f"{rp}.acme_deploy_hook", r["acme_deploy_hook"], "needs acme_cert_file (the files it deploys)")
    if r["acme_deploy_hook"]:
        import shlex
        try:
            if not shlex.split(r["acme_deploy_hook"]):
                raise ValueError("empty command")
        except ValueError as exc:
            raise fail(f"{rp}.acme_deploy_hook", r["acme_deploy_hook"], str(exc)) from None
    acme = r["tls"] == "acme" or bool(r["acme_cert_file"])
    if r["acme_challenge"] and not acme:
        raise fail(f"{rp}.acme_challenge", r["acme_challenge"], "needs tls = \"acme\" or acme_cert_file")
    if acme:
        if protocol != "tcp":
            raise fail(f"{rp}.tls", "acme", "ACME certificates are for TCP listeners")
        if not r["sni"]:
            raise fail(f"{rp}.sni", [], "an ACME certificate is for the route's sni names: list them (sni = [...])")


def _with_acme(cfg: HomeConfig, doc: dict, base: Path) -> HomeConfig:
    """The [acme] table (None when absent) and every check that spans it and the routes."""
    from dataclasses import replace

    raw = doc.get("acme")
    routes = cfg.acme_routes()
    if raw is None:
        if routes:
            ln, r = routes[0]
            raise ConfigError(f"listeners.routes {r.name!r}: asks for an ACME certificate but the file has no "
                              "[acme] table (directory, email, agree_tos = true)")
        return cfg
    a = schema.parse(raw, schema.ACME, "acme")
    rfc = None
    if "rfc2136" in raw:
        x = a["rfc2136"]
        rfc = Rfc2136Config(server=x["server"], zone=x["zone"], tsig_key_name=x["tsig_key_name"],
                            tsig_algorithm=x["tsig_algorithm"], tsig_secret_file=_path(base, x["tsig_secret_file"]))
    acme = AcmeConfig(directory=a["directory"], email=a["email"], agree_tos=a["agree_tos"],
                      account_key_file=_path(base, a["account_key_file"]), key_type=a["key_type"],
                      ca_bundle=_file(base, a["ca_bundle"]), storage_dir=_path(base, a["storage_dir"]),
                      challenge=a["challenge"], dns_provider=a["dns_provider"], rfc2136=rfc)
    if routes and not acme.agree_tos:
        raise fail("acme.agree_tos", False, "must be true to register with the CA: routes "
                   f"{[r.name for _, r in routes]} ask for ACME certificates (read the CA's terms first)")
    asked: dict[tuple[str, ...], tuple[str, str]] = {}
    for i, ln in enumerate(cfg.listeners):
        for j, r in enumerate(ln.routes):
            if not r.acme:
                continue
            challenge = r.acme_challenge or acme.challenge
            other = asked.setdefault(tuple(dict.fromkeys(r.sni)), (r.name, challenge))
            if other[1] != challenge:
                raise fail(f"listeners[{i}].routes[{j}].acme_challenge", challenge, f"route {other[0]!r} asks for "
                           f"the same names with {other[1]}: one certificate, one challenge")
            for n in r.sni:
                if n.startswith("*.") and challenge != "dns-01":
                    raise fail(f"listeners[{i}].routes[{j}].sni", n, f"a wildcard certificate needs dns-01 "
                               f"(this route uses {challenge}): set acme_challenge = \"dns-01\"")
            if challenge == "dns-01" and acme.dns_provider == "rfc2136":
                if rfc is None or not (rfc.server and rfc.zone and rfc.tsig_key_name):
                    raise ConfigError("acme.rfc2136: dns_provider = \"rfc2136\" needs [acme.rfc2136] with server, "
                                      "zone, tsig_key_name and tsig_secret_file")
                hostport.parse(rfc.server, default_port=53, what="acme.rfc2136.server")
    return replace(cfg, acme=acme)


def loads(text: str, base: Path = Path("."), path: Path | None = None) -> Config:
    """Parse TOML text and build the config (see `load`)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses per nesting level: `a = [[[[...` a few thousand deep
        raise ConfigError("not valid TOML: arrays or tables nested too deeply") from None
    return build(doc, base, path)


def load(path: str | os.PathLike) -> Config:
    """Read and check a config file; every error starts with the file name, then the key path and value."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{p}: larger than {MAX_CONFIG_BYTES} bytes; not a wiregate config")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text") from None
    try:
        return loads(text, p.resolve().parent, p)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None


# -- keys -------------------------------------------------------------------------------------------------------
def check_secret_mode(path: Path, what: str = "") -> None:
    """Refuse a secret file that group or others may access (it must be 0600 or stricter) or that is missing."""
    label = f"{what}: " if what else ""
    try:
        st = path.stat()
    except OSError as exc:
        raise ConfigError(f"{label}{str(path)!r}: cannot read: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{label}{str(path)!r}: not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise ConfigError(f"{label}{str(path)!r}: holds a secret but has mode {mode:04o} (group/world "
                          f"accessible); run: chmod 600 {path}")


def read_key(path: Path, what: str = "") -> bytes:
    """A 32-byte WireGuard key from a file of its base64 form, after checking the file's mode."""
    check_secret_mode(path, what)
    label = f"{what}: " if what else ""
    with open(path, "rb") as f:
        data = f.read(MAX_KEY_FILE_BYTES + 1)
    if len(data) > MAX_KEY_FILE_BYTES:
        raise ConfigError(f"{label}{str(path)!r}: too large for a key file")
    try:
        return decode_key(data.decode("ascii", "replace"), what)
    except ConfigError:  # the content is secret: say what is wrong, never echo it
        raise ConfigError(f"{label}{str(path)!r}: does not hold a WireGuard key (44 characters of base64)") from None


def write_secret(path: Path, text: str) -> None:
    """Write a secret file created with mode 0600 (never briefly readable by others), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str, mode: int = 0o644) -> None:
    """Write a non-secret file atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_files(cfg: Config) -> list[str]:
    """Problems with the files a config points to (key files: present, mode 0600, a key inside)."""
    problems: list[str] = []
    items: list[tuple[str, Path | None]] = [("tunnel.private_key_file", cfg.tunnel.private_key_file)]
    if isinstance(cfg, GatewayConfig):
        items += [(f"sites[{i}].preshared_key_file", s.preshared_key_file) for i, s in enumerate(cfg.sites)]
    else:
        items.append(("tunnel.preshared_key_file", cfg.tunnel.preshared_key_file))
        for g in cfg.gateways:
            items += [(f"{g.where}.private_key_file", g.private_key_file),
                      (f"{g.where}.preshared_key_file", g.preshared_key_file)]
        for i, ln in enumerate(cfg.listeners):
            for j, r in enumerate(ln.routes):
                if r.tls_key:
                    try:
                        check_secret_mode(r.tls_key, f"listeners[{i}].routes[{j}].tls_key")
                    except ConfigError as exc:
                        problems.append(str(exc))
                if r.tls_cert and not r.tls_cert.is_file():
                    problems.append(f"listeners[{i}].routes[{j}].tls_cert: {str(r.tls_cert)!r}: no such file")
        problems += _acme_file_problems(cfg)
    for what, p in items:
        if p is None:
            continue
        try:
            read_key(p, what)
        except ConfigError as exc:
            problems.append(str(exc))
    return problems


def _acme_file_problems(cfg: HomeConfig) -> list[str]:
    """The [acme] files: an existing account key or TSIG secret must be 0600; a ca_bundle must exist."""
    a = cfg.acme
    if a is None:
        return []
    out: list[str] = []
    secrets = [("acme.account_key_file", a.account_key_file)]  # created at start when missing
    if a.rfc2136 is not None and any((r.acme_challenge or a.challenge) == "dns-01" for _, r in cfg.acme_routes()):
        secrets.append(("acme.rfc2136.tsig_secret_file", a.rfc2136.tsig_secret_file))
    for what, p in secrets:
        if what == "acme.account_key_file" and not p.exists():
            continue
        try:
            check_secret_mode(p, what)
        except ConfigError as exc:
            out.append(str(exc))
    if a.ca_bundle is not None and not a.ca_bundle.is_file():
        out.append(f"acme.ca_bundle: {str(a.ca_bundle)!r}: no such file")
    return out

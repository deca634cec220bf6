"""`wiregate run FILE`: one node (gateway or home) with every part its file declares, in the foreground.

gateway: tunnel (one peer per site) + relay (backends = the sites' tunnel addresses) + probe responder
         + with [acme_dns]: the challenge zone's DNS server and the sites' publish channel (docs/acme-dns.md).
home:    per gateway (the [tunnel] one and each [[gateways]] table): a tunnel interface with that gateway as its
         one peer, a prober (keeps data flowing so WireGuard re-handshakes after a gateway restart) and an endpoint
         re-resolver (follows the gateway's DNS name); + one ingress (listeners on the tunnel addresses and/or LAN).
Both:    control socket (`wiregate status`), Prometheus metrics, sd_notify (READY/RELOADING/STOPPING),
         SIGHUP = reload (a bad file is refused, the running config stays), SIGTERM/SIGINT = drain and stop.

Building the parts' configs from a wiregate file is pure (`relay_config`, `ingress_config`, `tunnel_spec`) and
happens before anything is applied, so a reload either applies fully checked configs or changes nothing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import signal
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

from wiregate import hostport, sdnotify
from wiregate.config import model
from wiregate.config.model import Config, GatewayConfig, HomeConfig
from wiregate.errors import ConfigError, WiregateError
from wiregate.probe_policy import HandshakeWatch, ProbePolicy, resolve_delay
from wiregate.status import (
    AcmeDnsStatus,
    CertificateStatus,
    GatewayEndpoint,
    GatewayStatus,
    ListenerStatus,
    NodeStatus,
    ProbeStatus,
    RelayStatus,
    ReloadCounts,
    TunnelStatus,
    from_json,
)
from wiregate.tunnel import PeerSpec, Tunnel, TunnelSpec, describe_endpoint, make_tunnel
from wiregate.wireguard.keys import decode_key

if TYPE_CHECKING:
    from wiregate.acme.book import Book
    from wiregate.acme.manager import AcmeManager
    from wiregate.control import ControlServer
    from wiregate.dnsserver.server import AcmeDnsService, AcmeDnsSpec
    from wiregate.ingress import Ingress, IngressConfig
    from wiregate.metrics import MetricsServer
    from wiregate.relay import Relay, RelayConfig

log = logging.getLogger("wiregate.run")
C = TypeVar("C")
R = TypeVar("R")

PROBE_PORT = 51819  # UDP, on the gateway's tunnel address only
PROBE_MAGIC = b"wgprobe1"
PROBE_LEN = len(PROBE_MAGIC) + 8
SITES_SAVE_EVERY = 2.0  # seconds between saves of the sites' last endpoints (gateway)
MAX_SITES_FILE = 1 << 20


# -- pure builders ----------------------------------------------------------------------------------------------
def tunnel_spec(cfg: Config, endpoint: tuple[str, int] | None = None,
                site_endpoints: dict[str, tuple[str, int]] | None = None,
                link: model.GatewayLink | None = None) -> TunnelSpec:
    """The tunnel a config asks for; reads key files (mode-checked). `endpoint` = resolved gateway address (home);
    `site_endpoints` = the sites' last known addresses by public key (gateway; a site without one is learnt when it
    speaks); `link` = which of a home's gateways (default: the [tunnel] one; each has its own interface)."""
    t = cfg.tunnel
    if isinstance(cfg, HomeConfig):
        g = link or cfg.links[0]
        private = model.read_key(g.private_key_file, f"{g.where}.private_key_file")
        psk = model.read_key(g.preshared_key_file, f"{g.where}.preshared_key_file") if g.preshared_key_file else None
        peers: tuple[PeerSpec, ...] = (PeerSpec(public_key=decode_key(g.gateway_public_key),
                          allowed_ips=(str(ipaddress.ip_network(g.gateway_address)),), preshared_key=psk,
                          endpoint=endpoint, persistent_keepalive=g.persistent_keepalive, label=g.name),)
        return TunnelSpec(mode=t.mode, interface=g.interface, private_key=private, address=g.address,
                          listen_port=g.listen_port, mtu=t.mtu, peers=peers)
    private = model.read_key(t.private_key_file, "tunnel.private_key_file")
    known = site_endpoints or {}
    sites = tuple(
        PeerSpec(public_key=decode_key(s.public_key), allowed_ips=(str(ipaddress.ip_network(s.address)),),
                 preshared_key=(model.read_key(s.preshared_key_file, f"sites[{i}].preshared_key_file")
                                if s.preshared_key_file else None), endpoint=known.get(s.public_key),
                 label=s.name)
        for i, s in enumerate(cfg.sites))
    return TunnelSpec(mode=t.mode, interface=t.interface, private_key=private, address=t.address,
                      listen_port=t.listen_port, mtu=t.mtu, peers=sites)


def relay_config(cfg: GatewayConfig):
    """The relay's config: one service per [[services]] whose backends are its sites' tunnel addresses."""
    from wiregate.relay import Backend, HealthCheck, RelayConfig, TCPService, UDPService

    services: list[TCPService | UDPService] = []
    for s in cfg.services:
        sites = cfg.service_sites(s)
        if not sites:
            log.warning("service %s: no site paired yet; not listening", s.name)
            continue
        backends = tuple(Backend(site.address, s.port, weight=site.weight, backup=site.backup, name=site.name)
                         for site in sites)
        if all(b.backup for b in backends):  # the relay wants a primary: the first backup serves as one
            backends = (Backend(backends[0].host, backends[0].port, weight=backends[0].weight, backup=False,
                                name=backends[0].name), *backends[1:])
        # the relay's own options come as the file gave them (model: part_options); here only what the gateway
        # decides: the backends (its sites), and for UDP the header version (the gateway's default is v2)
        if s.protocol == "tcp":
            h = s.health
            # checks speak PROXY too (a LOCAL header, as HAProxy's check-send-proxy), so the home ingress, which
            # requires a header from the gateway, sees a well-formed check rather than a broken connection
            health = HealthCheck(**h.part_options, send_proxy=s.proxy_protocol != "none") if h.enabled else None
            services.append(TCPService(name=s.name, listen=s.listen, backends=backends, health=health,
                                       **s.part_options))
        else:
            services.append(UDPService(name=s.name, listen=s.listen, backends=backends,
                                       proxy_protocol=s.proxy_protocol, **s.part_options))
    return RelayConfig(services=tuple(services), drain_timeout=cfg.drain_timeout)


def acme_dns_spec(cfg: GatewayConfig):
    """The gateway's ACME DNS service (`[acme_dns]`): None when the table is not set."""
    from wiregate.dnsserver.channel import SiteGrant
    from wiregate.dnsserver.server import AcmeDnsSpec

    a = cfg.acme_dns
    if a is None:
        return None
    # the publish channel listens on the tunnel address, bound to the tunnel device: a request's source address
    # is then one WireGuard admitted from that site (AllowedIPs), which is how the site is known
    return AcmeDnsSpec(zone=a.zone, nameserver=a.nameserver, listen=a.listen, publish_address=cfg.tunnel.ip,
                       publish_port=a.publish_port, device=cfg.tunnel.interface,
                       sites=tuple(SiteGrant(s.name, s.address, s.public_key, s.acme_names)
                                   for s in cfg.sites if s.acme_names),
                       record_ttl=a.record_ttl, max_names_per_site=a.max_names_per_site)


def ingress_config(cfg: HomeConfig):
    """The ingress's config: the home file's listeners and routes as they are. Listeners trusting the gateway (the
    default) believe its PROXY headers only on the tunnel interface: on the LAN its address could be spoofed.

    With several gateways a `tunnel:PORT` listener becomes one listener per gateway, on that gateway's tunnel
    address, trusting that gateway's address on its interface (the first keeps the file's name, the others are
    `NAME@GATEWAY`), so each gateway's connections are counted and refused apart."""
    from wiregate.ingress import IngressConfig, Listener, Route

    links = cfg.links
    ifaces = tuple(g.interface for g in links)
    gateway_nets = {str(ipaddress.ip_network(g.gateway_address)) for g in links}
    listeners = []
    for ln in cfg.listeners:
        # the ingress's own options come as the file gave them (model: part_options); here what home decides
        routes = tuple(Route(name=r.name, tls_cert=str(r.tls_cert) if r.tls_cert else None,
                             tls_key=str(r.tls_key) if r.tls_key else None, acme=r.tls == "acme",
                             internal=r.internal, **r.part_options)
                       for r in ln.routes)
        default = ln.default_route or None  # the model names it (a route without sni/host) or leaves it empty
        trusts_gateways = set(ln.trusted) == gateway_nets
        copies: list[tuple[str, tuple[str, int], tuple[str, ...], str | tuple[str, ...] | None]]
        if ln.on_tunnel:
            copies = [(ln.name if i == 0 else f"{ln.name}@{g.name}", (g.ip, ln.listen[1]),
                       (str(ipaddress.ip_network(g.gateway_address)),) if trusts_gateways else ln.trusted,
                       g.interface if trusts_gateways else None) for i, g in enumerate(links)]
        else:
            copies = [(ln.name, ln.listen, ln.trusted, (ifaces[0] if len(ifaces) == 1 else ifaces)
                       if trusts_gateways else None)]
        for name, listen, trusted, trusted_if in copies:
            listeners.append(Listener(name=name, listen=listen, trusted=trusted, routes=routes, default_route=default,
                                      trusted_interface=trusted_if, **ln.part_options))
    return IngressConfig(listeners=tuple(listeners))


def sites_file(cfg: Config) -> Path:
    """Where a gateway keeps its sites' last endpoints across restarts: beside its control socket."""
    return cfg.control_socket.with_suffix(".sites")


def load_site_endpoints(path: Path) -> dict[str, tuple[str, int]]:
    """{public key: (ip, port)} saved by a previous run; entries that do not parse are skipped, a missing or broken
    file gives {} (the file is only a hint: sites are learnt again when they speak)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SITES_FILE + 1)
        doc = json.loads(data) if len(data) <= MAX_SITES_FILE else {}
    except (OSError, ValueError):
        return {}
    out: dict[str, tuple[str, int]] = {}
    for key, ep in (doc.items() if isinstance(doc, dict) else ()):
        try:
            if isinstance(ep, str):
                out[key] = hostport.parse(ep, names=False, what="sites file")
        except ConfigError:
            continue
    return out


def _wrap_part_error(exc: Exception) -> ConfigError:
    return exc if isinstance(exc, ConfigError) else ConfigError(f"{type(exc).__name__}: {exc}")


# -- tunnel probes ----------------------------------------------------------------------------------------------
class ProbeResponder(asyncio.DatagramProtocol):
    """Gateway side: echo well-formed probes from the tunnel prefix (nothing else is answered)."""

    def __init__(self, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> None:
        self.network = network
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's is not a subclass

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if self.transport is not None and len(data) == PROBE_LEN and data.startswith(PROBE_MAGIC) and \
                ipaddress.ip_address(addr[0].split("%")[0]) in self.network:
            self.transport.sendto(data, addr)


class Prober(asyncio.DatagramProtocol):
    """Home side: a probe to the gateway every interval. It is tunnel data, so when the gateway has restarted and
    no longer knows our session, WireGuard's rule (data sent, nothing back for 15 s -> new handshake) repairs the
    tunnel without waiting for the 2-minute rekey; the echoes measure the round trip for status. The adapter of
    `policy` (probe_policy.ProbePolicy): it reads `clock` and feeds the policy what it sends and hears."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.clock = clock
        self.policy = ProbePolicy()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's is not a subclass

    def send(self) -> None:
        if self.transport is not None:
            self.transport.sendto(PROBE_MAGIC + struct.pack("!d", self.clock()))
            self.policy.probe_sent()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if len(data) == PROBE_LEN and data.startswith(PROBE_MAGIC):
            (t0,) = struct.unpack("!d", data[len(PROBE_MAGIC):])
            self.policy.answered(t0, self.clock())

    def error_received(self, exc: Exception) -> None:  # e.g. no route while the tunnel is down: keep probing
        pass

    def status(self) -> ProbeStatus:
        p, now = self.policy, self.clock()
        return ProbeStatus(sent=p.sent, replies=p.replies,
                           last_reply_ago=None if p.last_reply is None else round(now - p.last_reply, 1),
                           rtt_ms=None if p.rtt is None else round(p.rtt * 1000, 2), handshake_restarts=p.restarts)


def tunnel_status(tunnel: Tunnel) -> TunnelStatus:
    """A tunnel's state as last read, typed."""
    return from_json(TunnelStatus, tunnel.status(), "tunnel")


# -- the node ---------------------------------------------------------------------------------------------------
class GatewayRun:
    """Home side: one gateway's running parts (its own tunnel interface, prober, handshake watch, resolved
    endpoint). A home with several gateways runs one each; they share nothing but the ingress."""

    def __init__(self, link: model.GatewayLink, tunnel: Tunnel, endpoint: tuple[str, int] | None) -> None:
        self.link = link
        self.tunnel = tunnel  # made, started by Node._start_gateway_tunnel
        self.endpoint = endpoint
        self.prober = Prober()  # its socket opens in Node._start_gateway_tasks
        self.watch = HandshakeWatch(time.monotonic())
        self.tasks: list[asyncio.Task[None]] = []

    def stop_tasks(self) -> None:
        for t in self.tasks:
            t.cancel()
        self.tasks.clear()
        if self.prober.transport is not None:
            self.prober.transport.close()

    @property
    def which(self) -> str:
        """How logs name this gateway: "the gateway" for a one-gateway home's words, else by name."""
        return "the gateway" if self.link.where == "tunnel" else f"gateway {self.link.name}"

    def no_handshake_text(self) -> str:
        g = self.link
        waited = time.monotonic() - self.watch.started
        return (f"no handshake with {self.which} at {hostport.format(g.gateway_endpoint)} "
                f"({describe_endpoint(self.endpoint)}) in {waited:.0f}s: check {g.where}.gateway_endpoint (the "
                f"VPS's address and its WireGuard UDP port, listen_port in its gateway file), that UDP port "
                f"{g.gateway_endpoint[1]} is open to the VPS, and that the gateway's file has this site's public key "
                "(site add, then reload the gateway)")

    def status(self, probe_interval: float) -> GatewayStatus:
        g = self.link
        probing = self.prober.transport is not None
        return GatewayStatus(
            name=g.name, interface=g.interface, address=g.address, gateway_address=g.gateway_address,
            gateway_endpoint=GatewayEndpoint(configured=hostport.format(g.gateway_endpoint),
                                             resolved=describe_endpoint(self.endpoint)),
            tunnel=tunnel_status(self.tunnel),
            reachable=self.prober.policy.reachable(self.prober.clock(), probe_interval),
            probe=self.prober.status() if probing else None,
            warnings=(f"tunnel: {self.no_handshake_text()}",) if self.watch.waiting else ())


# a reload's plan for one gateway of the new file: its link, running parts (None: added), endpoint, tunnel spec
GatewayPlan = tuple[model.GatewayLink, GatewayRun | None, tuple[str, int] | None, TunnelSpec]


class Node:
    """A running gateway or home (see module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.cfg: Config = model.load(self.path)
        self.tunnel: Tunnel | None = None  # a home's: its first gateway's (see _sync_first)
        self.relay: Relay | None = None
        self.acme_dns: AcmeDnsService | None = None
        self.ingress: Ingress | None = None
        self.acme: AcmeManager | None = None  # home with ACME routes
        self.acme_book: Book | None = None  # what the ingress asks about challenges and certificates
        self.control: ControlServer | None = None
        self.metrics: MetricsServer | None = None
        self.responder_transport: asyncio.DatagramTransport | None = None
        self.endpoint: tuple[str, int] | None = None
        self.started_at = time.time()
        self.reloads = {"ok": 0, "refused": 0}
        self.saved_sites: dict[str, str] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self._reload_lock = asyncio.Lock()
        self.gateways: dict[str, GatewayRun] = {}  # home: by interface, in the file's order
        self.failed = asyncio.Event()  # a tunnel device stopped working under us
        self.failed_interface = ""

    # -- life cycle ----------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Bring every part up in order (tunnel, then relay/ingress, then control and metrics), then READY=1."""
        from wiregate.control import ControlServer

        cfg = self.cfg
        problems = model.check_files(cfg)
        if problems:
            raise ConfigError(f"{self.path}: {problems[0]}")
        loop = asyncio.get_running_loop()
        if isinstance(cfg, HomeConfig):
            for g in cfg.links:
                endpoint = await self._resolve_first(g)
                gr = GatewayRun(g, make_tunnel(tunnel_spec(cfg, endpoint, link=g)), endpoint)
                self.gateways[g.interface] = gr
                await self._start_gateway_tunnel(cfg, gr)
            self._sync_first()
        else:
            known = load_site_endpoints(sites_file(cfg))
            tunnel = self.tunnel = make_tunnel(tunnel_spec(cfg, None, known))
            await tunnel.start()
            self._watch_failed(tunnel, cfg.tunnel.interface)
            log.info("%s %s: tunnel %s up (%s mode, %s)", cfg.role, cfg.name, cfg.tunnel.interface,
                     tunnel.mode, cfg.tunnel.address)
            from wiregate.relay import Relay

            relay = self.relay = Relay(relay_config(cfg))
            await relay.start()
            net = ipaddress.ip_interface(cfg.tunnel.address).network
            responder, _ = await loop.create_datagram_endpoint(
                lambda: ProbeResponder(net), local_addr=(cfg.tunnel.ip, PROBE_PORT))
            self.responder_transport = responder
            self._knock(cfg, responder, known)
            self.tasks.append(loop.create_task(self._save_sites_loop(tunnel)))
            spec = acme_dns_spec(cfg)
            if spec is not None:
                from wiregate.dnsserver.server import AcmeDnsService

                acme_dns = self.acme_dns = AcmeDnsService(spec)
                await acme_dns.start()
        if isinstance(cfg, HomeConfig):
            await self._start_acme(cfg)
            if cfg.listeners:  # a home just after `join` has none yet: the tunnel alone runs
                await self._start_ingress(cfg)
            else:
                log.info("home %s: no [[listeners]] yet; only the tunnel runs", cfg.name)
            for gr in self.gateways.values():
                await self._start_gateway_tasks(gr)
            self._sync_first()
        self.control = await ControlServer.start(cfg.control_socket, self.handle)
        if cfg.metrics_listen:
            from wiregate.metrics import MetricsServer

            metrics = self.metrics = MetricsServer(self.status, self.refresh)
            await metrics.start(*cfg.metrics_listen)
        sdnotify.notify("READY=1", f"STATUS={self._summary()}", f"MAINPID={os.getpid()}")
        log.info("%s %s: ready (%s); control %s%s", cfg.role, cfg.name, self._summary(), cfg.control_socket,
                 f", metrics http://{cfg.metrics_listen[0]}:{cfg.metrics_listen[1]}/metrics"
                 if cfg.metrics_listen else "")

    async def close(self) -> None:
        """Drain (relay/ingress stop accepting; open connections get drain_timeout), then take the tunnel down."""
        sdnotify.notify("STOPPING=1")
        if isinstance(self.cfg, GatewayConfig) and self.tunnel is not None and self.control is not None:
            self._save_sites(self.cfg, self.tunnel)
        for t in self.tasks:
            t.cancel()
        for gr in self.gateways.values():
            gr.stop_tasks()
        if self.control is not None:
            await self.control.close()
        if self.metrics is not None:
            await self.metrics.close()
        if self.responder_transport is not None:
            self.responder_transport.close()
        if self.acme_dns is not None:
            await self.acme_dns.close()
        if self.acme is not None:
            await self.acme.close()
        for part in (self.relay, self.ingress):
            if part is not None:
                try:
                    await part.close(self.cfg.drain_timeout)
                except Exception:  # the tunnel must still go down
                    log.exception("closing %s failed", type(part).__name__)
        if self.gateways:
            for gr in self.gateways.values():
                await gr.tunnel.close()
        elif self.tunnel is not None:
            await self.tunnel.close()
        log.info("%s %s: stopped", self.cfg.role, self.cfg.name)

    async def reload(self) -> bool:
        """Re-read the file; apply it when every part accepts it, else log why and keep the running config."""
        async with self._reload_lock:
            sdnotify.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
            try:
                new = model.load(self.path)
                if new.role != self.cfg.role:
                    raise ConfigError(f"role: {new.role!r}: a running {self.cfg.role} cannot become a {new.role}")
                if new.control_socket != self.cfg.control_socket or new.metrics_listen != self.cfg.metrics_listen:
                    log.warning("reload: control.socket / metrics.listen changes need a restart; kept the old ones")
                problems = model.check_files(new)
                if problems:
                    raise ConfigError(problems[0])
                plan: list[GatewayPlan] = []
                if isinstance(new, HomeConfig):
                    plan = await self._plan_gateways(new)
                else:
                    spec = tunnel_spec(new)
                    self._tunnel()._check_same(spec)
                relay_cfg: RelayConfig | None = None
                ingress_cfg: IngressConfig | None = None
                dns_spec: AcmeDnsSpec | None = None
                if isinstance(new, GatewayConfig):
                    relay_cfg = self._build(relay_config, new)
                    dns_spec = acme_dns_spec(new)
                    old_spec = acme_dns_spec(self.cfg) if isinstance(self.cfg, GatewayConfig) else None
                    if (dns_spec is None) != (old_spec is None) or (dns_spec and old_spec and (
                            dns_spec.zone, dns_spec.nameserver, dns_spec.listen, dns_spec.publish_port,
                            dns_spec.record_ttl, dns_spec.max_names_per_site) != (
                            old_spec.zone, old_spec.nameserver, old_spec.listen, old_spec.publish_port,
                            old_spec.record_ttl, old_spec.max_names_per_site)):
                        log.warning("reload: [acme_dns] changes other than the sites' acme_names need a restart; "
                                    "kept the running DNS service")
                else:
                    ingress_cfg = self._build(ingress_config, new) if new.listeners or self.ingress else None
                started: list[GatewayRun] = []
                if isinstance(new, HomeConfig):
                    started = await self._apply_gateway_tunnels(new, plan)
                else:
                    await self._tunnel().update(spec)
                try:
                    # a new ACME manager first (a failure changes nothing), swapped in after the ingress took its
                    # config; False: the [acme] table and the ACME routes did not change
                    acme_next = await self._prepare_acme(new) if isinstance(new, HomeConfig) else False
                    try:
                        if isinstance(new, HomeConfig) and self.ingress is None:
                            if new.listeners:
                                await self._start_ingress(new)
                        elif self.ingress is not None and ingress_cfg is not None:
                            await self.ingress.reload(ingress_cfg)
                        elif self.relay is not None and relay_cfg is not None:
                            await self.relay.reload(relay_cfg)
                    except BaseException:
                        if acme_next:
                            await acme_next.close()
                        raise
                    if acme_next is not False:
                        if self.acme is not None:
                            await self.acme.close()
                        self.acme = acme_next
                    if isinstance(new, GatewayConfig) and self.acme_dns is not None and dns_spec is not None:
                        self.acme_dns.update_sites(dns_spec.sites)
                except Exception as exc:  # noqa: BLE001 - the part keeps its old config on failure
                    for gr in started:  # gateways this reload added go again; the others keep running
                        await gr.tunnel.close()
                    raise _wrap_part_error(exc) from None
                if isinstance(new, HomeConfig):
                    await self._commit_gateways(new, plan, started)
            except Exception as exc:  # noqa: BLE001 - any failure refuses the reload; READY=1 must follow RELOADING=1
                if not isinstance(exc, ConfigError):
                    log.debug("reload failed", exc_info=True)
                    exc = ConfigError(f"{self.path}: {type(exc).__name__}: {exc}")
                self.reloads["refused"] += 1
                log.error("reload refused, keeping the running config: %s", exc)
                sdnotify.notify("READY=1", f"STATUS=reload refused: {exc}")
                return False
            self.cfg = new
            self._sync_first()
            self.reloads["ok"] += 1
            log.info("reload: applied %s (%s)", self.path, self._summary())
            sdnotify.notify("READY=1", f"STATUS={self._summary()}")
            return True

    @staticmethod
    def _build(fn: Callable[[C], R], cfg: C) -> R:
        try:
            return fn(cfg)
        except Exception as exc:  # noqa: BLE001 - the part's own validation
            raise _wrap_part_error(exc) from None

    async def _start_acme(self, cfg: HomeConfig) -> None:
        """The ACME manager when routes ask for certificates: stored ones go live before the ingress starts."""
        self.acme = await self._new_acme(cfg)

    async def _new_acme(self, cfg: HomeConfig) -> AcmeManager | None:
        from wiregate.acme.book import Book
        from wiregate.acme.manager import AcmeManager, specs_from_config

        book = self.acme_book = self.acme_book or Book()
        if cfg.acme is None or not cfg.acme_routes():
            return None
        mgr = AcmeManager(cfg.acme, specs_from_config(cfg), book,
                          gateway_address=cfg.tunnel.gateway_address,
                          config_dir=cfg.path.resolve().parent if cfg.path else None)
        await mgr.start()  # AcmeError (a readable key file...) before anything changed
        return mgr

    async def _prepare_acme(self, new: HomeConfig) -> AcmeManager | None | Literal[False]:
        """For a reload: False when [acme] and the ACME routes are unchanged, else the started new manager (None:
        no ACME any more). Stored certificates are reused, so a restart of the manager orders nothing new."""
        from wiregate.acme.manager import specs_from_config

        old_specs = specs_from_config(self.cfg) if isinstance(self.cfg, HomeConfig) and self.cfg.acme else []
        new_specs = specs_from_config(new) if new.acme is not None else []
        if isinstance(self.cfg, HomeConfig) and new.acme == self.cfg.acme and old_specs == new_specs:
            return False
        return await self._new_acme(new)

    async def _start_ingress(self, cfg: HomeConfig) -> None:
        from wiregate.ingress import Ingress

        ingress = Ingress(ingress_config(cfg), acme=self.acme_book)
        await ingress.start()
        self.ingress = ingress

    # -- gateway helpers -----------------------------------------------------------------------------------
    @staticmethod
    def _knock(cfg: GatewayConfig, transport: asyncio.DatagramTransport, known: dict[str, tuple[str, int]]) -> None:
        """After a restart: one datagram into the tunnel for each site with a saved endpoint. Having no session,
        WireGuard starts a handshake to that endpoint at once, so the site's tunnel is back within a round trip
        instead of when the site notices the silence (its probe timeout or WireGuard's 15 s)."""
        sites = [s for s in cfg.sites if s.public_key in known]
        for s in sites:
            transport.sendto(b"\0", (s.address, PROBE_PORT))
        if sites:
            log.info("gateway: handshaking with %d site(s) at their last endpoints (%s)", len(sites),
                     ", ".join(s.name for s in sites))

    def _save_sites(self, cfg: Config, tunnel: Tunnel) -> None:
        eps = {p.public_key: p.endpoint for p in tunnel_status(tunnel).peers if p.endpoint}
        if eps and eps != self.saved_sites:
            try:
                model.write_text(sites_file(cfg), json.dumps(eps, sort_keys=True) + "\n", mode=0o600)
                self.saved_sites = eps
            except OSError as exc:
                log.warning("cannot save the sites' endpoints to %s: %s", sites_file(cfg), exc.strerror)

    async def _save_sites_loop(self, tunnel: Tunnel) -> None:
        while True:
            await asyncio.sleep(SITES_SAVE_EVERY)
            await tunnel.refresh()
            self._save_sites(self.cfg, tunnel)

    def _tunnel(self) -> Tunnel:
        """A gateway's tunnel (made by start)."""
        if self.tunnel is None:
            raise WiregateError(f"{self.cfg.role} {self.cfg.name}: not started")
        return self.tunnel

    def _home(self) -> HomeConfig:
        """The running home's config (the probe and resolve loops run at home only)."""
        if not isinstance(self.cfg, HomeConfig):
            raise WiregateError(f"{self.cfg.role} {self.cfg.name}: not a home")
        return self.cfg

    # -- home helpers --------------------------------------------------------------------------------------
    def _sync_first(self) -> None:
        """The [tunnel] gateway's parts under the names a one-gateway home always had (status, reload)."""
        if self.gateways:
            first = next(iter(self.gateways.values()))
            self.tunnel, self.endpoint = first.tunnel, first.endpoint

    def _watch_failed(self, tunnel: Tunnel, interface: str, tasks: list[asyncio.Task[None]] | None = None) -> None:
        ev = tunnel.failed()
        if ev is None:
            return

        async def watch() -> None:
            await ev.wait()
            self.failed_interface = interface
            self.failed.set()
        (self.tasks if tasks is None else tasks).append(asyncio.get_running_loop().create_task(watch()))

    async def _resolve_first(self, g: model.GatewayLink) -> tuple[str, int] | None:
        from wiregate.resolver import resolve

        try:
            return await resolve(*g.gateway_endpoint)
        except OSError as exc:
            log.warning("gateway %s endpoint %s: cannot resolve yet (%s); retrying", g.name, g.gateway_endpoint[0],
                        exc)
            return None

    async def _start_gateway_tunnel(self, cfg: HomeConfig, gr: GatewayRun) -> None:
        await gr.tunnel.start()
        g = gr.link
        log.info("home %s: tunnel %s to gateway %s up (%s mode, %s)", cfg.name, g.interface, g.name,
                 gr.tunnel.mode, g.address)

    async def _start_gateway_tasks(self, gr: GatewayRun) -> None:
        """The prober (from this gateway's tunnel address, so the reply comes back through the same tunnel), the
        handshake watch and the endpoint re-resolver of one gateway."""
        loop = asyncio.get_running_loop()
        prober = gr.prober
        remote = (gr.link.gateway_address, PROBE_PORT)
        try:
            await loop.create_datagram_endpoint(lambda: prober, local_addr=(gr.link.ip, 0), remote_addr=remote)
        except OSError:  # external mode on an interface without the configured address (start warned): the route
            await loop.create_datagram_endpoint(lambda: prober, remote_addr=remote)  # picks the source
        self._watch_failed(gr.tunnel, gr.link.interface, gr.tasks)
        gr.tasks.append(loop.create_task(self._probe_loop(gr)))
        gr.tasks.append(loop.create_task(self._resolve_loop(gr)))

    async def _plan_gateways(self, new: HomeConfig) -> list[GatewayPlan]:
        """For a reload: each gateway of the new file with its running parts (None: new), endpoint and tunnel spec,
        checked before anything is applied. Gateways are told apart by interface."""
        from wiregate.resolver import resolve

        plan: list[GatewayPlan] = []
        for g in new.links:
            gr = self.gateways.get(g.interface)
            if gr is None:
                endpoint = await self._resolve_first(g)
            elif g.gateway_endpoint != gr.link.gateway_endpoint:
                try:
                    endpoint = await resolve(*g.gateway_endpoint)
                except OSError as exc:
                    raise ConfigError(f"{g.where}.gateway_endpoint: {hostport.format(g.gateway_endpoint)!r}: "
                                      f"cannot resolve: {exc}") from None
            else:
                endpoint = gr.endpoint
            spec = tunnel_spec(new, endpoint, link=g)
            if gr is not None:
                gr.tunnel._check_same(spec)
            plan.append((g, gr, endpoint, spec))
        return plan

    async def _apply_gateway_tunnels(self, new: HomeConfig, plan: list[GatewayPlan]) -> list[GatewayRun]:
        """Start the tunnels of added gateways and update the others; returns the added ones (not yet tasked)."""
        started: list[GatewayRun] = []
        try:
            for g, gr, endpoint, spec in plan:
                if gr is None:
                    gr = GatewayRun(g, make_tunnel(spec), endpoint)
                    await self._start_gateway_tunnel(new, gr)
                    started.append(gr)
                else:
                    await gr.tunnel.update(spec)
        except BaseException:
            for gr in started:
                await gr.tunnel.close()
            raise
        return started

    async def _commit_gateways(self, new: HomeConfig, plan: list[GatewayPlan], started: list[GatewayRun]) -> None:
        """After a reload was applied: keep the new gateways' parts, stop those of the gateways it removed."""
        fresh = {gr.link.interface: gr for gr in started}
        kept: dict[str, GatewayRun] = {}
        for g, gr, endpoint, _spec in plan:
            if gr is None:
                gr = fresh[g.interface]
                await self._start_gateway_tasks(gr)
                log.info("home %s: gateway %s added (%s)", new.name, g.name, hostport.format(g.gateway_endpoint))
            else:
                gr.link, gr.endpoint = g, endpoint
            kept[g.interface] = gr
        for iface, gr in self.gateways.items():
            if iface not in kept:
                gr.stop_tasks()
                await gr.tunnel.close()
                log.info("home %s: gateway %s removed (interface %s closed)", new.name, gr.link.name, iface)
        self.gateways = kept

    async def _watch_handshake(self, gr: GatewayRun) -> None:
        if gr.watch.done:
            return
        await gr.tunnel.refresh()  # kernel/external: `wg show`, only until the first handshake
        handshaken = any(p.last_handshake for p in tunnel_status(gr.tunnel).peers)
        verdict = gr.watch.update(time.monotonic(), handshaken)
        if verdict == "warn":
            log.warning("tunnel: %s", gr.no_handshake_text())
        elif verdict == "ok":
            log.info("tunnel: handshake with %s done after %.0fs", gr.which,
                     time.monotonic() - gr.watch.started)

    async def _probe_loop(self, gr: GatewayRun) -> None:
        """A probe every probe_interval; the handshake restarts when probe_policy.ProbePolicy says."""
        while True:
            gr.prober.send()
            await asyncio.sleep(self._home().tunnel.probe_interval)
            await self._watch_handshake(gr)
            silent = gr.prober.policy.due_restart(gr.prober.clock(), self._home().tunnel.probe_interval)
            if silent is not None and await gr.tunnel.restart_handshake():
                gr.prober.policy.restarted()
                log.info("tunnel: no answer from %s for %.0fs; %s", gr.which, silent, gr.tunnel.REPAIR)

    async def _resolve_loop(self, gr: GatewayRun) -> None:
        from wiregate.resolver import resolve

        while True:
            await asyncio.sleep(resolve_delay(gr.endpoint is not None, self._home().tunnel.resolve_interval))
            host, port = gr.link.gateway_endpoint
            try:
                ep = await resolve(host, port)
            except OSError as exc:
                log.warning("%s endpoint %s: lookup failed (%s); keeping %s", gr.which, host, exc,
                            describe_endpoint(gr.endpoint))
                continue
            if ep != gr.endpoint:
                log.info("%s endpoint %s now resolves to %s (was %s)", gr.which, host,
                         describe_endpoint(ep), describe_endpoint(gr.endpoint))
                gr.endpoint = ep
                self._sync_first()
                try:
                    await gr.tunnel.update(tunnel_spec(self._home(), ep, link=gr.link))
                except WiregateError as exc:
                    log.error("%s endpoint: cannot apply %s: %s", gr.which, describe_endpoint(ep), exc)

    async def refresh(self) -> None:
        """Read every tunnel's state (kernel/external: `wg show` off the event loop)."""
        if self.gateways:
            for gr in list(self.gateways.values()):
                await gr.tunnel.refresh()
        elif self.tunnel is not None:
            await self.tunnel.refresh()

    # -- status and control --------------------------------------------------------------------------------
    def _summary(self) -> str:
        c = self.cfg
        if isinstance(c, GatewayConfig):
            return f"{len(c.sites)} site(s), {len(c.services)} service(s)"
        if len(self.gateways) > 1:
            return f"{len(c.listeners)} listener(s), gateways " + ", ".join(
                f"{gr.link.name} {describe_endpoint(gr.endpoint)}" for gr in self.gateways.values())
        return f"{len(c.listeners)} listener(s), gateway {describe_endpoint(self.endpoint)}"

    def status(self) -> NodeStatus:
        """Everything `wiregate status` shows: tunnel peers, services/backends or listeners, connections. The parts
        report in their own status() words; this reads them into the typed status (wiregate.status)."""
        acme = self.acme
        gws: tuple[GatewayStatus, ...] = ()
        if isinstance(self.cfg, HomeConfig):
            gws = tuple(gr.status(self.cfg.tunnel.probe_interval) for gr in self.gateways.values())
        first = gws[0] if gws else None  # the [tunnel] gateway, under the keys a one-gateway home always had
        return NodeStatus(
            role=self.cfg.role, name=self.cfg.name, pid=os.getpid(), config=str(self.path),
            uptime=round(time.time() - self.started_at, 1), reloads=ReloadCounts(**self.reloads),
            tunnel=tunnel_status(self.tunnel) if self.tunnel is not None else None,
            relay=from_json(RelayStatus, self.relay.status(), "relay") if self.relay is not None else None,
            ingress=({name: from_json(ListenerStatus, ln, f"ingress.{name}")
                      for name, ln in self.ingress.status().items()} if self.ingress is not None else None),
            acme_dns=(from_json(AcmeDnsStatus, self.acme_dns.status(), "acme_dns")
                      if self.acme_dns is not None else None),
            certificates=(tuple(from_json(CertificateStatus, c, f"certificates[{i}]")
                                for i, c in enumerate(acme.status())) if acme is not None else None),
            certificate_failures=acme.failure_counts() if acme is not None else None,
            gateway_endpoint=first.gateway_endpoint if first else None,
            probe=first.probe if first else None,
            warnings=tuple(w for g in gws for w in g.warnings),
            gateways=gws)

    async def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        """Control socket requests: status, reload, ping."""
        cmd = req["cmd"]
        if cmd == "status":
            await self.refresh()
            return {"ok": True, "status": self.status()}  # the control socket writes it with status.to_json
        if cmd == "reload":
            ok = await self.reload()
            return {"ok": ok} if ok else {"ok": False, "error": "reload refused (see the log)"}
        if cmd == "ping":
            return {"ok": True, "pid": os.getpid()}
        return {"ok": False, "error": f"unknown cmd {cmd!r} (status, reload, ping)"}


async def run_node(path: Path) -> int:
    """Run until SIGTERM/SIGINT; SIGHUP reloads. Returns the exit code."""
    from wiregate.control import answers

    from wiregate.limits import raise_nofile

    raise_nofile()  # the soft limit (often 1024) cannot hold the default limits; the hard one is ours to take
    node = Node(path)
    pid = answers(node.cfg.control_socket)
    if pid is not None:  # before the tunnel: a second run must not touch the first one's interface
        raise WiregateError(f"{node.cfg.role} {node.cfg.name}: already running (pid {pid}, control socket "
                            f"{node.cfg.control_socket})")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(node.reload()))
    try:
        await node.start()
    except OSError as exc:  # a port taken, a device missing...: one clean line, not a traceback
        await node.close()
        raise WiregateError(f"{node.cfg.role} {node.cfg.name}: cannot start: {exc}") from None
    except BaseException:
        await node.close()
        raise
    # a TUN device deleted or broken (any gateway's, at home): nothing can flow there, so exit for systemd to restart
    waits = [loop.create_task(stop.wait()), loop.create_task(node.failed.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if not stop.is_set():
            log.error("%s %s: the tunnel device %s failed; stopping", node.cfg.role, node.cfg.name,
                      node.failed_interface)
        else:
            log.info("%s %s: stopping (drain up to %.0fs)", node.cfg.role, node.cfg.name, node.cfg.drain_timeout)
    finally:
        for t in waits:
            t.cancel()
        await node.close()
    if not stop.is_set():
        raise WiregateError(f"{node.cfg.role} {node.cfg.name}: tunnel device {node.failed_interface} failed")
    return 0


def find_control_socket(name_or_file: str | None) -> Path:
    """The control socket for a config file, an instance name, or the only socket in /run/wiregate."""
    if name_or_file:
        p = Path(name_or_file)
        if p.suffix == ".toml" or p.is_file():
            return model.load(p).control_socket
        if p.suffix == ".ctl" or "/" in name_or_file:
            return p
        return model.DEFAULT_RUN_DIR / f"{name_or_file}.ctl"
    from wiregate.control import answers

    socks = sorted(model.DEFAULT_RUN_DIR.glob("*.ctl")) if model.DEFAULT_RUN_DIR.is_dir() else []
    live = [s for s in socks if answers(s) is not None]  # a killed run leaves its socket behind
    if len(live) == 1:
        return live[0]
    if live:
        raise WiregateError(f"several wiregate instances run ({', '.join(s.stem for s in live)}); name one")
    if socks:
        raise WiregateError(f"no wiregate instance answers in {model.DEFAULT_RUN_DIR} (stale control socket(s) of "
                            f"a stopped run: {', '.join(s.name for s in socks)})")
    raise WiregateError(f"no control socket in {model.DEFAULT_RUN_DIR} (is `wiregate run` running?)")


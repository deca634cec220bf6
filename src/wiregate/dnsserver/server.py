"""asyncio adapters of the gateway's ACME DNS service: the DNS listeners (UDP + TCP) and the publish channel.

They own sockets and the clock and hold no decisions: every query goes to `Responder.respond`, every publish
request to `PublishHandler.handle` (both sans-I/O). Bounds: TCP DNS connections at most MAX_TCP_CLIENTS, each
idle at most TCP_IDLE seconds and MAX_TCP_QUERIES queries; publish connections at most MAX_PUBLISH_CLIENTS, one
request line read within PUBLISH_TIMEOUT seconds.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from wiregate.dnsserver.channel import (
    MAX_LINE,
    PUBLISH_PORT,
    ChallengeStore,
    PublishHandler,
    SiteGrant,
)
from wiregate.dnsserver.responder import Responder

log = logging.getLogger("wiregate.acme_dns")

MAX_TCP_CLIENTS = 64
MAX_TCP_QUERIES = 16  # queries on one TCP connection
TCP_IDLE = 10.0  # seconds a TCP DNS client may take for its next message
MAX_PUBLISH_CLIENTS = 16
PUBLISH_TIMEOUT = 5.0

Records = Callable[[], Mapping[str, Sequence[str]]]


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, responder: Responder, records: Records, clock: Callable[[], float]) -> None:
        self.responder, self.records, self.clock = responder, records, clock
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        out = self.responder.respond(data, self.records(), tcp=False, source=addr[0], now=self.clock())
        if out is not None and self.transport is not None:
            self.transport.sendto(out, addr)

    def error_received(self, exc) -> None:  # ICMP errors for earlier answers: nothing to do
        pass


class DnsServer:
    """The challenge zone's authoritative DNS on each `listen` address, UDP and TCP."""

    def __init__(self, responder: Responder, records: Records, listen: Sequence[tuple[str, int]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.responder, self.records, self.listen, self.clock = responder, records, tuple(listen), clock
        self.transports: list[asyncio.DatagramTransport] = []
        self.servers: list[asyncio.base_events.Server] = []
        self._clients = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            for host, port in self.listen:
                fam = socket.AF_INET6 if ":" in host else socket.AF_INET
                t, _ = await loop.create_datagram_endpoint(lambda: _Udp(self.responder, self.records, self.clock),
                                                           local_addr=(host, port), family=fam)
                self.transports.append(t)
                self.servers.append(await asyncio.start_server(self._tcp, host, port, family=fam,
                                                               reuse_address=True))
        except OSError:
            await self.close()
            raise

    def bound(self) -> list[tuple[str, int]]:
        """The (host, port) each UDP listener got (port 0 in the config = any free port, for tests)."""
        return [t.get_extra_info("sockname")[:2] for t in self.transports]

    async def _tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._clients >= MAX_TCP_CLIENTS:
            writer.close()
            return
        self._clients += 1
        try:
            for _ in range(MAX_TCP_QUERIES):  # RFC 7766: several queries per connection, length-prefixed
                head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE)
                (n,) = struct.unpack("!H", head)
                data = await asyncio.wait_for(reader.readexactly(n), TCP_IDLE)
                out = self.responder.respond(data, self.records(), tcp=True)
                if out is None:
                    break
                writer.write(struct.pack("!H", len(out)) + out)
                await asyncio.wait_for(writer.drain(), TCP_IDLE)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._clients -= 1
            writer.close()

    async def close(self) -> None:
        for t in self.transports:
            t.close()
        for s in self.servers:
            s.close()
        for s in self.servers:
            await s.wait_closed()
        self.transports.clear()
        self.servers.clear()


class PublishServer:
    """The publish channel on the gateway's tunnel address: requests only from sites' addresses on the tunnel."""

    def __init__(self, handler: PublishHandler, address: str, port: int = PUBLISH_PORT, device: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.handler, self.address, self.port, self.device, self.clock = handler, address, port, device, clock
        self.server: asyncio.base_events.Server | None = None
        self._clients = 0

    async def start(self) -> None:
        fam = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        sock = socket.socket(fam, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self.device:  # only what arrives on the tunnel interface: the source address is then WireGuard's
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.device.encode())
            sock.bind((self.address, self.port))
            sock.listen(16)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.server = await asyncio.start_server(self._serve, sock=sock, limit=MAX_LINE + 1)

    def bound_port(self) -> int:
        return self.server.sockets[0].getsockname()[1] if self.server else 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        source = str(ipaddress.ip_address(peer[0].split("%")[0])) if peer else ""
        if self._clients >= MAX_PUBLISH_CLIENTS or source not in self.handler.sites:
            if source not in self.handler.sites:
                log.warning("acme-dns publish: connection from %s refused: not a site's tunnel address", source)
            writer.close()
            return
        self._clients += 1
        try:
            line = await asyncio.wait_for(reader.readuntil(b"\n"), PUBLISH_TIMEOUT)
            answer = self.handler.handle(source, line, self.clock())
            for site, name, why in self.handler.take_refusals():
                log.warning("acme-dns publish: site %s: %s refused: %s", site, name, why)
            writer.write(answer)
            await asyncio.wait_for(writer.drain(), PUBLISH_TIMEOUT)
        except asyncio.LimitOverrunError:
            writer.write(self.handler.oversized())
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._clients -= 1
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None


@dataclass(frozen=True, slots=True)
class AcmeDnsSpec:
    """Everything the gateway's ACME DNS service needs, built from the gateway file (runner.acme_dns_spec)."""

    zone: str
    nameserver: str
    listen: tuple[tuple[str, int], ...]
    publish_address: str
    publish_port: int
    device: str | None
    sites: tuple[SiteGrant, ...]
    record_ttl: float
    max_names_per_site: int


class AcmeDnsService:
    """Responder + record store + publish channel, started and stopped together by the gateway runner."""

    def __init__(self, spec: AcmeDnsSpec, clock: Callable[[], float] = time.monotonic) -> None:
        self.spec, self.clock = spec, clock
        self.store = ChallengeStore(ttl=spec.record_ttl, max_names_per_site=spec.max_names_per_site)
        self.responder = Responder(zone=spec.zone, nameserver=spec.nameserver, serial=int(time.time()))
        self.handler = PublishHandler(zone=spec.zone, nameserver=spec.nameserver,
                                      sites={s.address: s for s in spec.sites}, store=self.store)
        self.dns = DnsServer(self.responder, lambda: self.store.records(self.clock()), spec.listen, clock)
        self.publish = PublishServer(self.handler, spec.publish_address, spec.publish_port, spec.device, clock)

    async def start(self) -> None:
        await self.dns.start()
        try:
            await self.publish.start()
        except OSError:
            await self.dns.close()
            raise
        log.info("acme-dns: authoritative for %s on %s (UDP+TCP); publish channel on %s:%d", self.spec.zone,
                 ", ".join(f"{h}:{p}" for h, p in self.dns.bound()), self.spec.publish_address,
                 self.publish.bound_port())

    def update_sites(self, sites: Sequence[SiteGrant]) -> None:
        """A reload: new site grants apply at once; records of sites no longer granted go."""
        self.handler.sites = {s.address: s for s in sites}
        self.store.forget_sites(s.name for s in sites)

    def status(self) -> dict[str, object]:
        now = self.clock()
        return {"zone": self.spec.zone, "queries": self.responder.counters.as_dict(),
                "publish": dict(self.handler.counts), "records": self.store.status(now)}

    async def close(self) -> None:
        await self.publish.close()
        await self.dns.close()

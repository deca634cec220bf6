"""DNS-01 publishers: put `_acme-challenge.<domain>` TXT values where the CA will look, then take them away.

    pub = make_publisher(cfg.acme, cfg_dir, gateway=GatewayLink.for_home(cfg))
    await pub.publish("example.org", [digest])   # returns once the authoritative servers answer it
    await pub.clear("example.org")

- `GatewayPublisher` ("gateway"): asks the wiregate gateway over the tunnel (the publish channel of
  `wiregate.dnsserver.channel`); the gateway's own DNS server is the authoritative one, so its "ok" means visible.
- `Rfc2136Publisher` ("rfc2136"): a TSIG-signed dynamic update (RFC 2136, RFC 8945) to the zone's primary with
  dnspython, then polls every authoritative server of the zone (its NS set) until each answers the values.
The TSIG secret is read from a 0600 file and never logged or put in a message.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import json
import logging
import re
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.update

from wiregate import hostport
from wiregate.acme.errors import AcmeError
from wiregate.dnsserver.channel import MAX_LINE, PUBLISH_PORT

log = logging.getLogger("wiregate.acme.dns01")

MAX_SECRET_FILE = 4096
TXT_TTL = 60  # seconds: short, so a renewal's new value is not hidden behind a cached old one
UPDATE_TIMEOUT = 10.0  # seconds for one dynamic update / one query
PROPAGATION_TIMEOUT = 120.0  # seconds publish() waits for every authoritative server to answer the values
POLL_INTERVAL = 2.0
GATEWAY_TIMEOUT = 10.0  # seconds for one publish-channel request
MAX_NAMESERVERS = 8
TSIG_ALGORITHMS = {"hmac-sha256": dns.tsig.HMAC_SHA256, "hmac-sha512": dns.tsig.HMAC_SHA512,
                   "hmac-sha384": dns.tsig.HMAC_SHA384, "hmac-sha224": dns.tsig.HMAC_SHA224,
                   "hmac-sha1": dns.tsig.HMAC_SHA1}


class Dns01Publisher(Protocol):
    async def publish(self, domain: str, values: Sequence[str]) -> None:
        """Make TXT `_acme-challenge.<domain>` answer exactly `values` on the zone's authoritative servers (bounded
        wait); AcmeError naming the domain and the reason otherwise."""

    async def clear(self, domain: str) -> None:
        """Remove what publish() put there (best effort, never raises for a record already gone)."""


def _bare(domain: str) -> str:
    return domain.strip().lower().rstrip(".").removeprefix("*.")


# -- the gateway's publish channel ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class GatewayLink:
    """Where a home reaches the gateway's publish channel: its tunnel address and port."""

    address: str
    port: int = PUBLISH_PORT
    timeout: float = GATEWAY_TIMEOUT

    @classmethod
    def for_home(cls, cfg: Any) -> GatewayLink:
        """The link of a HomeConfig: the gateway's tunnel address, the default port."""
        return cls(cfg.tunnel.gateway_address)


async def gateway_request(link: GatewayLink, request: dict[str, Any]) -> dict[str, Any]:
    """One request on the publish channel; the gateway's answer (a dict with "ok"). OSError/TimeoutError when the
    gateway cannot be reached, ValueError when its answer is not one line of JSON."""
    async def exchange() -> bytes:
        reader, writer = await asyncio.open_connection(link.address, link.port, limit=MAX_LINE + 1)
        try:
            writer.write(json.dumps(request).encode() + b"\n")
            await writer.drain()
            return await reader.readuntil(b"\n")
        finally:
            writer.close()

    try:
        line = await asyncio.wait_for(exchange(), link.timeout)
    except asyncio.IncompleteReadError:
        raise ConnectionError("the gateway closed the connection without an answer (is this site's tunnel "
                              "address a site of the gateway?)") from None
    except asyncio.LimitOverrunError:
        raise ValueError("the gateway's answer is too long") from None
    answer = json.loads(line)
    if not isinstance(answer, dict):
        raise ValueError("the gateway's answer is not a JSON object")  # noqa: TRY004
    return answer


class GatewayPublisher:
    """DNS-01 through the wiregate gateway's own authoritative server (docs/acme-dns.md)."""

    def __init__(self, link: GatewayLink) -> None:
        self.link = link

    async def publish(self, domain: str, values: Sequence[str]) -> None:
        name = _bare(domain)
        where = hostport.format((self.link.address, self.link.port))
        try:
            answer = await gateway_request(self.link, {"op": "publish", "name": name, "values": list(values)})
        except (OSError, TimeoutError, ValueError) as exc:
            raise AcmeError(f"{name}: DNS-01 via the gateway: cannot reach its publish channel at {where}: "
                            f"{exc or type(exc).__name__}") from None
        if not answer.get("ok"):
            raise AcmeError(f"{name}: DNS-01 via the gateway: refused: {str(answer.get('error'))[:300]}")
        log.info("%s: DNS-01 record published by the gateway as %s", name, answer.get("fqdn"))

    async def clear(self, domain: str) -> None:
        name = _bare(domain)
        try:
            await gateway_request(self.link, {"op": "clear", "name": name})
        except (OSError, TimeoutError, ValueError) as exc:  # the gateway lets the record expire anyway
            log.warning("%s: DNS-01 via the gateway: clearing the record failed (%s); it expires by itself", name,
                        exc or type(exc).__name__)


# -- RFC 2136 ---------------------------------------------------------------------------------------------------
def read_tsig_secret(path: Path) -> bytes:
    """The TSIG secret (base64 text) of a 0600 file; ConfigError naming the file (never the content)."""
    from wiregate.config.model import check_secret_mode
    from wiregate.errors import ConfigError

    check_secret_mode(path, "acme.rfc2136.tsig_secret_file")
    with open(path, "rb") as f:
        data = f.read(MAX_SECRET_FILE + 1)
    if len(data) > MAX_SECRET_FILE:
        raise ConfigError(f"acme.rfc2136.tsig_secret_file: {str(path)!r}: too large for a TSIG secret")
    text = data.decode("ascii", "replace").strip()
    if "secret" in text:  # a BIND key block (`tsig-keygen` output): take the quoted secret
        m = re.search(r'\bsecret\s+"([^"]*)"', text)
        text = m.group(1) if m else ""
    try:
        secret = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        secret = b""
    if len(secret) < 16:
        raise ConfigError(f"acme.rfc2136.tsig_secret_file: {str(path)!r}: does not hold a base64 TSIG secret "
                          "(at least 16 bytes, e.g. from `tsig-keygen`)")
    return secret


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float, interval: float,
                     clock: Callable[[], float] = time.monotonic,
                     sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> bool:
    """Poll `check` until it returns True (True) or `timeout` seconds passed (False); time and sleep injected."""
    deadline = clock() + timeout
    while True:
        if await check():
            return True
        if clock() + interval > deadline:
            return False
        await sleep(interval)


class Rfc2136Publisher:
    """DNS-01 by RFC 2136 dynamic update with a TSIG key, waiting for the zone's authoritative servers."""

    def __init__(self, server: tuple[str, int], zone: str, key_name: str, algorithm: str, secret: bytes, *,
                 ttl: int = TXT_TTL, timeout: float = PROPAGATION_TIMEOUT, interval: float = POLL_INTERVAL,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        if algorithm not in TSIG_ALGORITHMS:
            raise AcmeError(f"acme.rfc2136.tsig_algorithm: {algorithm!r}: must be one of "
                            f"{', '.join(TSIG_ALGORITHMS)}")
        self.server, self.zone, self.ttl = server, dns.name.from_text(zone), ttl
        self.timeout, self.interval, self.clock, self.sleep = timeout, interval, clock, sleep
        self._key = dns.tsig.Key(dns.name.from_text(key_name), secret, TSIG_ALGORITHMS[algorithm])

    def __repr__(self) -> str:  # never the secret
        return f"Rfc2136Publisher(server={self.server}, zone={self.zone}, key={self._key.name})"

    def _name(self, domain: str) -> dns.name.Name:
        name = dns.name.from_text(f"_acme-challenge.{_bare(domain)}")
        if not name.is_subdomain(self.zone):
            raise AcmeError(f"{_bare(domain)}: DNS-01 via RFC 2136: _acme-challenge.{_bare(domain)} is not in the "
                            f"zone {self.zone.to_text(omit_final_dot=True)} (acme.rfc2136.zone)")
        return name

    async def _server_ip(self) -> str:
        host = self.server[0]
        try:
            return str(ipaddress.ip_address(host))
        except ValueError:
            infos = await asyncio.get_running_loop().getaddrinfo(host, self.server[1], type=socket.SOCK_STREAM)
            return str(infos[0][4][0])

    async def _update(self, domain: str, upd: dns.update.UpdateMessage, what: str) -> None:
        server = f"{self.server[0]}:{self.server[1]}"
        try:
            resp = await dns.asyncquery.tcp(upd, await self._server_ip(), timeout=UPDATE_TIMEOUT, port=self.server[1])
        except (dns.tsig.PeerBadKey, dns.tsig.PeerBadSignature) as exc:
            raise AcmeError(f"{domain}: DNS-01 {what} at {server}: TSIG key refused (BADKEY/BADSIG): check "
                            f"acme.rfc2136.tsig_key_name and the secret in tsig_secret_file "
                            f"({type(exc).__name__})") from None
        except dns.tsig.PeerError as exc:
            raise AcmeError(f"{domain}: DNS-01 {what} at {server}: TSIG refused ({type(exc).__name__}; "
                            "is the clock right?)") from None
        except (OSError, dns.exception.DNSException, EOFError) as exc:
            raise AcmeError(f"{domain}: DNS-01 {what} at {server}: {type(exc).__name__}: {exc}") from None
        rcode = resp.rcode()
        if rcode != dns.rcode.NOERROR:
            raise AcmeError(f"{domain}: DNS-01 {what} at {server}: the server answered {dns.rcode.to_text(rcode)} "
                            f"(may key {self._key.name} update zone {self.zone}?)")

    async def publish(self, domain: str, values: Sequence[str]) -> None:
        name, bare = self._name(domain), _bare(domain)
        upd = dns.update.UpdateMessage(self.zone, keyring=self._key)
        upd.replace(name, self.ttl, dns.rdatatype.TXT, *[f'"{v}"' for v in values])
        await self._update(bare, upd, "update")
        servers = await self._nameservers()
        want = set(values)
        pending = dict.fromkeys(servers)

        async def check() -> bool:
            for ip in list(pending):
                if await self._answers(ip, name) == want:
                    del pending[ip]
            return not pending

        if not await wait_until(check, self.timeout, self.interval, self.clock, self.sleep):
            raise AcmeError(f"{bare}: DNS-01 record published but not visible after {self.timeout:.0f}s on the "
                            f"zone's authoritative server(s) {', '.join(pending)}")
        log.info("%s: DNS-01 record visible on %d authoritative server(s)", bare, len(servers))

    async def clear(self, domain: str) -> None:
        bare = _bare(domain)
        try:
            upd = dns.update.UpdateMessage(self.zone, keyring=self._key)
            upd.delete(self._name(domain), dns.rdatatype.TXT)
            await self._update(bare, upd, "cleanup")
        except AcmeError as exc:
            log.warning("%s", exc)

    async def _query(self, ip: str, name: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> dns.message.Message | None:
        q = dns.message.make_query(name, rdtype)
        q.flags &= ~dns.flags.RD  # ask the server what it holds itself
        # a dead server must not stretch publish() much past its deadline: a quarter of it per query at most
        timeout = min(UPDATE_TIMEOUT / 2, max(1.0, self.timeout / 4))
        port = self.server[1] if ip == await self._server_ip() else 53
        try:
            resp, _ = await dns.asyncquery.udp_with_fallback(q, ip, timeout=timeout, port=port)
        except (OSError, dns.exception.DNSException, EOFError):
            return None
        return resp

    async def _answers(self, ip: str, name: dns.name.Name) -> set[str]:
        resp = await self._query(ip, name, dns.rdatatype.TXT)
        if resp is None or resp.rcode() != dns.rcode.NOERROR:
            return set()
        return {b"".join(rd.strings).decode("ascii", "replace") for rrset in resp.answer
                if rrset.rdtype == dns.rdatatype.TXT and rrset.name == name for rd in rrset}

    async def _nameservers(self) -> list[str]:
        """The addresses of the zone's authoritative servers: its NS set as the primary tells it, each name
        resolved (from the primary's glue, else the system resolver); the primary alone when that finds none."""
        primary = await self._server_ip()
        resp = await self._query(primary, self.zone, dns.rdatatype.NS)
        targets = [rd.target for rrset in (resp.answer if resp else []) if rrset.rdtype == dns.rdatatype.NS
                   for rd in rrset][:MAX_NAMESERVERS]
        ips: list[str] = []
        for target in targets:
            found: list[str] = []
            for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                r = await self._query(primary, target, rdtype)
                found += [rd.address for rrset in (r.answer if r else []) if rrset.rdtype == rdtype for rd in rrset]
            if not found:
                try:
                    infos = await asyncio.get_running_loop().getaddrinfo(target.to_text(omit_final_dot=True), 53,
                                                                         type=socket.SOCK_DGRAM)
                    found = [str(i[4][0]) for i in infos]
                except OSError:
                    log.warning("DNS-01: cannot resolve nameserver %s of zone %s; not waiting for it", target,
                                self.zone)
            ips += [ip for ip in found if ip not in ips]
        return ips or [primary]


def make_publisher(acme: Any, config_dir: Path, *, gateway: GatewayLink | None) -> Dns01Publisher:
    """The publisher `acme.dns_provider` names ("gateway" needs `gateway`; "rfc2136" reads `acme.rfc2136` and its
    TSIG secret file, relative to `config_dir`)."""
    provider = getattr(acme, "dns_provider", "gateway")
    if provider == "gateway":
        if gateway is None:
            raise AcmeError("acme.dns_provider: \"gateway\": this node has no gateway link (only a home may use it)")
        return GatewayPublisher(gateway)
    if provider == "rfc2136":
        r = getattr(acme, "rfc2136", None)
        if r is None:
            raise AcmeError("acme.dns_provider: \"rfc2136\": needs the [acme.rfc2136] table")
        server = r.server if isinstance(r.server, tuple) else hostport.parse(str(r.server), default_port=53,
                                                                              what="acme.rfc2136.server")
        secret = read_tsig_secret(Path(config_dir) / Path(r.tsig_secret_file))
        return Rfc2136Publisher(server, r.zone, r.tsig_key_name, r.tsig_algorithm, secret)
    raise AcmeError(f"acme.dns_provider: {provider!r}: must be \"gateway\" or \"rfc2136\"")

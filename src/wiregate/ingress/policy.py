"""The decision for one new connection, sans-I/O: trust by source, the PROXY header, sniffing, the route.

    phase = HeadPhase(rules, peer=("10.8.0.1", 40000), local=("10.8.0.2", 443), now=clock())
    event = phase.receive_data(data, now)    # None: need more; Refused; or Accepted (route + bytes to forward)
    phase.deadline                           # when handle_timer(now) must be called if nothing came

Trust follows the PROXY specification: the receiver knows from the source address whether a header comes. A
trusted peer must start with a v1 or v2 header; any other peer must not. Only the opt-in `proxy_optional` mode
(Traefik's behaviour) lets a trusted peer omit it, and then the header is detected from the first bytes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

from wiregate import hostport
from wiregate.ingress.config import Listener, Route, parse_networks
from wiregate.ingress.router import Router
from wiregate.proxyproto import Decoder, ProxyError, ProxyHeader, detect
from wiregate.sniff import ClientHello, HeadReader, HelloReader, RequestHead, SniffError, classify

# refusal reasons (the keys of status()["refused"]); the log line adds the details
UNTRUSTED_HEADER = "untrusted_header"
MISSING_HEADER = "missing_header"
BAD_HEADER = "bad_header"
HEADER_TIMEOUT = "header_timeout"
BAD_REQUEST = "bad_request"
SNIFF_TIMEOUT = "sniff_timeout"
NO_ROUTE = "no_route"
CLOSED_EARLY = "closed_early"
# not a refusal: a trusted proxy's LOCAL header, then nothing (HAProxy's check-send-proxy, the relay's health checks)
HEALTH_CHECK = "health_check"
LIMIT = "connection_limit"
RESET = "reset"
# not a refusal: an ACME HTTP-01 validation request answered by the ingress itself (RFC 8555 section 8.3)
ACME_HTTP01 = "acme_http01"
NOT_INTERNAL = "not_internal"  # an internal_only route refused a client outside its networks

Addr = tuple[str, int]


class Trust:
    """A set of trusted networks (addresses and CIDRs); membership tests IPv4-mapped IPv6 as IPv4."""

    __slots__ = ("nets", "_cache")
    CACHE_MAX = 4096  # answers kept per config; parsing an address costs ~15 us per connection otherwise

    def __init__(self, entries: tuple[str, ...], where: str = "trusted") -> None:
        self.nets = parse_networks(where, entries)
        self._cache: dict[str, bool] = {}

    def __contains__(self, host: str) -> bool:
        hit = self._cache.get(host)
        if hit is None:
            hit = self._lookup(host)
            if len(self._cache) >= self.CACHE_MAX:
                self._cache.clear()
            self._cache[host] = hit
        return hit

    def _lookup(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(hostport.unmap_host(host, drop_scope=True))
        except ValueError:
            return False
        return any(ip in n for n in self.nets)


@dataclass(frozen=True, slots=True)
class Rules:
    """What a HeadPhase needs from one listener's config, prepared once per config."""

    listener: Listener
    trust: Trust
    router: Router
    # path -> the body answering a pending ACME HTTP-01 challenge, or None (wiregate.acme.book.Book.http01)
    http01: Callable[[str], bytes | None] | None = None
    internal: dict[str, Trust] = field(default_factory=dict)  # route name -> admitted clients (internal_only)
    # True while HTTP-01 tokens are pending: a listener that routes without sniffing (default route only) then
    # reads the first bytes too, so the CA's request is seen (not for server_first listeners: they must not wait)
    http01_pending: Callable[[], bool] | None = None

    @classmethod
    def from_listener(cls, listener: Listener, http01: Callable[[str], bytes | None] | None = None,
                      http01_pending: Callable[[], bool] | None = None) -> Rules:
        internal = {r.name: Trust(r.internal, f"route {r.name!r}.internal") for r in listener.routes if r.internal}
        return cls(listener, Trust(listener.trusted, f"listener {listener.name!r}.trusted"), Router(listener),
                   http01, internal, http01_pending)

    def admit(self, ev: Accepted) -> Refused | None:
        """An internal_only route takes only clients (the real address) from its networks: None = admitted."""
        nets = self.internal.get(ev.route.name)
        if nets is None or ev.client[0] in nets:
            return None
        reply = http_error(403, "Forbidden", "internal service") if ev.kind == "http" else b""
        return Refused(NOT_INTERNAL, f"route {ev.route.name!r} is internal_only and client {ev.client[0]} is "
                                     f"outside its networks {', '.join(str(n) for n in nets.nets)}", reply)


@dataclass(frozen=True, slots=True)
class Refused:
    """The connection must be closed; `reply` (may be empty) is written first, e.g. an HTTP 404."""

    reason: str
    detail: str
    reply: bytes = b""


@dataclass(frozen=True, slots=True)
class Accepted:
    """Where the connection goes. `data` holds every byte read after the PROXY header, to forward first."""

    route: Route
    client: Addr  # the real client: the PROXY header's source, else the peer
    destination: Addr  # the address the client connected to: the header's destination, else our own
    peer: Addr
    kind: str  # "tls", "http", "other" or "unsniffed"
    data: bytes
    header: ProxyHeader | None = None
    hello: ClientHello | None = None
    request: RequestHead | None = None
    client_trusted: bool = False  # the real client is itself a trusted source (its forwarding headers are kept)
    name: str | None = field(default=None)  # the SNI or Host the route was chosen by


def http_error(status: int, reason: str, text: str) -> bytes:
    """A complete HTTP/1.1 error response that closes the connection."""
    body = (text + "\n").encode()
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode() + body


def _http_ok(body: bytes) -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n" % len(body)) + body


class HeadPhase:
    """From accept() to a routing decision. Feed bytes and the time; get None, Refused or Accepted once."""

    __slots__ = ("rules", "peer", "local", "trusted", "deadline", "_state", "_dec", "_buf", "_header",
                 "_client", "_dest", "_sniff_deadline", "done", "_reader")

    def __init__(self, rules: Rules, peer: Addr, local: Addr, now: float) -> None:
        lst = rules.listener
        self.rules = rules
        self.peer, self.local = peer, local
        self.trusted = peer[0] in rules.trust
        self.deadline = now + lst.header_timeout
        self._buf = bytearray()
        self._header: ProxyHeader | None = None
        self._client, self._dest = peer, local
        self._dec: Decoder | None = None
        self.done = False
        if self.trusted:
            self._state = "proxy" if not lst.proxy_optional else "detect"
            if not lst.proxy_optional:
                self._dec = Decoder(max_v2_length=lst.max_header_bytes)
        else:
            self._state = "detect"
        self._sniff_deadline = 0.0
        self._reader: HelloReader | HeadReader | None = None  # fed each new byte once (no re-parse per read)

    @property
    def waiting_for(self) -> str:
        """"proxy" (the header), "sniff" (the first request bytes) or "done"."""
        return "done" if self.done else ("sniff" if self._state == "sniff" else "proxy")

    def start(self, now: float) -> Accepted | Refused | None:
        """Call once after construction: a listener that needs neither a header nor sniffing decides at once
        when the listener says the service speaks first (`server_first`): accepted, or refused without a
        default route."""
        if not self.trusted and self.rules.listener.server_first and not self.rules.router.needs_sniff:
            return self._route_unsniffed(b"")
        return None

    def receive_data(self, data: bytes, now: float) -> Accepted | Refused | None:
        """Bytes arrived. Returns the decision once it can be made, else None (keep reading until `deadline`)."""
        if self.done:
            raise RuntimeError("HeadPhase: decision already made")
        ev = self._step(bytes(data), now)
        if ev is not None:
            self.done = True
        return ev

    def receive_eof(self, now: float) -> Refused:
        """The peer closed before a decision."""
        self.done = True
        if self._header is not None and self._header.is_local and not self._buf:
            return Refused(HEALTH_CHECK, "LOCAL header, then closed (a proxy's health check)")
        what = "the PROXY header" if self._state != "sniff" else "a routable request"
        return Refused(CLOSED_EARLY, f"closed after {len(self._buf)} bytes, before {what}")

    def receive_reset(self, detail: str, now: float) -> Refused:
        """The connection failed (reset) before a decision: a proxy's check that sent its LOCAL header and then
        reset (HAProxy ends its checks with a reset) is a health check, anything else a refusal."""
        self.done = True
        if self._header is not None and self._header.is_local and not self._buf:
            return Refused(HEALTH_CHECK, "LOCAL header, then reset (a proxy's health check)")
        return Refused(RESET, f"{detail} before a decision")

    def handle_timer(self, now: float) -> Refused | None:
        """The deadline passed: refuse (header or sniff timeout); None if it has not passed yet."""
        if self.done or now < self.deadline:
            return None
        self.done = True
        lst = self.rules.listener
        if self._state == "local":
            return Refused(HEADER_TIMEOUT, f"LOCAL header, then nothing within {lst.header_timeout:g}s")
        if self._state == "sniff":
            return Refused(SNIFF_TIMEOUT, f"no routable request within {lst.sniff_timeout:g}s "
                                          f"({len(self._buf)} bytes came)")
        return Refused(HEADER_TIMEOUT, f"no complete PROXY header within {lst.header_timeout:g}s "
                                       f"({len(self._buf)} bytes came)")

    # -- steps --------------------------------------------------------------------------------------------------

    def _step(self, data: bytes, now: float) -> Accepted | Refused | None:
        lst = self.rules.listener
        if self._state == "detect":
            self._buf += data
            kind = detect(self._buf)
            if kind is None:
                return None
            if kind == "none":
                if self.trusted:  # proxy_optional: a trusted peer without a header is taken as the client
                    pass
                data, self._buf = bytes(self._buf), bytearray()
                return self._after_header(data, now)
            if not self.trusted:
                return Refused(UNTRUSTED_HEADER, f"PROXY {kind} header from {self.peer[0]}, which is not a "
                                                 "trusted source (a header is only taken from trusted sources)")
            self._dec = Decoder(max_v2_length=lst.max_header_bytes)
            data, self._buf = bytes(self._buf), bytearray()
            self._state = "proxy"
        if self._state == "proxy":
            assert self._dec is not None
            self._buf += data  # kept only for the byte count in messages
            try:
                header = self._dec.feed(data)
            except ProxyError as exc:
                if detect(bytes(self._buf[:16])) == "none":
                    return Refused(MISSING_HEADER, f"trusted source {self.peer[0]} sent no PROXY header "
                                                   f"(first bytes {bytes(self._buf[:16])!r})")
                return Refused(BAD_HEADER, str(exc))
            if header is None:
                return None
            self._buf = bytearray()
            self._header = header
            if not header.is_local and isinstance(header.source, tuple):
                self._client = header.source
                if isinstance(header.destination, tuple):
                    self._dest = header.destination
            return self._after_header(self._dec.rest, now)
        if self._state == "local":
            return self._route_unsniffed(data)
        return self._sniff(data)

    def _after_header(self, rest: bytes, now: float) -> Accepted | Refused | None:
        lst = self.rules.listener
        pending = self.rules.http01_pending
        if not self.rules.router.needs_sniff and (lst.server_first or pending is None or not pending()):
            if self._header is not None and self._header.is_local and not rest and not lst.server_first:
                # the proxy's own connection, no client behind it: a health check when it closes without a byte
                # (routed, as the proxy itself, only once it sends something)
                self._state = "local"
                return None
            return self._route_unsniffed(rest)
        self._state = "sniff"
        self.deadline = now + lst.sniff_timeout
        return self._sniff(rest) if rest else None

    def _accept(self, route: Route | None, kind: str, data: bytes, *, hello: ClientHello | None = None,
                request: RequestHead | None = None, name: str | None = None) -> Accepted | Refused:
        if route is None:
            detail = f"no route for {kind} {name!r} and no default route" if name else \
                f"no route for this {kind} connection and no default route"
            reply = http_error(404, "Not Found", "no such site") if kind == "http" else b""
            return Refused(NO_ROUTE, detail, reply)
        return Accepted(route, self._client, self._dest, self.peer, kind, data, self._header, hello=hello,
                        request=request, client_trusted=self._client[0] in self.rules.trust, name=name)

    def _route_unsniffed(self, rest: bytes) -> Accepted | Refused:
        return self._accept(self.rules.router.default, "unsniffed", rest)

    def _sniff(self, data: bytes) -> Accepted | Refused | None:
        lst = self.rules.listener
        router = self.rules.router
        self._buf += data
        reader = self._reader
        if reader is None:
            kind = classify(bytes(self._buf[:17]))
            if kind is None:
                return None
            if kind == "other":
                return self._accept(router.default, "other", bytes(self._buf))
            reader = self._reader = HelloReader(lst.max_sniff_bytes) if kind == "tls" \
                else HeadReader(lst.max_sniff_bytes)
            data = bytes(self._buf)
        kind = "tls" if isinstance(reader, HelloReader) else "http"
        try:
            if isinstance(reader, HelloReader):
                hello = reader.feed(data)
                if hello is None:
                    return self._too_long(self._buf, "TLS ClientHello")
                return self._accept(router.for_sni(hello.sni), "tls", bytes(self._buf), hello=hello, name=hello.sni)
            req = reader.feed(data)
            if req is None:
                return self._too_long(self._buf, "HTTP request head")
            if self.rules.http01 is not None and (body := self.rules.http01(req.path)) is not None:
                return Refused(ACME_HTTP01, f"ACME HTTP-01 challenge for {req.host!r} answered", _http_ok(body))
            route = router.for_http(req.host, req.path)
            return self._accept(route, "http", bytes(self._buf), request=req, name=req.host)
        except SniffError as exc:
            reply = http_error(400, "Bad Request", "malformed request") if kind == "http" else b""
            return Refused(BAD_REQUEST, str(exc), reply)

    def _too_long(self, buf: bytes | bytearray, what: str) -> Refused | None:
        if len(buf) > self.rules.listener.max_sniff_bytes:
            return Refused(BAD_REQUEST, f"{what} longer than {self.rules.listener.max_sniff_bytes} bytes")
        return None

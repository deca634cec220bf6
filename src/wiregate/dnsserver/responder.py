"""Sans-I/O authoritative DNS responder for the ACME challenge zone (the gateway answers DNS-01 itself).

    r = Responder(zone="acme.vps.example.net", nameserver="vps.example.net")
    out = r.respond(query_bytes, {"k3xq...": ("value1",)}, tcp=False)   # response bytes, or None = drop

It answers only for its zone: TXT for `<label>.<zone>` from the record set it is handed, SOA and NS at the apex,
NXDOMAIN for any other name in the zone, REFUSED for names outside it (never an open resolver: no recursion, RA
is never set). Parsing and rendering are dnspython's (`dns.message`); nothing here writes DNS wire format by hand.
Hostile input never raises: a packet that does not parse, is a response, or is too large is dropped and counted.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.NS
import dns.rdtypes.ANY.SOA
import dns.rdtypes.ANY.TXT
import dns.rrset

MAX_QUERY_BYTES = 1024  # a query is one question (+ EDNS); anything larger is not a query for us
UDP_PAYLOAD_MIN = 512  # RFC 1035 section 4.2.1: the size every UDP answer may take without EDNS
UDP_PAYLOAD_MAX = 1232  # the DNS Flag Day 2020 EDNS buffer size: no IP fragmentation on common paths
TXT_TTL = 1  # as acme-dns: a value published for a renewal must not be shadowed by a cached older one
APEX_TTL = 3600  # SOA / NS records change only with the config
NEGATIVE_TTL = 1  # SOA minimum (RFC 2308): a lookup made before publishing is not cached as "no such name"


@dataclass(slots=True)
class Counters:
    """What the responder did, by outcome (exported in status and metrics)."""

    answered: int = 0  # NOERROR with records
    nodata: int = 0  # NOERROR, name exists, no record of that type
    nxdomain: int = 0
    refused: int = 0  # outside the zone, not class IN
    formerr: int = 0  # parsed, but not one question
    notimp: int = 0  # an opcode other than QUERY (updates, notifies...)
    truncated: int = 0  # UDP answer larger than the client's buffer: TC set, client retries on TCP
    dropped: int = 0  # did not parse, was a response, or too large
    rate_limited: int = 0  # UDP, over the per-network rate: not answered

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


RATE_PER_SECOND = 20.0  # UDP answers per second to one client network (a validating CA asks a few times)
RATE_BURST = 40.0
RATE_TABLE_MAX = 10000  # client networks tracked at once; the oldest entry goes first


@dataclass(slots=True)
class RateLimiter:
    """UDP response rate limit per client network (IPv4 /24, IPv6 /56), a token bucket each, as BIND's RRL keys
    by network: a spoofed-source flood cannot turn the zone's answers into a reflector. TCP is not limited (its
    source cannot be spoofed)."""

    rate: float = RATE_PER_SECOND
    burst: float = RATE_BURST
    max_entries: int = RATE_TABLE_MAX
    _buckets: dict[bytes, tuple[float, float]] = field(default_factory=dict)  # network -> (tokens, last time)

    @staticmethod
    def network(source: str) -> bytes:
        packed = ipaddress.ip_address(source.split("%")[0]).packed
        return packed[:3] if len(packed) == 4 else packed[:7]

    def allow(self, source: str, now: float) -> bool:
        try:
            key = self.network(source)
        except ValueError:
            return False
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate)
        if len(self._buckets) >= self.max_entries:
            del self._buckets[next(iter(self._buckets))]  # dicts keep insertion order: the least recent goes
        ok = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if ok else tokens, now)
        return ok


@dataclass(slots=True)
class Responder:
    """Answers queries for one zone from a record set {label: TXT values} given with each query."""

    zone: str
    nameserver: str
    hostmaster: str = ""  # SOA RNAME; default hostmaster.<zone>
    serial: int = 1
    counters: Counters = field(default_factory=Counters)
    limiter: RateLimiter = field(default_factory=RateLimiter)
    _zone: dns.name.Name = field(init=False)
    _ns: dns.name.Name = field(init=False)
    _soa: dns.rrset.RRset = field(init=False)
    _nsset: dns.rrset.RRset = field(init=False)

    def __post_init__(self) -> None:
        self._zone = dns.name.from_text(self.zone)
        self._ns = dns.name.from_text(self.nameserver)
        rname = dns.name.from_text(self.hostmaster) if self.hostmaster else dns.name.Name(("hostmaster",)).concatenate(
            self._zone)
        soa = dns.rdtypes.ANY.SOA.SOA(dns.rdataclass.IN, dns.rdatatype.SOA, self._ns, rname, self.serial & 0xFFFFFFFF,
                                      3600, 600, 86400, NEGATIVE_TTL)
        self._soa = dns.rrset.from_rdata(self._zone, APEX_TTL, soa)
        self._nsset = dns.rrset.from_rdata(
            self._zone, APEX_TTL, dns.rdtypes.ANY.NS.NS(dns.rdataclass.IN, dns.rdatatype.NS, self._ns))

    def respond(self, wire: bytes, records: Mapping[str, Sequence[str]], *, tcp: bool = False,
                source: str | None = None, now: float = 0.0) -> bytes | None:
        """The response to one query message, or None to send nothing (the packet was dropped and counted).
        `source` (the client address) and `now` (seconds, any epoch) enable the UDP rate limit."""
        if not tcp and source is not None and not self.limiter.allow(source, now):
            self.counters.rate_limited += 1
            return None
        if len(wire) > MAX_QUERY_BYTES:
            self.counters.dropped += 1
            return None
        try:
            query = dns.message.from_wire(wire)
        except Exception:  # noqa: BLE001 - any parse failure of hostile bytes is a drop, never a crash
            self.counters.dropped += 1
            return None
        if query.flags & dns.flags.QR:  # a response sent to us: answering could loop with another server
            self.counters.dropped += 1
            return None
        try:
            response = dns.message.make_response(query, recursion_available=False, our_payload=UDP_PAYLOAD_MAX)
            response.flags &= ~dns.flags.RA
            self._decide(query, response, records)
            return self._render(query, response, tcp)
        except Exception:  # noqa: BLE001 - a query dnspython parses but cannot answer: drop it, never crash
            self.counters.dropped += 1
            return None

    # -- the decision ------------------------------------------------------------------------------------------
    def _decide(self, query: dns.message.Message, response: dns.message.Message,
                records: Mapping[str, Sequence[str]]) -> None:
        if query.edns > 0:  # RFC 6891 section 6.1.3: we speak EDNS version 0 only
            response.set_rcode(dns.rcode.BADVERS)
            self.counters.formerr += 1
        elif query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
            self.counters.notimp += 1
        elif len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            self.counters.formerr += 1
        else:
            self._fill(query.question[0], response, records)

    def _render(self, query: dns.message.Message, response: dns.message.Message, tcp: bool) -> bytes:
        max_size = 65535 if tcp else max(UDP_PAYLOAD_MIN, min(query.payload if query.edns >= 0 else 0,
                                                              UDP_PAYLOAD_MAX))
        try:
            return response.to_wire(max_size=max_size)
        except dns.exception.TooBig:
            pass
        # RFC 2181 section 9: too big for this UDP client; the TC bit sends it to TCP
        self.counters.truncated += 1
        for section in (response.answer, response.authority, response.additional):
            section.clear()
        response.flags |= dns.flags.TC
        return response.to_wire(max_size=max_size)

    def _fill(self, q: dns.rrset.RRset, response: dns.message.Message, records: Mapping[str, Sequence[str]]) -> None:
        qname, qtype = q.name, q.rdtype
        if q.rdclass != dns.rdataclass.IN or not qname.is_subdomain(self._zone):
            response.set_rcode(dns.rcode.REFUSED)  # not ours: no recursion, no referral upward
            self.counters.refused += 1
            return
        response.flags |= dns.flags.AA
        if qname == self._zone:
            if qtype in (dns.rdatatype.SOA, dns.rdatatype.ANY):
                response.answer.append(self._soa)
            if qtype in (dns.rdatatype.NS, dns.rdatatype.ANY):
                response.answer.append(self._nsset)
            self._count_or_nodata(response)
            return
        values = None
        if len(qname) == len(self._zone) + 1:
            label = qname.labels[0].decode("ascii", "replace").lower()
            values = records.get(label)
        if not values:
            response.set_rcode(dns.rcode.NXDOMAIN)
            response.authority.append(self._soa)
            self.counters.nxdomain += 1
            return
        if qtype in (dns.rdatatype.TXT, dns.rdatatype.ANY):
            rrset = dns.rrset.RRset(qname, dns.rdataclass.IN, dns.rdatatype.TXT)
            rrset.update_ttl(TXT_TTL)
            for v in values:
                rrset.add(dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, [v.encode("ascii")]))
            response.answer.append(rrset)
        self._count_or_nodata(response)

    def _count_or_nodata(self, response: dns.message.Message) -> None:
        if response.answer:
            self.counters.answered += 1
        else:  # RFC 2308 section 2.2: NODATA carries the SOA for negative caching
            response.authority.append(self._soa)
            self.counters.nodata += 1

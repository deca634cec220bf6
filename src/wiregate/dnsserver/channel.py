"""The home -> gateway publish channel for gateway-answered DNS-01, sans-I/O: labels, name policy, records, codec.

Transport (the asyncio adapter is `wiregate.dnsserver.server.PublishServer`): TCP on the gateway's tunnel address,
port PUBLISH_PORT (51818), bound to the tunnel interface. One request per connection: one line of JSON (at most
MAX_LINE bytes, ended by "\\n"), answered by one line of JSON, then the gateway closes.

    {"op": "publish", "name": "example.org", "values": ["<43 chars base64url>", ...]}
    {"op": "clear", "name": "example.org"}
    {"op": "info"}                                 -> zone, nameserver and this site's names with their records
    answer: {"ok": true, ...} or {"ok": false, "error": "why"}

Authentication is the tunnel's: WireGuard admits a packet from a site only with that site's tunnel address as its
source (AllowedIPs), and the listener is bound to the tunnel device, so the source address names the site. The
gateway publishes only for names in that site's `acme_names` and only values shaped like a DNS-01 digest.
A name's label is base32(SHA-256("wiregate-acme-dns" || site public key || name)) truncated to LABEL_CHARS: stable
across restarts (the user's CNAME points at it once), distinct per site and name, and a site can only write the
labels derived from its own key, because the gateway derives them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

PUBLISH_PORT = 51818  # TCP, on the gateway's tunnel address (the tunnel probe is UDP 51819)
MAX_LINE = 4096  # bytes of one request or answer line
LABEL_CHARS = 32  # 160 bits of base32: no collision between sites or names in practice
RECORD_TTL = 1800.0  # seconds a published record lives unless cleared (an ACME validation takes seconds)
MAX_NAMES_PER_SITE = 16  # names with published values at once, per site
MAX_VALUES_PER_NAME = 4  # e.g. example.org and *.example.org in one order, plus a retry in flight
_DIGEST = re.compile(r"[A-Za-z0-9_-]{43}\Z")  # base64url(SHA-256(key authorization)), RFC 8555 section 8.4
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(\.{_LABEL})+\Z")


def normalize(name: str) -> str:
    """A host name as compared here: lower case, no trailing dot."""
    return name.strip().lower().rstrip(".")


def challenge_label(site_public_key: str, name: str) -> str:
    """The label under the challenge zone that `_acme-challenge.<name>` is a CNAME to, for one site."""
    digest = hashlib.sha256(b"wiregate-acme-dns\0" + site_public_key.encode() + b"\0" +
                            normalize(name).removeprefix("*.").encode()).digest()
    return base64.b32encode(digest).decode("ascii").lower()[:LABEL_CHARS]


def allowed(name: str, acme_names: Iterable[str]) -> bool:
    """May a site with `acme_names` publish `_acme-challenge.<name>`? `name` as the ACME client gives it, without a
    leading '*.'. An entry `example.org` allows exactly that name; `*.example.org` allows `example.org` (where the
    wildcard's challenge lives) and every name exactly one label below it (what the wildcard certificate covers)."""
    n = normalize(name)
    if not _HOST.match(n):
        return False
    for entry in acme_names:
        e = normalize(entry)
        if e == n:
            return True
        if e.startswith("*."):
            base = e[2:]
            if n == base or (n.endswith("." + base) and "." not in n[: -len(base) - 1]):
                return True
    return False


def challenge_names(acme_names: Iterable[str]) -> tuple[str, ...]:
    """The names whose `_acme-challenge` CNAME the user adds for `acme_names` (wildcards stripped, deduplicated)."""
    out: list[str] = []
    for entry in acme_names:
        n = normalize(entry).removeprefix("*.")
        if n not in out:
            out.append(n)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class SiteGrant:
    """What one site may publish: its tunnel address identifies it, its key derives its labels."""

    name: str
    address: str
    public_key: str
    acme_names: tuple[str, ...]


@dataclass(slots=True)
class _Entry:
    site: str
    name: str
    values: tuple[str, ...]
    expires: float


class RefusedError(Exception):
    """A request the gateway does not carry out; the message is sent back to the site."""


@dataclass(slots=True)
class ChallengeStore:
    """Published TXT values by label, each with an expiry; bounded per site."""

    ttl: float = RECORD_TTL
    max_names_per_site: int = MAX_NAMES_PER_SITE
    _entries: dict[str, _Entry] = field(default_factory=dict)

    def put(self, site: str, label: str, name: str, values: tuple[str, ...], now: float) -> None:
        self.expire(now)
        if label not in self._entries and sum(e.site == site for e in self._entries.values()) >= \
                self.max_names_per_site:
            raise RefusedError(f"site {site} already has {self.max_names_per_site} names published; clear some "
                               f"or wait {self.ttl:.0f}s for them to expire")
        self._entries[label] = _Entry(site, name, values, now + self.ttl)

    def remove(self, label: str) -> bool:
        return self._entries.pop(label, None) is not None

    def expire(self, now: float) -> int:
        gone = [k for k, e in self._entries.items() if e.expires <= now]
        for k in gone:
            del self._entries[k]
        return len(gone)

    def records(self, now: float) -> dict[str, tuple[str, ...]]:
        """{label: TXT values} alive at `now` (what the DNS responder serves)."""
        return {k: e.values for k, e in self._entries.items() if e.expires > now}

    def forget_sites(self, keep: Iterable[str]) -> None:
        """Drop the records of sites no longer configured (after a reload)."""
        keep = set(keep)
        for k in [k for k, e in self._entries.items() if e.site not in keep]:
            del self._entries[k]

    def status(self, now: float) -> list[dict[str, object]]:
        return [{"site": e.site, "name": e.name, "label": k, "values": len(e.values),
                 "expires_in": round(e.expires - now, 1)} for k, e in sorted(self._entries.items()) if e.expires > now]


@dataclass(slots=True)
class PublishHandler:
    """Decides one publish-channel request from a tunnel source address: pure, fed bytes and the time."""

    zone: str
    nameserver: str
    sites: Mapping[str, SiteGrant]  # by tunnel address
    store: ChallengeStore = field(default_factory=ChallengeStore)
    refusals: list[tuple[str, str, str]] = field(default_factory=list)  # (site, name, why): the adapter logs them
    counts: dict[str, int] = field(default_factory=lambda: {"published": 0, "cleared": 0, "refused": 0,
                                                             "bad_request": 0})

    def handle(self, source: str, line: bytes, now: float) -> bytes:
        """The answer line (JSON + "\\n") to one request line from tunnel address `source`."""
        try:
            answer = self._handle(source, line, now)
        except RefusedError as exc:
            answer = {"ok": False, "error": str(exc)}
        return json.dumps(answer, sort_keys=True).encode() + b"\n"

    def _handle(self, source: str, line: bytes, now: float) -> dict[str, object]:
        site = self.sites.get(source)
        if site is None:  # the adapter admits only sites' addresses; this is the second lock
            self.counts["refused"] += 1
            raise RefusedError(f"{source} is not the tunnel address of a site of this gateway")
        req = self._parse(line)
        op = req.get("op")
        if op == "info":
            return {"ok": True, "site": site.name, "zone": self.zone, "nameserver": self.nameserver,
                    "acme_names": list(site.acme_names), "records": records_for(site, self.zone)}
        name = req.get("name")
        if not isinstance(name, str) or not name or len(name) > 255:
            self.counts["bad_request"] += 1
            raise RefusedError('"name" must be the host name to publish for (no leading "*.")')
        name = normalize(name)
        if op == "clear":
            if allowed(name, site.acme_names):
                self.store.remove(challenge_label(site.public_key, name))
                self.counts["cleared"] += 1
            return {"ok": True, "name": name}
        if op != "publish":
            self.counts["bad_request"] += 1
            raise RefusedError(f'"op" must be "publish", "clear" or "info", not {str(op)[:20]!r}')
        values = req.get("values")
        if not isinstance(values, list) or not 1 <= len(values) <= MAX_VALUES_PER_NAME or \
                not all(isinstance(v, str) and _DIGEST.match(v) for v in values):
            self.counts["bad_request"] += 1
            raise RefusedError(f"{name}: \"values\" must be 1..{MAX_VALUES_PER_NAME} DNS-01 digests "
                               "(43 characters of base64url each)")
        if not allowed(name, site.acme_names):
            self.counts["refused"] += 1
            why = f"not in the acme_names of site {site.name} on the gateway"
            self.refusals.append((site.name, name, why))
            raise RefusedError(f"{name}: {why}")
        label = challenge_label(site.public_key, name)
        try:
            self.store.put(site.name, label, name, tuple(dict.fromkeys(values)), now)
        except RefusedError as exc:
            self.counts["refused"] += 1
            self.refusals.append((site.name, name, str(exc)))
            raise
        self.counts["published"] += 1
        return {"ok": True, "name": name, "fqdn": f"{label}.{normalize(self.zone)}", "ttl": self.store.ttl}

    def oversized(self) -> bytes:
        """The answer to a request line that did not end within MAX_LINE bytes."""
        self.counts["bad_request"] += 1
        return json.dumps({"ok": False, "error": f"request longer than {MAX_LINE} bytes"}).encode() + b"\n"

    def _parse(self, line: bytes) -> dict[str, object]:
        if len(line) > MAX_LINE:
            self.counts["bad_request"] += 1
            raise RefusedError(f"request longer than {MAX_LINE} bytes")
        try:
            req = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            self.counts["bad_request"] += 1
            raise RefusedError("request is not one line of JSON") from None
        if not isinstance(req, dict):
            self.counts["bad_request"] += 1
            raise RefusedError("request must be a JSON object")
        return req

    def take_refusals(self) -> list[tuple[str, str, str]]:
        out, self.refusals = self.refusals, []
        return out


def records_for(site: SiteGrant, zone: str) -> list[dict[str, str]]:
    """The CNAME records the user adds at their DNS provider for one site (one per challenge name)."""
    z = normalize(zone)
    return [{"name": f"_acme-challenge.{n}", "type": "CNAME", "target": f"{challenge_label(site.public_key, n)}.{z}"}
            for n in challenge_names(site.acme_names)]


def describe_records(zone: str, nameserver: str, cnames: Iterable[Mapping[str, str]]) -> str:
    """The zone-file lines a user adds: the NS delegation of the challenge zone, then the CNAMEs."""
    lines = ["; at the DNS provider of the challenge zone's parent (once): delegate the zone to the gateway",
             f"{normalize(zone)}.  IN NS  {normalize(nameserver)}.",
             "; at the DNS provider of each name (once per name): send its DNS-01 challenge to the gateway"]
    lines += [f"{c['name']}.  IN CNAME  {c['target']}." for c in cnames]
    return "\n".join(lines) + "\n"

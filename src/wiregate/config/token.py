"""Join tokens: what `wiregate site add` prints on the gateway and `wiregate join` reads at home.

A token carries everything the home side needs and nothing else: the gateway's endpoint and public key, the
gateway's and the site's tunnel addresses, the site's name, and the site's freshly generated **private key**
(the gateway keeps only the public key, so the token is the one copy of that secret: treat it like a key).

Text form: ``wgj1.`` + base64url (no padding) of the binary form below. The version is both in the prefix and in
the first byte; the last 4 bytes are a checksum (SHA-256, truncated) that catches a token cut short or mistyped.

    u8 version (=1) | 32 gateway public key | 32 site private key | u8 family (4|6) |
    site address (4|16) | u8 prefix length | gateway tunnel address (4|16) | u16 endpoint port (big-endian) |
    u8 n + n bytes endpoint host (UTF-8) | u8 n + n bytes site name | 4 checksum
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import struct
from dataclasses import dataclass

from wiregate import hostport
from wiregate.errors import ConfigError

TOKEN_PREFIX = "wgj1."
TOKEN_VERSION = 1
CHECKSUM_LEN = 4
MAX_TOKEN_CHARS = 1024
_CHECKSUM_DOMAIN = b"wiregate join token"


@dataclass(frozen=True, slots=True)
class JoinToken:
    gateway_public_key: bytes
    site_private_key: bytes
    site_address: str  # with prefix length: "192.0.2.2/24"
    gateway_address: str  # "192.0.2.1"
    endpoint: tuple[str, int]
    site_name: str

    def __repr__(self) -> str:  # never show the private key in logs or tracebacks
        return (f"JoinToken(site_name={self.site_name!r}, site_address={self.site_address!r}, "
                f"gateway_address={self.gateway_address!r}, endpoint={self.endpoint!r})")


def _checksum(body: bytes) -> bytes:
    return hashlib.sha256(_CHECKSUM_DOMAIN + body).digest()[:CHECKSUM_LEN]


def encode(tok: JoinToken) -> str:
    """The token's text form (see module docstring)."""
    iface = ipaddress.ip_interface(tok.site_address)
    gw = ipaddress.ip_address(tok.gateway_address)
    if gw.version != iface.version:
        raise ValueError("gateway and site tunnel addresses must be of one family")
    host = tok.endpoint[0].encode("utf-8")
    name = tok.site_name.encode("utf-8")
    if len(tok.gateway_public_key) != 32 or len(tok.site_private_key) != 32:
        raise ValueError("keys are 32 bytes")
    if len(host) > 255 or len(name) > 255:
        raise ValueError("endpoint host and site name are at most 255 bytes")
    body = (bytes([TOKEN_VERSION]) + tok.gateway_public_key + tok.site_private_key + bytes([iface.version])
            + iface.ip.packed + bytes([iface.network.prefixlen]) + gw.packed + struct.pack("!H", tok.endpoint[1])
            + bytes([len(host)]) + host + bytes([len(name)]) + name)
    return TOKEN_PREFIX + base64.urlsafe_b64encode(body + _checksum(body)).decode("ascii").rstrip("=")


def decode(text: str) -> JoinToken:
    """Parse a token; ConfigError says what is wrong (never echoing the token, which holds a private key)."""
    text = text.strip()
    if len(text) > MAX_TOKEN_CHARS:
        raise ConfigError(f"join token: too long ({len(text)} characters); expected one line from 'site add'")
    if not text.startswith(TOKEN_PREFIX):
        if text[:3] == "wgj" and "." in text[:8]:
            raise ConfigError(f"join token: version {text[3:text.index('.')]!r} is not supported "
                              f"(this wiregate reads {TOKEN_PREFIX[:-1]})")
        raise ConfigError(f"join token: does not start with {TOKEN_PREFIX!r}; copy the whole line 'site add' printed")
    b64 = text[len(TOKEN_PREFIX):]
    try:
        raw = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4))
    except (binascii.Error, ValueError):
        raise ConfigError("join token: not base64url text (damaged while copying?)") from None
    if len(raw) < 1 + 64 + 1 + CHECKSUM_LEN:
        raise ConfigError("join token: too short (cut off while copying?)")
    body, check = raw[:-CHECKSUM_LEN], raw[-CHECKSUM_LEN:]
    if not hmac.compare_digest(_checksum(body), check):
        raise ConfigError("join token: checksum mismatch (cut off or mistyped while copying?)")
    try:
        return _parse_body(body)
    except (IndexError, struct.error, UnicodeDecodeError, ValueError):
        raise ConfigError("join token: malformed contents") from None


def _parse_body(body: bytes) -> JoinToken:
    if body[0] != TOKEN_VERSION:
        raise ConfigError(f"join token: version {body[0]} is not supported")
    pos = 1
    gw_pub, site_priv = body[pos:pos + 32], body[pos + 32:pos + 64]
    pos += 64
    fam = body[pos]
    pos += 1
    if fam not in (4, 6):
        raise ValueError("family")
    n = 4 if fam == 4 else 16
    site_ip = ipaddress.ip_address(body[pos:pos + n])
    prefix = body[pos + n]
    pos += n + 1
    gw_ip = ipaddress.ip_address(body[pos:pos + n])
    pos += n
    (port,) = struct.unpack_from("!H", body, pos)
    pos += 2
    hl = body[pos]
    host = body[pos + 1:pos + 1 + hl].decode("utf-8")
    pos += 1 + hl
    nl = body[pos]
    name = body[pos + 1:pos + 1 + nl].decode("utf-8")
    pos += 1 + nl
    if pos != len(body) or len(host) != hl and not host or not name or port == 0:
        raise ValueError("length")
    if prefix > (32 if fam == 4 else 128):
        raise ValueError("prefix")
    return JoinToken(gateway_public_key=gw_pub, site_private_key=site_priv,
                     site_address=f"{site_ip}/{prefix}", gateway_address=str(gw_ip),
                     endpoint=hostport.parse((host, port), what="join token: endpoint"),
                     site_name=name)

"""What the ingress asks the ACME side on a connection: pending challenges and the live certificates.

The manager writes, the ingress reads (same event loop, plain dict lookups, nothing blocks):

    book.alpn_context(hello)     # an SSLContext answering a TLS-ALPN-01 validation, or None
    book.http01(token)           # the key authorization for /.well-known/acme-challenge/TOKEN, or None
    book.context(route_name)     # the live SSLContext of an ACME route (None: no certificate yet)

A renewed certificate is a new SSLContext put in place of the old one: new handshakes use it, connections already
open keep the SSLObject they were made with, so nothing is dropped.
"""

from __future__ import annotations

import datetime
import hashlib
import ssl
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ObjectIdentifier

ACME_TLS_ALPN = "acme-tls/1"  # RFC 8737 section 6.2
ID_PE_ACME_IDENTIFIER = ObjectIdentifier("1.3.6.1.5.5.7.1.31")  # RFC 8737 section 6.1
HTTP01_PREFIX = "/.well-known/acme-challenge/"  # RFC 8555 section 8.3
MAX_TOKEN = 256


def route_key(listener: str, route: str) -> str:
    """How the book names a route (route names are unique per listener only)."""
    return f"{listener}/{route}"


def tls_alpn_certificate(name: str, key_authorization: str) -> tuple[bytes, bytes]:
    """(cert PEM, key PEM) of the RFC 8737 challenge certificate for `name`: self-signed, the name as its only
    SAN, and the critical acmeIdentifier extension holding SHA-256(key authorization)."""
    key = ec.generate_private_key(ec.SECP256R1())
    digest = hashlib.sha256(key_authorization.encode("ascii")).digest()
    # the extension value is the DER OCTET STRING of the digest (RFC 8737 section 3: Authorization ::= OCTET
    # STRING (SIZE (32))); UnrecognizedExtension takes the DER bytes as given
    der = bytes([0x04, len(digest)]) + digest
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "acme-tls-alpn-01")])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.UnrecognizedExtension(ID_PE_ACME_IDENTIFIER, der), critical=True)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def context_from_pem(cert_pem: bytes, key_pem: bytes, alpn: list[str] | None = None) -> ssl.SSLContext:
    """A server SSLContext from PEM bytes (ssl loads only files: a private temporary file, removed at once)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with tempfile.TemporaryDirectory() as d:  # created 0700
        c, k = Path(d, "c.pem"), Path(d, "k.pem")
        c.write_bytes(cert_pem)
        k.touch(mode=0o600)
        k.write_bytes(key_pem)
        ctx.load_cert_chain(c, k)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def context_from_files(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


class Book:
    """Pending challenges and live certificate contexts (see module docstring)."""

    def __init__(self) -> None:
        self._alpn: dict[str, ssl.SSLContext] = {}
        self._http: dict[str, str] = {}
        self._routes: dict[str, ssl.SSLContext] = {}
        self.answered = {"tls-alpn-01": 0, "http-01": 0}

    # -- challenges (written by the manager) -------------------------------------------------------------------
    def add_tls_alpn(self, name: str, key_authorization: str) -> None:
        cert, key = tls_alpn_certificate(name, key_authorization)
        self._alpn[name.lower()] = context_from_pem(cert, key, [ACME_TLS_ALPN])

    def remove_tls_alpn(self, name: str) -> None:
        self._alpn.pop(name.lower(), None)

    def add_http01(self, token: str, key_authorization: str) -> None:
        self._http[token] = key_authorization

    def remove_http01(self, token: str) -> None:
        self._http.pop(token, None)

    def http01_pending(self) -> bool:
        """HTTP-01 tokens are waiting for the CA's request."""
        return bool(self._http)

    def pending_names(self) -> set[str]:
        """Names with a pending TLS-ALPN-01 authorization."""
        return set(self._alpn)

    # -- lookups (the ingress, per connection) -----------------------------------------------------------------
    def alpn_context(self, sni: str | None, alpn: tuple[str, ...]) -> ssl.SSLContext | None:
        """The challenge context for a ClientHello whose ALPN list is exactly ["acme-tls/1"] and whose SNI has a
        pending authorization; None for every other hello (normal traffic is not touched)."""
        if alpn != (ACME_TLS_ALPN,) or sni is None:
            return None
        ctx = self._alpn.get(sni)
        if ctx is not None:
            self.answered["tls-alpn-01"] += 1
        return ctx

    def http01(self, path: str) -> bytes | None:
        """The body for a request path `/.well-known/acme-challenge/TOKEN` with a pending token, else None."""
        if not path.startswith(HTTP01_PREFIX):
            return None
        token = path[len(HTTP01_PREFIX):]
        if not token or len(token) > MAX_TOKEN:
            return None
        value = self._http.get(token)
        if value is None:
            return None
        self.answered["http-01"] += 1
        return value.encode("ascii")

    # -- live certificates -------------------------------------------------------------------------------------
    def install(self, routes: tuple[str, ...], ctx: ssl.SSLContext) -> None:
        """Put a certificate live for these routes (new handshakes only; open connections keep theirs)."""
        for r in routes:
            self._routes[r] = ctx

    def context(self, route: str) -> ssl.SSLContext | None:
        return self._routes.get(route)

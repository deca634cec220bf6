"""Values produced by the decoder and consumed by the encoder."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from wiregate.errors import WiregateError
from wiregate.proxyproto.constants import (
    PP2_CLIENT_CERT_CONN,
    PP2_CLIENT_CERT_SESS,
    PP2_CLIENT_SSL,
    PP2_SUBTYPE_SSL_CIPHER,
    PP2_SUBTYPE_SSL_CN,
    PP2_SUBTYPE_SSL_KEY_ALG,
    PP2_SUBTYPE_SSL_SIG_ALG,
    PP2_SUBTYPE_SSL_VERSION,
    PP2_TYPE_ALPN,
    PP2_TYPE_AUTHORITY,
    PP2_TYPE_NETNS,
    PP2_TYPE_SSL,
    PP2_TYPE_UNIQUE_ID,
    Command,
    Family,
    Protocol,
)


class ProxyError(WiregateError, ValueError):
    """Any malformed or refused PROXY header; the message says what was wrong, e.g. "v2 header: CRC32C mismatch"."""


# (host, port) for INET/INET6, the raw path bytes (NULs stripped from the end) for UNIX
Address = tuple[str, int] | bytes


@dataclass(frozen=True, slots=True)
class TLV:
    """One type-length-value record (2.2); unknown types are kept as they came."""

    type: int
    value: bytes


@dataclass(frozen=True, slots=True)
class SSLInfo:
    """The value of a PP2_TYPE_SSL TLV: client flags, verify result, then sub-TLVs."""

    client: int
    verify: int
    tlvs: tuple[TLV, ...] = ()

    def sub(self, type_: int) -> bytes | None:
        """The value of the first sub-TLV of this type, or None."""
        return next((t.value for t in self.tlvs if t.type == type_), None)

    def _text(self, type_: int) -> str | None:
        v = self.sub(type_)
        return None if v is None else v.decode("utf-8", "replace")

    @property
    def ssl(self) -> bool:
        """The client connected over TLS (PP2_CLIENT_SSL)."""
        return bool(self.client & PP2_CLIENT_SSL)

    @property
    def cert_conn(self) -> bool:
        """The client presented a certificate on this connection (PP2_CLIENT_CERT_CONN)."""
        return bool(self.client & PP2_CLIENT_CERT_CONN)

    @property
    def cert_sess(self) -> bool:
        """The client presented a certificate at least once in this TLS session (PP2_CLIENT_CERT_SESS)."""
        return bool(self.client & PP2_CLIENT_CERT_SESS)

    @property
    def version(self) -> str | None:
        """PP2_SUBTYPE_SSL_VERSION, e.g. "TLSv1.3"."""
        return self._text(PP2_SUBTYPE_SSL_VERSION)

    @property
    def cn(self) -> str | None:
        """PP2_SUBTYPE_SSL_CN: the client certificate's Common Name."""
        return self._text(PP2_SUBTYPE_SSL_CN)

    @property
    def cipher(self) -> str | None:
        """PP2_SUBTYPE_SSL_CIPHER, e.g. "TLS_AES_256_GCM_SHA384"."""
        return self._text(PP2_SUBTYPE_SSL_CIPHER)

    @property
    def sig_alg(self) -> str | None:
        """PP2_SUBTYPE_SSL_SIG_ALG: the algorithm that signed the frontend's certificate."""
        return self._text(PP2_SUBTYPE_SSL_SIG_ALG)

    @property
    def key_alg(self) -> str | None:
        """PP2_SUBTYPE_SSL_KEY_ALG: the frontend certificate's key algorithm, e.g. "RSA2048"."""
        return self._text(PP2_SUBTYPE_SSL_KEY_ALG)


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """One decoded header. `source`/`destination` are None for LOCAL, UNSPEC and v1 UNKNOWN."""

    version: int
    command: Command
    family: Family
    protocol: Protocol
    source: Address | None = None
    destination: Address | None = None
    tlvs: tuple[TLV, ...] = field(default=())
    length: int = 0  # bytes the header took on the wire

    @property
    def is_local(self) -> bool:
        """True when the receiver must use the connection's own addresses (v2 LOCAL, v1 UNKNOWN, UNSPEC)."""
        return self.command is Command.LOCAL or self.source is None

    def tlv(self, type_: int) -> bytes | None:
        """The value of the first TLV of this type, or None."""
        return next((t.value for t in self.tlvs if t.type == type_), None)

    @property
    def alpn(self) -> bytes | None:
        """PP2_TYPE_ALPN: the negotiated application protocol, e.g. b"h2"."""
        return self.tlv(PP2_TYPE_ALPN)

    @property
    def authority(self) -> str | None:
        """PP2_TYPE_AUTHORITY: the host name the client asked for (TLS SNI), UTF-8."""
        v = self.tlv(PP2_TYPE_AUTHORITY)
        return None if v is None else v.decode("utf-8", "replace")

    @property
    def unique_id(self) -> bytes | None:
        """PP2_TYPE_UNIQUE_ID: the upstream proxy's opaque connection id (at most 128 bytes)."""
        return self.tlv(PP2_TYPE_UNIQUE_ID)

    @property
    def netns(self) -> str | None:
        """PP2_TYPE_NETNS: the name of the network namespace the connection came in on."""
        v = self.tlv(PP2_TYPE_NETNS)
        return None if v is None else v.decode("ascii", "replace")

    @property
    def ssl(self) -> SSLInfo | None:
        """PP2_TYPE_SSL parsed: client flags, verify result, sub-TLVs."""
        v = self.tlv(PP2_TYPE_SSL)
        return None if v is None else parse_ssl(v)


def parse_tlvs(buf: bytes | memoryview, where: str = "v2 header") -> tuple[TLV, ...]:
    """Split a TLV area; it must end exactly at the end of `buf`."""
    out: list[TLV] = []
    i, n = 0, len(buf)
    while i < n:
        if n - i < 3:
            raise ProxyError(f"{where}: truncated TLV at offset {i} ({n - i} bytes left, need 3)")
        t = buf[i]
        ln = (buf[i + 1] << 8) | buf[i + 2]
        if i + 3 + ln > n:
            raise ProxyError(f"{where}: TLV type 0x{t:02x} length {ln} runs past the header end")
        out.append(TLV(t, bytes(buf[i + 3 : i + 3 + ln])))
        i += 3 + ln
    return tuple(out)


def parse_ssl(value: bytes) -> SSLInfo:
    """Parse the value of a PP2_TYPE_SSL TLV (2.2.6): client (1 byte), verify (4 bytes), sub-TLVs."""
    if len(value) < 5:
        raise ProxyError(f"v2 header: SSL TLV too short ({len(value)} bytes, need 5)")
    client = value[0]
    (verify,) = struct.unpack_from("!I", value, 1)
    return SSLInfo(client, verify, parse_tlvs(value[5:], "v2 header: SSL TLV"))

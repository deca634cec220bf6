"""TLS ClientHello sniffing without terminating TLS (RFC 8446 section 4.1.2, RFC 6066 section 3, RFC 7301).

    hello = parse_client_hello(buffered_bytes)   # None: need more bytes; SniffError: not a sane ClientHello

The ClientHello may be split across several TLS records (RFC 8446 5.1 allows fragmenting handshake messages)
and those records across any number of TCP segments: the parser reassembles the handshake message from the
record payloads of everything buffered so far. It reads, never consumes: the caller forwards the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from wiregate.errors import WiregateError

# RFC 8446 5.1 / B.1 / 4.2
CONTENT_TYPE_HANDSHAKE = 22
HANDSHAKE_CLIENT_HELLO = 1
TLS_RECORD_HEADER_LEN = 5
TLS_MAX_PLAINTEXT = 1 << 14  # a TLSPlaintext record carries at most 2^14 bytes
EXT_SERVER_NAME = 0  # RFC 6066 3
EXT_ALPN = 16  # RFC 7301 3.1
EXT_ENCRYPTED_CLIENT_HELLO = 0xFE0D  # draft-ietf-tls-esni: the real SNI is inside, encrypted
SNI_HOST_NAME = 0  # RFC 6066 3: NameType host_name
# A ClientHello larger than this is refused; post-quantum key shares make ~2 KiB common, 16 KiB leaves room.
DEFAULT_MAX_HELLO = 16384


class SniffError(WiregateError, ValueError):
    """The first bytes are not a well-formed request of the sniffed protocol; the message says what was wrong."""


@dataclass(frozen=True, slots=True)
class ClientHello:
    """What routing needs from a ClientHello. `sni` is None when absent (or hidden by ECH)."""

    sni: str | None
    alpn: tuple[str, ...] = ()
    ech: bool = False  # an encrypted_client_hello extension was present (outer SNI is only the public name)
    outer_sni: str | None = None  # the SNI as sent, even when ECH hides the real one
    record_bytes: int = 0  # bytes of TLS records the ClientHello took


def looks_like_tls(prefix: bytes) -> bool | None:
    """True if `prefix` starts like a TLS handshake record, False if not, None when one more byte is needed."""
    if not prefix:
        return None
    if prefix[0] != CONTENT_TYPE_HANDSHAKE:
        return False
    if len(prefix) < 2:
        return None
    return prefix[1] == 3  # legacy_record_version major is always 3 (SSL 3.0 .. TLS 1.3)


def _handshake_bytes(buf: bytes | bytearray | memoryview, max_hello: int) -> tuple[bytes, int] | None:
    """Concatenated handshake payload of the records buffered so far, up to the ClientHello's end."""
    out = bytearray()
    i = 0
    n = len(buf)
    need: int | None = None
    while True:
        if need is not None and len(out) >= need:
            return bytes(out[:need]), i
        if n - i < TLS_RECORD_HEADER_LEN:
            return None
        ctype, major, _minor = buf[i], buf[i + 1], buf[i + 2]
        length = (buf[i + 3] << 8) | buf[i + 4]
        if ctype != CONTENT_TYPE_HANDSHAKE:
            raise SniffError(f"TLS: record type {ctype} at offset {i} before the ClientHello ended (want 22)")
        if major != 3:
            raise SniffError(f"TLS: record version major {major} at offset {i} (want 3)")
        if length == 0 or length > TLS_MAX_PLAINTEXT:
            raise SniffError(f"TLS: record length {length} at offset {i} (1..{TLS_MAX_PLAINTEXT})")
        take = min(length, n - i - TLS_RECORD_HEADER_LEN)
        out += buf[i + TLS_RECORD_HEADER_LEN : i + TLS_RECORD_HEADER_LEN + take]
        if need is None and len(out) >= 4:
            if out[0] != HANDSHAKE_CLIENT_HELLO:
                raise SniffError(f"TLS: first handshake message is type {out[0]} (want ClientHello, 1)")
            need = 4 + ((out[1] << 16) | (out[2] << 8) | out[3])
            if need > max_hello:
                raise SniffError(f"TLS: ClientHello of {need} bytes exceeds the limit of {max_hello}")
        if take < length:  # the record is not all here yet
            if need is not None and len(out) >= need:
                return bytes(out[:need]), n
            return None
        i += TLS_RECORD_HEADER_LEN + length


class _Reader:
    __slots__ = ("b", "i", "end")

    def __init__(self, b: bytes, i: int = 0, end: int | None = None) -> None:
        self.b, self.i, self.end = b, i, len(b) if end is None else end

    def take(self, k: int, what: str) -> bytes:
        if self.i + k > self.end:
            raise SniffError(f"TLS ClientHello: {what} runs past its end ({k} bytes at offset {self.i})")
        v = self.b[self.i : self.i + k]
        self.i += k
        return v

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return int.from_bytes(self.take(2, what), "big")

    def vec(self, lenbytes: int, what: str) -> _Reader:
        k = int.from_bytes(self.take(lenbytes, f"{what} length"), "big")
        start = self.i
        self.take(k, what)
        return _Reader(self.b, start, start + k)

    def take_all(self) -> bytes:
        return self.take(self.left, "value")

    @property
    def left(self) -> int:
        return self.end - self.i


def normalize_hostname(raw: bytes | str, what: str = "name") -> str:
    """A DNS name as routing compares it: ASCII, lower case, no trailing dot; SniffError when not a host name."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("ascii")
        except UnicodeDecodeError:
            raise SniffError(f"{what}: not ASCII ({raw[:40]!r})") from None
    name = raw.lower()
    if name.endswith("."):
        name = name[:-1]
    if not name or len(name) > 253:
        raise SniffError(f"{what}: empty or longer than 253 characters")
    for label in name.split("."):
        if not label or len(label) > 63 or not all(c.isalnum() or c in "-_" for c in label) or not label.isascii():
            raise SniffError(f"{what}: {name[:80]!r} is not a host name")
    return name


def parse_client_hello(buf: bytes | bytearray | memoryview, max_hello: int = DEFAULT_MAX_HELLO) -> ClientHello | None:
    """The routing facts of the ClientHello at the start of `buf`, None when more bytes are needed.

    Raises SniffError when the bytes cannot be a ClientHello (wrong record type, lengths that do not add up,
    a server_name that is not a host name, a message over `max_hello` bytes)."""
    got = _handshake_bytes(buf, max_hello)
    if got is None:
        return None
    msg, used = got
    r = _Reader(msg, 4)
    r.take(2, "legacy_version")
    r.take(32, "random")
    sid = r.vec(1, "legacy_session_id")
    if sid.left > 32:
        raise SniffError(f"TLS ClientHello: session id of {sid.left} bytes (at most 32)")
    suites = r.vec(2, "cipher_suites")
    if suites.left == 0 or suites.left % 2:
        raise SniffError(f"TLS ClientHello: cipher_suites of {suites.left} bytes (non-zero, even)")
    r.vec(1, "legacy_compression_methods")
    if r.left == 0:  # SSL 3.0 / TLS 1.0 without extensions: nothing to route by
        return ClientHello(None, record_bytes=used)
    exts = r.vec(2, "extensions")
    if r.left:
        raise SniffError(f"TLS ClientHello: {r.left} bytes after the extensions")
    sni: str | None = None
    alpn: list[str] = []
    ech = False
    seen: set[int] = set()
    while exts.left:
        etype = exts.u16("extension type")
        body = exts.vec(2, f"extension {etype}")
        if etype in seen:  # RFC 8446 4.2: at most one of each type
            raise SniffError(f"TLS ClientHello: extension {etype} appears twice")
        seen.add(etype)
        if etype == EXT_SERVER_NAME:
            names = body.vec(2, "server_name_list")
            while names.left:
                ntype = names.u8("server name type")
                name = names.vec(2, "server name").take_all()
                if ntype == SNI_HOST_NAME:
                    if sni is not None:  # RFC 6066 3: at most one name per type
                        raise SniffError("TLS ClientHello: two host_name entries in server_name")
                    sni = normalize_hostname(name, "TLS server_name")
        elif etype == EXT_ALPN:
            protos = body.vec(2, "ALPN protocol_name_list")
            while protos.left:
                alpn.append(protos.vec(1, "ALPN protocol name").take_all().decode("ascii", "replace"))
        elif etype == EXT_ENCRYPTED_CLIENT_HELLO:
            ech = True
    return ClientHello(None if ech else sni, tuple(alpn), ech, sni, used)


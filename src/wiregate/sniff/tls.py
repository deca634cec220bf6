"""TLS ClientHello sniffing without terminating TLS (RFC 8446 section 4.1.2, RFC 6066 section 3, RFC 7301).

    hello = parse_client_hello(buffered_bytes)   # None: need more bytes; SniffError: not a sane ClientHello

The ClientHello may be split across several TLS records (RFC 8446 5.1 allows fragmenting handshake messages)
and those records across any number of TCP segments: the parser reassembles the handshake message from the
record payloads of everything buffered so far. It reads, never consumes: the caller forwards the same bytes.

`HelloReader` is the incremental form for bytes that arrive a little at a time: each record header is read once
and each payload byte copied once, and a hello spread over more than `max_records` records is refused, so the CPU a
sniff costs is bounded by its byte limit however the sender cuts its records and segments (re-walking every
buffered record on each read, as a one-shot parser fed a growing buffer must, costs quadratic CPU: a 16 KiB hello
in 1-byte records took seconds).
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
# Records one ClientHello may span. Clients send one (two for a post-quantum hello over a small record limit);
# anti-censorship tools split it into a handful or a few dozen. More is a CPU attack, not a client.
DEFAULT_MAX_RECORDS = 64


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


class _Reader:
    __slots__ = ("b", "end", "i")

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


class HelloReader:
    """Incremental ClientHello reassembly: `feed(data)` with the bytes as they arrive; the ClientHello once its
    last byte came, None before, SniffError when malformed or beyond `max_hello` bytes / `max_records` records.

    Work per call is proportional to the new bytes (a record header is parsed once, a payload byte copied once);
    `examined` counts the bytes looked at, for tests."""

    __slots__ = ("_hs", "_left", "_need", "_pending", "_used", "examined", "max_hello", "max_records", "records")

    def __init__(self, max_hello: int = DEFAULT_MAX_HELLO, max_records: int = DEFAULT_MAX_RECORDS) -> None:
        self.max_hello, self.max_records = max_hello, max_records
        self.records = 0  # record headers read
        self.examined = 0
        self._pending = bytearray()  # a record header not complete yet
        self._left = 0  # payload bytes of the current record still to come
        self._hs = bytearray()  # the handshake message so far
        self._need: int | None = None  # its full length, once its 4-byte header came
        self._used = 0  # record bytes taken so far

    def feed(self, data: bytes | bytearray | memoryview) -> ClientHello | None:
        mv = memoryview(data)
        i, n = 0, len(mv)
        self.examined += n
        while i < n:
            if self._left == 0:  # a record header
                k = min(TLS_RECORD_HEADER_LEN - len(self._pending), n - i)
                self._pending += mv[i : i + k]
                i += k
                self._used += k
                if len(self._pending) < TLS_RECORD_HEADER_LEN:
                    return None
                h = self._pending
                self._pending = bytearray()
                at = self._used - TLS_RECORD_HEADER_LEN
                length = (h[3] << 8) | h[4]
                if h[0] != CONTENT_TYPE_HANDSHAKE:
                    raise SniffError(f"TLS: record type {h[0]} at offset {at} before the ClientHello ended (want 22)")
                if h[1] != 3:
                    raise SniffError(f"TLS: record version major {h[1]} at offset {at} (want 3)")
                if length == 0 or length > TLS_MAX_PLAINTEXT:
                    raise SniffError(f"TLS: record length {length} at offset {at} (1..{TLS_MAX_PLAINTEXT})")
                self.records += 1
                if self.records > self.max_records:
                    raise SniffError(f"TLS: ClientHello spread over more than {self.max_records} records")
                self._left = length
                continue
            k = min(self._left, n - i)
            if self._need is not None:
                k = min(k, self._need - len(self._hs))
            self._hs += mv[i : i + k]
            i += k
            self._used += k
            self._left -= k
            if self._need is None and len(self._hs) >= 4:
                hs = self._hs
                if hs[0] != HANDSHAKE_CLIENT_HELLO:
                    raise SniffError(f"TLS: first handshake message is type {hs[0]} (want ClientHello, 1)")
                self._need = 4 + ((hs[1] << 16) | (hs[2] << 8) | hs[3])
                if self._need > self.max_hello:
                    raise SniffError(f"TLS: ClientHello of {self._need} bytes exceeds the limit of {self.max_hello}")
            if self._need is not None and len(self._hs) >= self._need:
                # the rest of this record (if any) counts as taken, as the one-shot parser counts it
                return _parse_hello(bytes(self._hs[: self._need]), self._used + self._left)
        return None


def parse_client_hello(buf: bytes | bytearray | memoryview, max_hello: int = DEFAULT_MAX_HELLO) -> ClientHello | None:
    """The routing facts of the ClientHello at the start of `buf`, None when more bytes are needed.

    Raises SniffError when the bytes cannot be a ClientHello (wrong record type, lengths that do not add up,
    a server_name that is not a host name, a message over `max_hello` bytes)."""
    return HelloReader(max_hello).feed(buf)


def _parse_hello(msg: bytes, used: int) -> ClientHello:
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


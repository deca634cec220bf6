"""Incremental, sans-I/O PROXY protocol decoder (v1 and v2).

    dec = Decoder()
    for chunk in chunks:
        header = dec.feed(chunk)        # None until the whole header is in; ProxyError when malformed
        if header: payload = dec.rest   # the bytes after the header, untouched
"""

from __future__ import annotations

import re
import socket
import struct
from typing import Literal

import crc32c as _crc32c

from wiregate.proxyproto.constants import (
    ADDR_LEN_INET,
    ADDR_LEN_INET6,
    ADDR_LEN_UNIX,
    PP2_AUTHORITY_MAX,
    PP2_TYPE_AUTHORITY,
    PP2_TYPE_CRC32C,
    PP2_TYPE_SSL,
    PP2_TYPE_UNIQUE_ID,
    PP2_UNIQUE_ID_MAX,
    UNIX_PATH_LEN,
    V1_MAX_LENGTH,
    V1_PREFIX,
    V2_DEFAULT_MAX_LENGTH,
    V2_HEADER_LEN,
    V2_SIGNATURE,
    VALID_FAM_BYTES,
    Command,
    Family,
    Protocol,
)
from wiregate.proxyproto.header import ProxyError, ProxyHeader, parse_ssl, parse_tlvs

Kind = Literal["v1", "v2", "none"]

_PORT = re.compile(rb"(0|[1-9][0-9]{0,4})\Z")
_OCTET = rb"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(_OCTET + rb"(\." + _OCTET + rb"){3}\Z")
_IPV6_CHARS = re.compile(rb"[0-9A-Fa-f:.]{2,45}\Z")


def detect(prefix: bytes | bytearray | memoryview) -> Kind | None:
    """Which header `prefix` starts with: "v1", "v2", "none", or None when more bytes are needed to tell."""
    n = len(prefix)
    k = min(n, len(V2_SIGNATURE))
    if bytes(prefix[:k]) == V2_SIGNATURE[:k]:
        return "v2" if n >= len(V2_SIGNATURE) else None
    k = min(n, len(V1_PREFIX))
    if bytes(prefix[:k]) == V1_PREFIX[:k]:
        return "v1" if n >= len(V1_PREFIX) else None
    return "none"


class Decoder:
    """Feed bytes in any slices; returns the header once complete. Never consumes bytes past the header."""

    def __init__(self, *, max_v2_length: int = V2_DEFAULT_MAX_LENGTH, allow_v1: bool = True,
                 allow_v2: bool = True) -> None:
        if max_v2_length < V2_HEADER_LEN:
            raise ValueError("max_v2_length must be at least 16")
        self.max_v2_length = max_v2_length
        self.allow_v1 = allow_v1
        self.allow_v2 = allow_v2
        self._buf = bytearray()
        self.header: ProxyHeader | None = None
        self.rest: bytes = b""

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def want(self) -> int:
        """A lower bound on how many more bytes the header needs (reading exactly this never overshoots v2)."""
        buf = self._buf
        if self.header is not None:
            return 0
        kind = detect(buf)
        if kind == "v2" and len(buf) >= V2_HEADER_LEN:
            return V2_HEADER_LEN + struct.unpack_from("!H", buf, 14)[0] - len(buf)
        if kind == "v2" or kind is None and buf[:1] == b"\r":
            return max(V2_HEADER_LEN - len(buf), 1)
        return 1  # v1: the end is the CRLF, so bytes come one at a time at worst

    def feed(self, data: bytes | bytearray | memoryview) -> ProxyHeader | None:
        if self.header is not None:
            raise ProxyError("decoder: header already decoded")
        buf = self._buf
        buf += data
        kind = detect(buf)
        if kind is None:
            return None
        if kind == "none":
            raise ProxyError(f"no PROXY header: connection starts with {bytes(buf[:8])!r}")
        if kind == "v1":
            if not self.allow_v1:
                raise ProxyError("v1 header: not accepted here (v2 only)")
            return self._feed_v1()
        if not self.allow_v2:
            raise ProxyError("v2 header: not accepted here (v1 only)")
        return self._feed_v2()

    # v1 (spec 2.1) -------------------------------------------------------------------------------------------
    def _feed_v1(self) -> ProxyHeader | None:
        buf = self._buf
        lf = buf.find(b"\n", 0, V1_MAX_LENGTH)
        if lf < 0:
            cr = buf.find(b"\r", 0, V1_MAX_LENGTH)
            if 0 <= cr < len(buf) - 1:
                raise ProxyError(f"v1 header: CR not followed by LF at offset {cr}")
            if len(buf) >= V1_MAX_LENGTH:
                raise ProxyError(f"v1 header: no CRLF within {V1_MAX_LENGTH} bytes")
            return None
        if lf == 0 or buf[lf - 1] != 0x0D:
            raise ProxyError(f"v1 header: line ends with a bare LF at offset {lf} (CRLF required)")
        line = bytes(buf[: lf - 1])
        self.header = parse_v1_line(line, lf + 1)
        self.rest = bytes(buf[lf + 1 :])
        buf.clear()
        return self.header

    # v2 (spec 2.2) -------------------------------------------------------------------------------------------
    def _feed_v2(self) -> ProxyHeader | None:
        buf = self._buf
        if len(buf) >= 13 and buf[12] >> 4 != 2:
            raise ProxyError(f"v2 header: unsupported version {buf[12] >> 4} (byte 13 is 0x{buf[12]:02x})")
        if len(buf) >= 13 and buf[12] & 0x0F not in (0, 1):
            raise ProxyError(f"v2 header: unknown command 0x{buf[12] & 0x0F:x}")
        if len(buf) < V2_HEADER_LEN:
            return None
        (length,) = struct.unpack_from("!H", buf, 14)
        total = V2_HEADER_LEN + length
        if total > self.max_v2_length:
            raise ProxyError(f"v2 header: length {total} exceeds the limit of {self.max_v2_length} bytes")
        if len(buf) < total:
            return None
        self.header = parse_v2(bytes(buf[:total]))
        self.rest = bytes(buf[total:])
        buf.clear()
        return self.header


def parse_v1_line(line: bytes, wire_len: int) -> ProxyHeader:
    """Parse a v1 line without its CRLF."""
    if any(c < 0x20 or c > 0x7E for c in line):
        raise ProxyError("v1 header: non-printable byte in the line")
    parts = line.split(b" ")
    if len(parts) < 2 or parts[0] != b"PROXY":
        raise ProxyError("v1 header: does not start with 'PROXY '")
    proto = parts[1]
    if proto == b"UNKNOWN":  # 2.1: the receiver ignores anything up to the CRLF
        return ProxyHeader(1, Command.PROXY, Family.UNSPEC, Protocol.UNSPEC, length=wire_len)
    if proto not in (b"TCP4", b"TCP6"):
        raise ProxyError(f"v1 header: unknown protocol {proto.decode(errors='replace')!r}")
    if len(parts) != 6 or not all(parts[2:]):
        raise ProxyError("v1 header: expected 'PROXY TCPx SRC DST SPORT DPORT' with single spaces")
    fam = Family.INET if proto == b"TCP4" else Family.INET6
    src = _v1_addr(parts[2], fam, "source address")
    dst = _v1_addr(parts[3], fam, "destination address")
    sport = _v1_port(parts[4], "source port")
    dport = _v1_port(parts[5], "destination port")
    return ProxyHeader(1, Command.PROXY, fam, Protocol.STREAM, (src, sport), (dst, dport), length=wire_len)


def _v1_addr(raw: bytes, fam: Family, what: str) -> str:
    text = raw.decode("ascii")
    if fam is Family.INET:
        if not _IPV4.match(raw):
            raise ProxyError(f"v1 header: bad IPv4 {what} {text!r}")
        return text
    if not _IPV6_CHARS.match(raw):
        raise ProxyError(f"v1 header: bad IPv6 {what} {text!r}")
    try:
        return socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, text))
    except OSError:
        raise ProxyError(f"v1 header: bad IPv6 {what} {text!r}") from None


def _v1_port(raw: bytes, what: str) -> int:
    if not _PORT.match(raw) or int(raw) > 65535:
        raise ProxyError(f"v1 header: bad {what} {raw.decode('ascii')!r} (0..65535, no leading zeros)")
    return int(raw)


_ADDR_LEN = {Family.UNSPEC: 0, Family.INET: ADDR_LEN_INET, Family.INET6: ADDR_LEN_INET6, Family.UNIX: ADDR_LEN_UNIX}


def parse_v2(data: bytes) -> ProxyHeader:
    """Parse one complete v2 header (exactly 16 + len bytes)."""
    if data[:12] != V2_SIGNATURE:
        raise ProxyError("v2 header: bad signature")
    ver_cmd, fam_byte, length = data[12], data[13], struct.unpack_from("!H", data, 14)[0]
    if ver_cmd >> 4 != 2:
        raise ProxyError(f"v2 header: unsupported version {ver_cmd >> 4}")
    if ver_cmd & 0x0F not in (0, 1):
        raise ProxyError(f"v2 header: unknown command 0x{ver_cmd & 0x0F:x}")
    if len(data) != V2_HEADER_LEN + length:
        raise ProxyError(f"v2 header: {len(data) - V2_HEADER_LEN} bytes after the fixed part, length says {length}")
    command = Command(ver_cmd & 0x0F)
    if fam_byte not in VALID_FAM_BYTES:
        if command is Command.LOCAL:  # 2.2: for LOCAL the family is ignored along with the address block
            return ProxyHeader(2, command, Family.UNSPEC, Protocol.UNSPEC, length=len(data))
        raise ProxyError(f"v2 header: invalid address family/protocol byte 0x{fam_byte:02x}")
    family, protocol = Family(fam_byte >> 4), Protocol(fam_byte & 0x0F)
    alen = _ADDR_LEN[family]
    if length < alen:
        raise ProxyError(f"v2 header: length {length} is shorter than the {family.name} address block ({alen})")
    block = data[V2_HEADER_LEN : V2_HEADER_LEN + alen]
    src = dst = None
    if family is Family.INET:
        src = (socket.inet_ntop(socket.AF_INET, block[0:4]), struct.unpack_from("!H", block, 8)[0])
        dst = (socket.inet_ntop(socket.AF_INET, block[4:8]), struct.unpack_from("!H", block, 10)[0])
    elif family is Family.INET6:
        src = (socket.inet_ntop(socket.AF_INET6, block[0:16]), struct.unpack_from("!H", block, 32)[0])
        dst = (socket.inet_ntop(socket.AF_INET6, block[16:32]), struct.unpack_from("!H", block, 34)[0])
    elif family is Family.UNIX:
        src = block[:UNIX_PATH_LEN].rstrip(b"\0")
        dst = block[UNIX_PATH_LEN:].rstrip(b"\0")
    tlvs = parse_tlvs(memoryview(data)[V2_HEADER_LEN + alen :])
    _check_tlvs(data, V2_HEADER_LEN + alen, tlvs)
    if command is Command.LOCAL:
        src = dst = None
    return ProxyHeader(2, command, family, protocol, src, dst, tlvs, len(data))


def _check_tlvs(data: bytes, tlv_start: int, tlvs) -> None:
    off = tlv_start
    for t in tlvs:
        if t.type == PP2_TYPE_CRC32C:
            if len(t.value) != 4:
                raise ProxyError(f"v2 header: CRC32C TLV has length {len(t.value)}, expected 4")
            zeroed = bytearray(data)
            zeroed[off + 3 : off + 7] = b"\0\0\0\0"
            if _crc32c.crc32c(bytes(zeroed)) != struct.unpack("!I", t.value)[0]:
                raise ProxyError("v2 header: CRC32C mismatch")
        elif t.type == PP2_TYPE_UNIQUE_ID and len(t.value) > PP2_UNIQUE_ID_MAX:
            raise ProxyError(f"v2 header: UNIQUE_ID TLV is {len(t.value)} bytes, at most {PP2_UNIQUE_ID_MAX}")
        elif t.type == PP2_TYPE_AUTHORITY and len(t.value) > PP2_AUTHORITY_MAX:
            raise ProxyError(f"v2 header: AUTHORITY TLV is {len(t.value)} bytes, at most {PP2_AUTHORITY_MAX}")
        elif t.type == PP2_TYPE_SSL:
            parse_ssl(t.value)
        off += 3 + len(t.value)


def decode(data: bytes, **kw) -> tuple[ProxyHeader, bytes]:
    """One-shot decode of a buffer that holds a whole header; returns (header, bytes after it)."""
    dec = Decoder(**kw)
    header = dec.feed(data)
    if header is None:
        raise ProxyError("truncated header: more bytes needed")
    return header, dec.rest

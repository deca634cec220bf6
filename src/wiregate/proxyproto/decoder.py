"""Incremental, sans-I/O PROXY protocol decoder (v1 and v2).

    dec = Decoder()
    for chunk in chunks:
        header = dec.feed(chunk)        # None until the whole header is in; ProxyError when malformed
        if header: payload = dec.rest   # exactly the bytes after the header, untouched

The decoder never asks for, keeps, or interprets a byte past the header: v2 headers end at 16 + len, v1 lines
at the first CRLF. Bytes fed beyond that end up in `.rest` verbatim.
"""

from __future__ import annotations

import re
import struct
from socket import AF_INET6, inet_ntoa, inet_ntop, inet_pton
from typing import Literal

from crc32c import crc32c as _crc32c

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
    V1_MIN_LENGTH,
    V1_PREFIX,
    V2_DEFAULT_MAX_LENGTH,
    V2_HEADER_LEN,
    V2_SIGNATURE,
    VALID_FAM_BYTES,
    Command,
    Family,
    Protocol,
)
from wiregate.proxyproto.header import TLV, Address, ProxyError, ProxyHeader, parse_ssl, parse_tlvs

Kind = Literal["v1", "v2", "none"]
Buffer = bytes | bytearray | memoryview

_SIG_LEN = len(V2_SIGNATURE)
_V2_FIXED = struct.Struct("!BBH")  # ver_cmd, fam, len (bytes 13..16)
_INET = struct.Struct("!4s4sHH")
_INET6 = struct.Struct("!16s16sHH")
_CRC = struct.Struct("!I")

_PORT = re.compile(rb"(?:0|[1-9][0-9]{0,4})\Z")
_OCTET = rb"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(_OCTET + rb"(?:\." + _OCTET + rb"){3}\Z")
# hex groups and colons, plus dots for the embedded-IPv4 form HAProxy writes for v4-mapped addresses
_IPV6_CHARS = re.compile(rb"[0-9A-Fa-f:.]{2,45}\Z")
_V1_BAD_BYTE = re.compile(rb"[^\x20-\x7e]")

_ADDR_LEN = {Family.UNSPEC: 0, Family.INET: ADDR_LEN_INET, Family.INET6: ADDR_LEN_INET6,
             Family.UNIX: ADDR_LEN_UNIX}
# the 14th byte -> (family, protocol, address block length); only the spec's seven values are here
_FAM = {b: (Family(b >> 4), Protocol(b & 0x0F), _ADDR_LEN[Family(b >> 4)]) for b in VALID_FAM_BYTES}


def detect(prefix: Buffer) -> Kind | None:
    """Which header `prefix` starts with: "v1", "v2", "none", or None when more bytes are needed to tell."""
    n = len(prefix)
    k = n if n < _SIG_LEN else _SIG_LEN
    if prefix[:k] == V2_SIGNATURE[:k]:
        return "v2" if n >= _SIG_LEN else None
    k = n if n < len(V1_PREFIX) else len(V1_PREFIX)
    if prefix[:k] == V1_PREFIX[:k]:
        return "v1" if n >= len(V1_PREFIX) else None
    return "none"


class Decoder:
    """Feed bytes in any slices; returns the header once complete. Never consumes bytes past the header.

    `max_v2_length` caps a whole v2 header (16 + len); v1 lines are capped at 107 bytes by the spec.
    After a ProxyError the decoder stays failed: every later feed raises the same error.
    """

    __slots__ = ("max_v2_length", "allow_v1", "allow_v2", "_buf", "_error", "header", "rest")

    def __init__(self, *, max_v2_length: int = V2_DEFAULT_MAX_LENGTH, allow_v1: bool = True,
                 allow_v2: bool = True) -> None:
        if max_v2_length < V2_HEADER_LEN:
            raise ValueError(f"max_v2_length must be at least {V2_HEADER_LEN}")
        if not (allow_v1 or allow_v2):
            raise ValueError("a decoder must accept v1, v2 or both")
        self.max_v2_length = max_v2_length
        self.allow_v1 = allow_v1
        self.allow_v2 = allow_v2
        self._buf = bytearray()
        self._error: ProxyError | None = None
        self.header: ProxyHeader | None = None
        self.rest: bytes = b""

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for the rest of the header (at most the header's size)."""
        return len(self._buf)

    def want(self) -> int:
        """A lower bound on how many more bytes the header needs; reading exactly this never reads past it."""
        if self.header is not None:
            return 0
        buf = self._buf
        n = len(buf)
        if n >= V2_HEADER_LEN and buf[:_SIG_LEN] == V2_SIGNATURE:
            return V2_HEADER_LEN + ((buf[14] << 8) | buf[15]) - n
        if n == 0:  # the shortest header of an accepted version
            return V1_MIN_LENGTH if self.allow_v1 else V2_HEADER_LEN
        if buf[0] == 0x0D:  # can only be v2: its fixed part is 16 bytes
            return V2_HEADER_LEN - n
        # a v1 line is at least 15 bytes and ends at its CRLF, found one byte at a time without peeking
        return max(V1_MIN_LENGTH - n, 1)

    def feed(self, data: Buffer) -> ProxyHeader | None:
        """Add `data`; return the header once complete (then `.rest` holds what followed it), else None."""
        if self.header is not None:
            raise ProxyError("decoder: the header was already decoded; the bytes after it are in .rest")
        if self._error is not None:
            raise self._error
        if self._buf:
            self._buf += data
            buf: Buffer = self._buf
        else:
            buf = data  # fast path: the whole header usually comes in the first segment; no copy
        try:
            got = self._parse(buf)
        except ProxyError as exc:
            self._error = exc
            self._buf = bytearray()
            raise
        if got is None:
            if buf is not self._buf:
                self._buf += data
            return None
        self.header, end = got
        self.rest = bytes(buf[end:])
        self._buf = bytearray()
        return self.header

    def _parse(self, buf: Buffer) -> tuple[ProxyHeader, int] | None:
        n = len(buf)
        if n >= V2_HEADER_LEN and buf[:_SIG_LEN] == V2_SIGNATURE:  # the common case first
            if not self.allow_v2:
                raise ProxyError("v2 header: not accepted here (this listener expects v1)")
            return self._parse_v2(buf, n)
        kind = detect(buf)
        if kind is None:
            return None
        if kind == "v2":
            if not self.allow_v2:
                raise ProxyError("v2 header: not accepted here (this listener expects v1)")
            return self._parse_v2(buf, n)
        if kind == "v1":
            if not self.allow_v1:
                raise ProxyError("v1 header: not accepted here (this listener expects v2)")
            return _parse_v1(buf, n)
        raise _not_a_header(buf)

    def _parse_v2(self, buf: Buffer, n: int) -> tuple[ProxyHeader, int] | None:
        # reject as early as the bytes allow, so a bad sender is dropped before it sends the whole header
        if n >= 13:
            _check_ver_cmd(buf[12])
        if n >= 14 and buf[13] not in VALID_FAM_BYTES and buf[12] & 0x0F != Command.LOCAL:
            raise ProxyError(f"v2 header: invalid address family/protocol byte 0x{buf[13]:02x}")
        if n < V2_HEADER_LEN:
            return None
        length = (buf[14] << 8) | buf[15]
        total = V2_HEADER_LEN + length
        if total > self.max_v2_length:
            raise ProxyError(f"v2 header: length {total} exceeds the limit of {self.max_v2_length} bytes")
        _check_addr_len(buf[12], buf[13], length)
        if n < total:
            return None
        return parse_v2(buf[:total] if n > total else buf), total


def _not_a_header(buf: Buffer) -> ProxyError:
    head = bytes(buf[:_SIG_LEN])
    if head[:1] == V2_SIGNATURE[:1]:  # starts like the binary signature and no text header can
        return ProxyError(f"v2 header: bad signature {head!r}")
    if head[:5] == V1_PREFIX[:5]:
        return ProxyError(f"v1 header: does not start with 'PROXY ' ({head[:len(V1_PREFIX)]!r})")
    return ProxyError(f"no PROXY header: the connection starts with {head[:8]!r}")


def _check_ver_cmd(ver_cmd: int) -> None:
    if ver_cmd >> 4 != 2:
        raise ProxyError(f"v2 header: unsupported version {ver_cmd >> 4} (byte 13 is 0x{ver_cmd:02x}, expected 0x2_)")
    if ver_cmd & 0x0F > Command.PROXY:
        raise ProxyError(f"v2 header: unknown command 0x{ver_cmd & 0x0F:x} (byte 13 is 0x{ver_cmd:02x})")


def _check_addr_len(ver_cmd: int, fam_byte: int, length: int) -> None:
    fam = _FAM.get(fam_byte)
    if fam is not None and length < fam[2] and ver_cmd & 0x0F == Command.PROXY:
        raise ProxyError(f"v2 header: length {length} is shorter than the {fam[0].name} address block ({fam[2]})")


# v1 (spec 2.1) -----------------------------------------------------------------------------------------------

def _parse_v1(buf: Buffer, n: int) -> tuple[ProxyHeader, int] | None:
    head = bytes(buf[:V1_MAX_LENGTH])
    lf = head.find(b"\n")
    if lf < 0:
        cr = head.find(b"\r")
        if 0 <= cr < len(head) - 1:
            raise ProxyError(f"v1 header: CR not followed by LF at offset {cr} (lines end with CRLF)")
        bad = _V1_BAD_BYTE.search(head, 0, cr if cr >= 0 else len(head))
        if bad:
            raise ProxyError(f"v1 header: byte 0x{head[bad.start()]:02x} at offset {bad.start()} is not printable")
        if n >= V1_MAX_LENGTH:
            raise ProxyError(f"v1 header: no CRLF within {V1_MAX_LENGTH} bytes")
        return None
    if head[lf - 1] != 0x0D:
        raise ProxyError(f"v1 header: line ends with a bare LF at offset {lf} (CRLF required)")
    return parse_v1_line(head[: lf - 1], lf + 1), lf + 1


def parse_v1_line(line: bytes, wire_len: int | None = None) -> ProxyHeader:
    """Parse a v1 line given without its CRLF; `wire_len` is the length on the wire (default len + 2)."""
    if wire_len is None:
        wire_len = len(line) + 2
    if len(line) + 2 > V1_MAX_LENGTH:
        raise ProxyError(f"v1 header: line of {len(line) + 2} bytes is over {V1_MAX_LENGTH}")
    bad = _V1_BAD_BYTE.search(line)
    if bad:
        raise ProxyError(f"v1 header: byte 0x{line[bad.start()]:02x} at offset {bad.start()} is not printable")
    parts = line.split(b" ")
    if len(parts) < 2 or parts[0] != b"PROXY":
        raise ProxyError("v1 header: does not start with 'PROXY '")
    proto = parts[1]
    if proto == b"UNKNOWN":  # 2.1: the receiver ignores anything between UNKNOWN and the CRLF
        return ProxyHeader(1, Command.PROXY, Family.UNSPEC, Protocol.UNSPEC, length=wire_len)
    if proto == b"TCP4":
        fam = Family.INET
    elif proto == b"TCP6":
        fam = Family.INET6
    else:
        raise ProxyError(f"v1 header: unknown protocol {proto.decode('ascii')!r} (TCP4, TCP6 or UNKNOWN)")
    if len(parts) != 6 or not all(parts[2:]):
        raise ProxyError(f"v1 header: expected 'PROXY {proto.decode()} SRC DST SPORT DPORT' with single spaces, "
                         f"got {line.decode('ascii')!r}")
    src = _v1_addr(parts[2], fam, "source address")
    dst = _v1_addr(parts[3], fam, "destination address")
    sport = _v1_port(parts[4], "source port")
    dport = _v1_port(parts[5], "destination port")
    return ProxyHeader(1, Command.PROXY, fam, Protocol.STREAM, (src, sport), (dst, dport), length=wire_len)


def _v1_addr(raw: bytes, fam: Family, what: str) -> str:
    if fam is Family.INET:
        if not _IPV4.match(raw):
            raise ProxyError(f"v1 header: bad IPv4 {what} {raw.decode('ascii')!r}")
        return raw.decode("ascii")
    if _IPV6_CHARS.match(raw):
        try:
            return inet_ntop(AF_INET6, inet_pton(AF_INET6, raw.decode("ascii")))
        except OSError:
            pass
    raise ProxyError(f"v1 header: bad IPv6 {what} {raw.decode('ascii')!r}")


def _v1_port(raw: bytes, what: str) -> int:
    if not _PORT.match(raw) or int(raw) > 65535:
        raise ProxyError(f"v1 header: bad {what} {raw.decode('ascii')!r} (0..65535, no leading zeros)")
    return int(raw)


# v2 (spec 2.2) -----------------------------------------------------------------------------------------------

def parse_v2(data: Buffer) -> ProxyHeader:
    """Parse one complete v2 header: exactly 16 + len bytes, no more, no fewer."""
    n = len(data)
    if n < V2_HEADER_LEN:
        raise ProxyError(f"v2 header: truncated ({n} bytes, the fixed part alone is {V2_HEADER_LEN})")
    if data[:_SIG_LEN] != V2_SIGNATURE:
        raise ProxyError(f"v2 header: bad signature {bytes(data[:_SIG_LEN])!r}")
    ver_cmd, fam_byte, length = _V2_FIXED.unpack_from(data, _SIG_LEN)
    _check_ver_cmd(ver_cmd)
    if n != V2_HEADER_LEN + length:
        what = "truncated" if n < V2_HEADER_LEN + length else "too long"
        raise ProxyError(f"v2 header: {what}: {n - V2_HEADER_LEN} bytes follow the fixed part, len says {length}")
    command = Command.LOCAL if ver_cmd & 0x0F == 0 else Command.PROXY
    fam = _FAM.get(fam_byte)
    if fam is None:
        if command is Command.LOCAL:
            # 2.2: for LOCAL the receiver discards the protocol block "including the family which is ignored";
            # with an unknown family the block cannot be split into addresses and TLVs, so all of it is skipped
            return ProxyHeader(2, command, Family.UNSPEC, Protocol.UNSPEC, length=n)
        raise ProxyError(f"v2 header: invalid address family/protocol byte 0x{fam_byte:02x}")
    family, protocol, alen = fam
    if length < alen:
        if command is Command.LOCAL:
            return ProxyHeader(2, command, family, protocol, length=n)
        raise ProxyError(f"v2 header: length {length} is shorter than the {family.name} address block ({alen})")
    src: Address | None = None
    dst: Address | None = None
    if command is Command.PROXY:
        if family is Family.INET:
            s, d, sp, dp = _INET.unpack_from(data, V2_HEADER_LEN)
            src, dst = (inet_ntoa(s), sp), (inet_ntoa(d), dp)
        elif family is Family.INET6:
            s, d, sp, dp = _INET6.unpack_from(data, V2_HEADER_LEN)
            src, dst = (inet_ntop(AF_INET6, s), sp), (inet_ntop(AF_INET6, d), dp)
        elif family is Family.UNIX:
            # trailing NULs only: an abstract-namespace name starts with a NUL that must be kept
            src = bytes(data[V2_HEADER_LEN:V2_HEADER_LEN + UNIX_PATH_LEN]).rstrip(b"\0")
            dst = bytes(data[V2_HEADER_LEN + UNIX_PATH_LEN:V2_HEADER_LEN + ADDR_LEN_UNIX]).rstrip(b"\0")
    tlvs: tuple[TLV, ...] = ()
    if length > alen:
        tlv_start = V2_HEADER_LEN + alen
        tlvs = parse_tlvs(memoryview(data)[tlv_start:])
        _check_tlvs(data, tlv_start, tlvs)
    return ProxyHeader(2, command, family, protocol, src, dst, tlvs, n)


def _check_tlvs(data: Buffer, tlv_start: int, tlvs: tuple[TLV, ...]) -> None:
    off = tlv_start
    for t in tlvs:
        typ = t.type
        if typ == PP2_TYPE_CRC32C:
            if len(t.value) != 4:
                raise ProxyError(f"v2 header: CRC32C TLV has length {len(t.value)}, expected 4")
            # 2.2.3: the checksum covers the whole header with its own 4 bytes read as zero
            crc = _crc32c(data[off + 7:], _crc32c(b"\0\0\0\0", _crc32c(data[:off + 3])))
            if crc != _CRC.unpack(t.value)[0]:
                raise ProxyError(f"v2 header: CRC32C mismatch (header says 0x{_CRC.unpack(t.value)[0]:08x}, "
                                 f"computed 0x{crc:08x})")
        elif typ == PP2_TYPE_UNIQUE_ID and len(t.value) > PP2_UNIQUE_ID_MAX:
            raise ProxyError(f"v2 header: UNIQUE_ID TLV is {len(t.value)} bytes, at most {PP2_UNIQUE_ID_MAX}")
        elif typ == PP2_TYPE_AUTHORITY and len(t.value) > PP2_AUTHORITY_MAX:
            raise ProxyError(f"v2 header: AUTHORITY TLV is {len(t.value)} bytes, at most {PP2_AUTHORITY_MAX}")
        elif typ == PP2_TYPE_SSL:
            parse_ssl(t.value)
        off += 3 + len(t.value)


def decode(data: Buffer, *, max_v2_length: int = V2_DEFAULT_MAX_LENGTH, allow_v1: bool = True,
           allow_v2: bool = True) -> tuple[ProxyHeader, bytes]:
    """Decode a buffer that holds a whole header (e.g. one datagram); returns (header, the bytes after it).

    Keyword arguments go to Decoder. A header that is not complete in `data` is a ProxyError ("truncated").
    """
    dec = Decoder(max_v2_length=max_v2_length, allow_v1=allow_v1, allow_v2=allow_v2)
    header = dec.feed(data)
    if header is None:
        kind = detect(data)
        if kind == "v1":
            raise ProxyError(f"v1 header: truncated, no CRLF in {len(data)} bytes")
        if kind == "v2" and len(data) >= V2_HEADER_LEN:
            need = V2_HEADER_LEN + ((data[14] << 8) | data[15])
            raise ProxyError(f"v2 header: truncated ({len(data)} of {need} bytes)")
        raise ProxyError(f"truncated header: {len(data)} bytes are not enough to tell v1 from v2")
    return header, dec.rest

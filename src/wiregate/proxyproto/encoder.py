"""PROXY protocol encoders; for the same addresses they write what HAProxy's send-proxy(-v2) writes."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable

import crc32c as _crc32c

from wiregate.proxyproto.constants import (
    PP2_TYPE_CRC32C,
    UNIX_PATH_LEN,
    V2_HEADER_LEN,
    V2_SIGNATURE,
    V2_VERSION,
    Command,
    Family,
    Protocol,
)
from wiregate.proxyproto.header import TLV, Address, ProxyError, ProxyHeader


def _pack_host(host: str) -> tuple[int, bytes]:
    for fam in (socket.AF_INET, socket.AF_INET6):
        try:
            return fam, socket.inet_pton(fam, host)
        except OSError:
            continue
    raise ProxyError(f"encoder: {host!r} is not an IPv4 or IPv6 address")


def _check_port(port: int) -> int:
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise ProxyError(f"encoder: port {port!r} is out of range 0..65535")
    return port


def _inet_pair(source: tuple[str, int], destination: tuple[str, int]) -> tuple[int, bytes, bytes, int, int]:
    """Pack both addresses in one family; mixed IPv4/IPv6 becomes IPv6 with v4-mapped addresses (as HAProxy)."""
    sf, sa = _pack_host(source[0])
    df, da = _pack_host(destination[0])
    if sf != df:
        sa = b"\0" * 10 + b"\xff\xff" + sa if sf == socket.AF_INET else sa
        da = b"\0" * 10 + b"\xff\xff" + da if df == socket.AF_INET else da
        sf = socket.AF_INET6
    return sf, sa, da, _check_port(source[1]), _check_port(destination[1])


def encode_v1(source: tuple[str, int] | None, destination: tuple[str, int] | None) -> bytes:
    """A v1 line: TCP4/TCP6 for IP addresses, `PROXY UNKNOWN` when either is None."""
    if source is None or destination is None:
        return b"PROXY UNKNOWN\r\n"
    fam, sa, da, sp, dp = _inet_pair(source, destination)
    proto = "TCP4" if fam == socket.AF_INET else "TCP6"
    line = f"PROXY {proto} {socket.inet_ntop(fam, sa)} {socket.inet_ntop(fam, da)} {sp} {dp}\r\n"
    return line.encode("ascii")


def encode_tlvs(tlvs: Iterable[TLV]) -> bytes:
    out = bytearray()
    for t in tlvs:
        if not 0 <= t.type <= 255:
            raise ProxyError(f"encoder: TLV type {t.type} is not one byte")
        if len(t.value) > 0xFFFF:
            raise ProxyError(f"encoder: TLV type 0x{t.type:02x} value of {len(t.value)} bytes is over 65535")
        out += struct.pack("!BH", t.type, len(t.value)) + t.value
    return bytes(out)


def encode_v2(
    source: Address | None = None,
    destination: Address | None = None,
    *,
    command: Command = Command.PROXY,
    protocol: Protocol = Protocol.STREAM,
    tlvs: Iterable[TLV] = (),
    crc32c: bool = False,
) -> bytes:
    """A v2 header. LOCAL or missing addresses give family UNSPEC; bytes/str paths give UNIX.

    With crc32c=True a CRC32C TLV comes first (HAProxy's order) and is filled in over the whole header.
    """
    if command is Command.LOCAL or source is None or destination is None:
        fam_byte, block = 0x00, b""
    elif isinstance(source, (bytes, str)) or isinstance(destination, (bytes, str)):
        if not isinstance(source, (bytes, str)) or not isinstance(destination, (bytes, str)):
            raise ProxyError("encoder: cannot mix a UNIX path with an IP address")
        s = source.encode() if isinstance(source, str) else source
        d = destination.encode() if isinstance(destination, str) else destination
        if len(s) > UNIX_PATH_LEN or len(d) > UNIX_PATH_LEN:
            raise ProxyError(f"encoder: UNIX path longer than {UNIX_PATH_LEN} bytes")
        fam_byte = (Family.UNIX << 4) | protocol
        block = s.ljust(UNIX_PATH_LEN, b"\0") + d.ljust(UNIX_PATH_LEN, b"\0")
    else:
        fam, sa, da, sp, dp = _inet_pair(source, destination)
        family = Family.INET if fam == socket.AF_INET else Family.INET6
        fam_byte = (family << 4) | protocol
        block = sa + da + struct.pack("!HH", sp, dp)
    body = bytearray(block)
    crc_at = -1
    if crc32c:
        crc_at = V2_HEADER_LEN + len(body) + 3
        body += encode_tlvs([TLV(PP2_TYPE_CRC32C, b"\0\0\0\0")])
    body += encode_tlvs(tlvs)
    if len(body) > 0xFFFF:
        raise ProxyError(f"encoder: v2 header body of {len(body)} bytes is over 65535")
    out = bytearray(V2_SIGNATURE) + bytes([V2_VERSION | command, fam_byte]) + struct.pack("!H", len(body)) + body
    if crc_at >= 0:
        out[crc_at : crc_at + 4] = struct.pack("!I", _crc32c.crc32c(bytes(out)))
    return bytes(out)



def encode(header: ProxyHeader, *, crc32c: bool = False) -> bytes:
    """Encode a ProxyHeader in its own version (TLVs other than CRC32C are kept for v2)."""
    if header.version == 1:
        if header.is_local:
            return encode_v1(None, None)
        return encode_v1(header.source, header.destination)  # type: ignore[arg-type]
    tlvs = [t for t in header.tlvs if t.type != PP2_TYPE_CRC32C]
    had_crc = crc32c or any(t.type == PP2_TYPE_CRC32C for t in header.tlvs)
    return encode_v2(header.source, header.destination, command=header.command, protocol=header.protocol,
                     tlvs=tlvs, crc32c=had_crc)

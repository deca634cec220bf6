"""PROXY protocol encoders; for the same addresses they write byte for byte what HAProxy 2.6 writes.

HAProxy's choices that we copy (checked against a real HAProxy in tests/proxyproto/test_proxyproto_haproxy.py):
- IPv4 on both sides -> TCP4 / family INET; IPv6 on either side -> TCP6 / INET6, the IPv4 side written as an
  IPv4-mapped IPv6 address (`::ffff:a.b.c.d`);
- an address that is not IP (UNIX socket, unknown) -> `PROXY UNKNOWN\\r\\n` in v1;
- health checks in v2 -> command LOCAL, family UNSPEC, no address block (TLVs such as CRC32C still follow);
- TLV order: CRC32C first, then the others (ALPN, AUTHORITY, UNIQUE_ID, SSL, NETNS, in the order given).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from socket import AF_INET, AF_INET6, inet_ntop, inet_pton

from crc32c import crc32c as _crc32c

from wiregate.proxyproto.constants import (
    PP2_AUTHORITY_MAX,
    PP2_TYPE_AUTHORITY,
    PP2_TYPE_CRC32C,
    PP2_TYPE_SSL,
    PP2_TYPE_UNIQUE_ID,
    PP2_UNIQUE_ID_MAX,
    UNIX_PATH_LEN,
    V2_SIGNATURE,
    V2_VERSION,
    Command,
    Family,
    Protocol,
)
from wiregate.proxyproto.header import TLV, Address, ProxyError, ProxyHeader, SSLInfo, parse_ssl

_V4_MAPPED = b"\0" * 10 + b"\xff\xff"
_TLV_HEAD = struct.Struct("!BH")
_PORTS = struct.Struct("!HH")
_CRC_PLACEHOLDER = b"\x03\x00\x04\x00\x00\x00\x00"  # PP2_TYPE_CRC32C, length 4, value zero until computed
# PROXY over TCP/IPv4 with a 12-byte address block: the header of almost every relayed connection
_TCP4_HEAD = V2_SIGNATURE + bytes((V2_VERSION | Command.PROXY, (Family.INET << 4) | Protocol.STREAM)) + b"\x00\x0c"


def _tcp4(source: object, destination: object) -> bytes | None:
    """The v2 header for two IPv4 (host, port) pairs without TLVs, or None for anything else (the general path
    then builds or refuses it). Same bytes as the general path (tests/proxyproto/test_proxyproto_v2.py), ~15x
    faster: it runs once per relayed connection."""
    if type(source) is not tuple or type(destination) is not tuple or len(source) != 2 or len(destination) != 2:
        return None
    shost, sport = source
    dhost, dport = destination
    if type(shost) is not str or type(dhost) is not str or type(sport) is not int or type(dport) is not int:
        return None
    if not (0 <= sport <= 65535 and 0 <= dport <= 65535) or ":" in shost or ":" in dhost:
        return None
    try:
        return _TCP4_HEAD + inet_pton(AF_INET, shost) + inet_pton(AF_INET, dhost) + _PORTS.pack(sport, dport)
    except OSError:
        return None


def _pack_host(host: str) -> tuple[int, bytes]:
    try:
        if ":" in host:
            # a zone ("fe80::1%eth0", as getpeername() gives for link-local peers) has no place in the header;
            # HAProxy writes sin6_addr alone, so do we
            return AF_INET6, inet_pton(AF_INET6, host.partition("%")[0])
        return AF_INET, inet_pton(AF_INET, host)
    except (OSError, TypeError):
        raise ProxyError(f"encoder: {host!r} is not an IPv4 or IPv6 address") from None


def _check_port(port: object) -> int:
    if type(port) is not int or not 0 <= port <= 65535:
        raise ProxyError(f"encoder: port {port!r} is out of range 0..65535")
    return port


def _inet_pair(source: tuple[str, int], destination: tuple[str, int]) -> tuple[int, bytes, bytes, int, int]:
    """Pack both addresses in one family; mixed IPv4/IPv6 becomes IPv6 with v4-mapped addresses (as HAProxy)."""
    try:  # socket addresses as Python gives them: (host, port), or (host, port, flowinfo, scope_id) for IPv6
        shost, sport, dhost, dport = source[0], source[1], destination[0], destination[1]
    except (TypeError, IndexError, KeyError):
        raise ProxyError(f"encoder: addresses must be (host, port) pairs, got {source!r} and {destination!r}") \
            from None
    sf, sa = _pack_host(shost)
    df, da = _pack_host(dhost)
    if sf != df:
        if sf == AF_INET:
            sa = _V4_MAPPED + sa
        else:
            da = _V4_MAPPED + da
        sf = AF_INET6
    return sf, sa, da, _check_port(sport), _check_port(dport)


_PATH = (bytes, str)  # a UNIX path, as isinstance() takes it


def encode_v1(source: Address | str | None, destination: Address | str | None) -> bytes:
    """A v1 line: TCP4/TCP6 for IP addresses; `PROXY UNKNOWN\\r\\n` when either is None or a UNIX path."""
    if source is None or destination is None or isinstance(source, _PATH) or isinstance(destination, _PATH):
        return b"PROXY UNKNOWN\r\n"
    fam, sa, da, sp, dp = _inet_pair(source, destination)
    proto = "TCP4" if fam == AF_INET else "TCP6"
    return f"PROXY {proto} {inet_ntop(fam, sa)} {inet_ntop(fam, da)} {sp} {dp}\r\n".encode("ascii")


def encode_tlvs(tlvs: Iterable[TLV]) -> bytes:
    """TLV records back to back, in the order given."""
    out = bytearray()
    for t in tlvs:
        if not isinstance(t.type, int) or not 0 <= t.type <= 255:
            raise ProxyError(f"encoder: TLV type {t.type!r} is not one byte")
        if not isinstance(t.value, (bytes, bytearray, memoryview)):
            raise ProxyError(f"encoder: TLV type 0x{t.type:02x} value must be bytes, got {type(t.value).__name__}")
        if len(t.value) > 0xFFFF:
            raise ProxyError(f"encoder: TLV type 0x{t.type:02x} value of {len(t.value)} bytes is over 65535")
        out += _TLV_HEAD.pack(t.type, len(t.value))
        out += t.value
    return bytes(out)


def encode_ssl(info: SSLInfo) -> bytes:
    """The value of a PP2_TYPE_SSL TLV for `info` (use it as TLV(PP2_TYPE_SSL, encode_ssl(info)))."""
    return bytes([info.client]) + struct.pack("!I", info.verify) + encode_tlvs(info.tlvs)


def encode_v2(
    source: Address | str | None = None,
    destination: Address | str | None = None,
    *,
    command: Command = Command.PROXY,
    protocol: Protocol = Protocol.STREAM,
    tlvs: Iterable[TLV] = (),
    crc32c: bool = False,
) -> bytes:
    """A v2 header for (host, port) pairs (INET/INET6) or UNIX paths (bytes/str, up to 108 bytes).

    LOCAL, or PROXY with an address missing, gives family UNSPEC with no address block. With crc32c=True a
    CRC32C TLV comes first (HAProxy's order) and is filled in over the whole header.
    """
    if tlvs == () and not crc32c and command is Command.PROXY and protocol is Protocol.STREAM:
        fast = _tcp4(source, destination)
        if fast is not None:
            return fast
    if command not in (Command.LOCAL, Command.PROXY):
        raise ProxyError(f"encoder: unknown command {command!r}")
    if protocol not in (Protocol.STREAM, Protocol.DGRAM, Protocol.UNSPEC):
        raise ProxyError(f"encoder: unknown transport protocol {protocol!r}")
    if command == Command.LOCAL or source is None or destination is None:
        fam_byte, block = 0x00, b""
    elif protocol == Protocol.UNSPEC:
        raise ProxyError("encoder: addresses need a transport protocol (STREAM or DGRAM); UNSPEC has none")
    elif isinstance(source, _PATH) or isinstance(destination, _PATH):
        if not (isinstance(source, _PATH) and isinstance(destination, _PATH)):
            raise ProxyError("encoder: cannot mix a UNIX path with an IP address")
        s = os.fsencode(source)
        d = os.fsencode(destination)
        if len(s) > UNIX_PATH_LEN or len(d) > UNIX_PATH_LEN:
            raise ProxyError(f"encoder: UNIX path longer than {UNIX_PATH_LEN} bytes")
        fam_byte = (Family.UNIX << 4) | protocol
        block = s.ljust(UNIX_PATH_LEN, b"\0") + d.ljust(UNIX_PATH_LEN, b"\0")
    else:
        fam, sa, da, sp, dp = _inet_pair(source, destination)
        fam_byte = ((Family.INET if fam == AF_INET else Family.INET6) << 4) | protocol
        block = sa + da + _PORTS.pack(sp, dp)
    tlvs = tuple(tlvs)
    _check_tlvs(tlvs)
    rest = encode_tlvs(tlvs)
    crc_at = 16 + len(block) + 3
    length = len(block) + (len(_CRC_PLACEHOLDER) if crc32c else 0) + len(rest)
    if length > 0xFFFF:
        raise ProxyError(f"encoder: v2 header body of {length} bytes is over 65535")
    out = b"".join((V2_SIGNATURE, bytes((V2_VERSION | command, fam_byte)), length.to_bytes(2, "big"), block,
                    _CRC_PLACEHOLDER if crc32c else b"", rest))
    if crc32c:
        out = out[:crc_at] + _crc32c(out).to_bytes(4, "big") + out[crc_at + 4:]
    return out


def _check_tlvs(tlvs: tuple[TLV, ...]) -> None:
    """Refuse TLVs a receiver following the spec (ours, HAProxy's) would refuse, so the mistake shows here."""
    for t in tlvs:
        if t.type == PP2_TYPE_CRC32C:
            raise ProxyError("encoder: pass crc32c=True rather than a CRC32C TLV (its value is computed last)")
        if t.type == PP2_TYPE_UNIQUE_ID and len(t.value) > PP2_UNIQUE_ID_MAX:
            raise ProxyError(f"encoder: UNIQUE_ID TLV is {len(t.value)} bytes, at most {PP2_UNIQUE_ID_MAX}")
        if t.type == PP2_TYPE_AUTHORITY and len(t.value) > PP2_AUTHORITY_MAX:
            raise ProxyError(f"encoder: AUTHORITY TLV is {len(t.value)} bytes, at most {PP2_AUTHORITY_MAX}")
        if t.type == PP2_TYPE_SSL:
            try:
                parse_ssl(bytes(t.value))
            except ProxyError as exc:
                raise ProxyError(f"encoder: {exc}") from None


def encode(header: ProxyHeader, *, crc32c: bool = False) -> bytes:
    """Encode a ProxyHeader in its own version. For v2, CRC32C TLVs are recomputed (placed first) and the
    other TLVs kept in order; crc32c=True adds one when the header had none."""
    if header.version == 1:
        if header.is_local:
            return encode_v1(None, None)
        return encode_v1(header.source, header.destination)
    tlvs = [t for t in header.tlvs if t.type != PP2_TYPE_CRC32C]
    had_crc = crc32c or len(tlvs) != len(header.tlvs)
    return encode_v2(header.source, header.destination, command=header.command, protocol=header.protocol,
                     tlvs=tlvs, crc32c=had_crc)

"""Values produced by the decoder and consumed by the encoder."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Union

from wiregate.errors import WiregateError
from wiregate.proxyproto.constants import (
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
Address = Union[tuple[str, int], bytes]


@dataclass(frozen=True, slots=True)
class TLV:
    type: int
    value: bytes


@dataclass(frozen=True, slots=True)
class SSLInfo:
    """The value of a PP2_TYPE_SSL TLV: client flags, verify result, then sub-TLVs."""

    client: int
    verify: int
    tlvs: tuple[TLV, ...] = ()

    def sub(self, type_: int) -> bytes | None:
        return next((t.value for t in self.tlvs if t.type == type_), None)


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
        return self.tlv(PP2_TYPE_ALPN)

    @property
    def authority(self) -> str | None:
        v = self.tlv(PP2_TYPE_AUTHORITY)
        return None if v is None else v.decode("utf-8", "replace")

    @property
    def unique_id(self) -> bytes | None:
        return self.tlv(PP2_TYPE_UNIQUE_ID)

    @property
    def netns(self) -> str | None:
        v = self.tlv(PP2_TYPE_NETNS)
        return None if v is None else v.decode("ascii", "replace")

    @property
    def ssl(self) -> SSLInfo | None:
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
    if len(value) < 5:
        raise ProxyError(f"v2 header: SSL TLV too short ({len(value)} bytes, need 5)")
    client = value[0]
    (verify,) = struct.unpack_from("!I", value, 1)
    return SSLInfo(client, verify, parse_tlvs(value[5:], "v2 header: SSL TLV"))


def encode_ssl(info: SSLInfo) -> bytes:
    from wiregate.proxyproto.encoder import encode_tlvs

    return bytes([info.client]) + struct.pack("!I", info.verify) + encode_tlvs(info.tlvs)

"""The cross-platform userspace configuration protocol ("UAPI") that `wg` speaks to userspace WireGuard.

Sans-I/O: `UapiConnection.feed(bytes)` returns the requests found (`GetRequest`, `SetRequest`, or a
`UapiError` for a malformed one) and the caller answers each with `format_get(...)` or `format_errno(...)`.
The wire format follows wireguard-go (device/uapi.go) and wireguard-tools (ipc-uapi.h):

    get=1\\n\\n            -> key=value lines (hex keys), then errno=0\\n\\n
    set=1\\nkey=value...\\n\\n -> errno=N\\n\\n   (N = 0, or a negative errno such as -22 for EINVAL)

Unlike wireguard-go, a set request is parsed and validated whole before anything is applied, so a bad request
changes nothing.
"""

from __future__ import annotations

import errno as _errno
import ipaddress
from dataclasses import dataclass, field
from typing import TypedDict

from wiregate import hostport
from wiregate.errors import WiregateError

# Error codes as wireguard-go's ipc package sends them (negative errno values; `wg` negates them back).
IPC_ERROR_IO = -_errno.EIO
IPC_ERROR_PROTOCOL = -_errno.EPROTO
IPC_ERROR_INVALID = -_errno.EINVAL
IPC_ERROR_PORT_IN_USE = -_errno.EADDRINUSE

# One request may carry many allowed_ip lines; cap what we buffer so a client cannot grow us without bound.
MAX_REQUEST_BYTES = 4 << 20
KEY_HEX_LEN = 64


class UapiError(WiregateError):
    """A request that is refused; `code` is the (negative) errno sent back as `errno=N`."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class PeerSet:
    """The changes a set request makes to one peer (None = leave as is)."""

    public_key: bytes
    remove: bool = False
    update_only: bool = False
    preshared_key: bytes | None = None
    endpoint: tuple[str, int] | None = None
    persistent_keepalive: int | None = None
    replace_allowed_ips: bool = False
    allowed_ips: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SetRequest:
    """A whole `set=1` request: device-level changes, then per-peer changes in order."""

    private_key: bytes | None = None
    listen_port: int | None = None
    fwmark: int | None = None
    replace_peers: bool = False
    peers: tuple[PeerSet, ...] = ()


@dataclass(frozen=True, slots=True)
class GetRequest:
    """A `get=1` request."""


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """What a get answer reports for one peer."""

    public_key: bytes
    preshared_key: bytes | None = None
    endpoint: tuple[str, int] | None = None
    last_handshake: float | None = None  # wall-clock seconds since the epoch
    rx_bytes: int = 0
    tx_bytes: int = 0
    persistent_keepalive: int = 0
    allowed_ips: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """What a get answer reports for the device."""

    private_key: bytes | None = None
    listen_port: int = 0
    fwmark: int = 0
    peers: tuple[PeerStatus, ...] = field(default_factory=tuple)


def _hex_key(value: str, what: str) -> bytes:
    if len(value) != KEY_HEX_LEN:
        raise UapiError(IPC_ERROR_INVALID, f"{what}: a key is 64 hex digits, got {len(value)} characters")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise UapiError(IPC_ERROR_INVALID, f"{what}: not hexadecimal") from None


def _uint(value: str, bits: int, what: str) -> int:
    # strconv.ParseUint semantics: decimal digits only, no sign, no spaces
    if not value.isascii() or not value.isdigit():
        raise UapiError(IPC_ERROR_INVALID, f"{what}: not an unsigned integer: {value!r}")
    n = int(value)
    if n >= 1 << bits:
        raise UapiError(IPC_ERROR_INVALID, f"{what}: out of range: {value}")
    return n


def _true(value: str, what: str) -> bool:
    if value != "true":
        raise UapiError(IPC_ERROR_INVALID, f"{what}: only 'true' is accepted, got {value!r}")
    return True


def parse_endpoint(value: str) -> tuple[str, int]:
    """`1.2.3.4:51820` or `[fd00::1]:51820` (numeric only, as `wg` sends it; port 0 allowed as in wireguard-go;
    a zone is accepted and dropped) -> (address, port)."""
    try:
        return hostport.parse(value, names=False, allow_port_zero=True, what="endpoint").unscoped()
    except hostport.AddressError as exc:
        raise UapiError(IPC_ERROR_INVALID, str(exc)) from None


def parse_allowed_ip(value: str) -> str:
    """A CIDR prefix in canonical form; host bits are kept masked off like wireguard-go's trie does."""
    if "/" not in value:
        raise UapiError(IPC_ERROR_INVALID, f"allowed_ip: expected address/prefix, got {value!r}")
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise UapiError(IPC_ERROR_INVALID, f"allowed_ip: invalid prefix {value!r}") from None


class _DeviceFields(TypedDict, total=False):
    private_key: bytes
    listen_port: int
    fwmark: int
    replace_peers: bool


class _PeerFields(TypedDict, total=False):
    """A PeerSet being read, less its public key and allowed IPs."""

    remove: bool
    update_only: bool
    preshared_key: bytes
    endpoint: tuple[str, int]
    persistent_keepalive: int
    replace_allowed_ips: bool


def parse_set(body: str) -> SetRequest:
    """Parse the lines of a set request (everything after `set=1\\n`, without the final empty line)."""
    dev: _DeviceFields = {}
    peers: list[PeerSet] = []
    peer_key: bytes | None = None  # the peer being read (None: device keys)
    peer: _PeerFields = {}
    allowed: list[str] = []

    def close_peer() -> None:
        if peer_key is not None:
            peers.append(PeerSet(public_key=peer_key, allowed_ips=tuple(allowed), **peer))

    for line in body.split("\n"):
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep:
            # the line is not echoed: it could be key material sent without its name
            raise UapiError(IPC_ERROR_PROTOCOL, f"failed to parse a line of {len(line)} characters (no '=')")
        if key == "public_key":
            close_peer()
            peer_key, peer, allowed = _hex_key(value, "public_key"), {}, []
        elif peer_key is None:
            if key == "private_key":
                dev["private_key"] = _hex_key(value, "private_key")
            elif key == "listen_port":
                dev["listen_port"] = _uint(value, 16, "listen_port")
            elif key == "fwmark":
                dev["fwmark"] = _uint(value, 32, "fwmark")
            elif key == "replace_peers":
                dev["replace_peers"] = _true(value, "replace_peers")
            else:
                raise UapiError(IPC_ERROR_INVALID, f"invalid UAPI device key: {key}")
        elif key == "remove":
            peer["remove"] = _true(value, "remove")
        elif key == "update_only":
            peer["update_only"] = _true(value, "update_only")
        elif key == "preshared_key":
            peer["preshared_key"] = _hex_key(value, "preshared_key")
        elif key == "endpoint":
            peer["endpoint"] = parse_endpoint(value)
        elif key == "persistent_keepalive_interval":
            peer["persistent_keepalive"] = _uint(value, 16, "persistent_keepalive_interval")
        elif key == "replace_allowed_ips":
            peer["replace_allowed_ips"] = _true(value, "replace_allowed_ips")
            allowed.clear()  # lines before this one are replaced too
        elif key == "allowed_ip":
            allowed.append(parse_allowed_ip(value))
        elif key == "protocol_version":
            if value != "1":
                raise UapiError(IPC_ERROR_INVALID, f"invalid protocol version: {value}")
        else:
            raise UapiError(IPC_ERROR_INVALID, f"invalid UAPI peer key: {key}")
    close_peer()
    return SetRequest(peers=tuple(peers), **dev)


def format_get(status: DeviceStatus) -> str:
    """The answer to `get=1`, in wireguard-go's order, ending with `errno=0` and the empty line."""
    out: list[str] = []
    if status.private_key is not None and any(status.private_key):
        out.append(f"private_key={status.private_key.hex()}")
    if status.listen_port:
        out.append(f"listen_port={status.listen_port}")
    if status.fwmark:
        out.append(f"fwmark={status.fwmark}")
    for p in status.peers:
        out.append(f"public_key={p.public_key.hex()}")
        out.append(f"preshared_key={(p.preshared_key or bytes(32)).hex()}")
        out.append("protocol_version=1")
        if p.endpoint is not None:
            out.append(f"endpoint={hostport.format(p.endpoint)}")
        sec = int(p.last_handshake) if p.last_handshake else 0
        nsec = min(int(round((p.last_handshake - sec) * 1e9)), 999_999_999) if p.last_handshake else 0
        out.append(f"last_handshake_time_sec={sec}")
        out.append(f"last_handshake_time_nsec={nsec}")
        out.append(f"tx_bytes={p.tx_bytes}")
        out.append(f"rx_bytes={p.rx_bytes}")
        out.append(f"persistent_keepalive_interval={p.persistent_keepalive}")
        out.extend(f"allowed_ip={a}" for a in p.allowed_ips)
    out.append("errno=0")
    return "\n".join(out) + "\n\n"


def format_errno(code: int) -> str:
    """The status line that ends a set answer (0 = success)."""
    return f"errno={code}\n\n"


def format_set(req: SetRequest) -> str:
    """A set request as a client (like `wg set`) writes it; the inverse of parse_set."""
    out = ["set=1"]
    if req.private_key is not None:
        out.append(f"private_key={req.private_key.hex()}")
    if req.listen_port is not None:
        out.append(f"listen_port={req.listen_port}")
    if req.fwmark is not None:
        out.append(f"fwmark={req.fwmark}")
    if req.replace_peers:
        out.append("replace_peers=true")
    for p in req.peers:
        out.append(f"public_key={p.public_key.hex()}")
        if p.remove:
            out.append("remove=true")
            continue
        if p.update_only:
            out.append("update_only=true")
        if p.preshared_key is not None:
            out.append(f"preshared_key={p.preshared_key.hex()}")
        if p.endpoint is not None:
            out.append(f"endpoint={hostport.format(p.endpoint)}")
        if p.persistent_keepalive is not None:
            out.append(f"persistent_keepalive_interval={p.persistent_keepalive}")
        if p.replace_allowed_ips:
            out.append("replace_allowed_ips=true")
        out.extend(f"allowed_ip={a}" for a in p.allowed_ips)
    return "\n".join(out) + "\n\n"


class UapiConnection:
    """One client connection: bytes in, requests out. Several requests may follow each other on one connection."""

    def __init__(self, max_request: int = MAX_REQUEST_BYTES) -> None:
        self._buf = bytearray()
        self._max = max_request
        self.closed = False  # set when the peer sent something that ends the connection (as wireguard-go does)

    def feed(self, data: bytes) -> list[GetRequest | SetRequest | UapiError]:
        """Add received bytes; return the complete requests (or errors to answer) found so far."""
        if self.closed:
            return []
        self._buf += data
        out: list[GetRequest | SetRequest | UapiError] = []
        while not self.closed:
            if self._buf.startswith(b"get=1\n"):
                if len(self._buf) < 7:
                    break
                nxt = self._buf[6]
                del self._buf[:7]
                out.append(GetRequest() if nxt == 0x0A else
                           UapiError(IPC_ERROR_INVALID, f"trailing character in UAPI get: {chr(nxt)!r}"))
            elif self._buf.startswith(b"set=1\n"):
                # the request ends at the first empty line: "\n\n" (the body may be empty: "set=1\n\n")
                end = self._buf.find(b"\n\n", 5)
                if end < 0:
                    if len(self._buf) > self._max:
                        self.closed = True
                        out.append(UapiError(IPC_ERROR_INVALID, "set request too large"))
                    break
                body = bytes(self._buf[6:end + 1])
                del self._buf[:end + 2]
                try:
                    out.append(parse_set(body.decode("utf-8")))
                except UnicodeDecodeError:
                    out.append(UapiError(IPC_ERROR_PROTOCOL, "set request is not UTF-8"))
                except UapiError as exc:
                    out.append(exc)
            elif b"\n" in self._buf or len(self._buf) >= 6:
                # an unknown operation: wireguard-go logs it and closes the connection without an answer
                if b"get=1\n".startswith(bytes(self._buf)) or b"set=1\n".startswith(bytes(self._buf)):
                    break
                self.closed = True
            else:
                break
        return out

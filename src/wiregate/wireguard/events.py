"""Events the sans-I/O Device reports to its I/O layer (`Device.take_events()`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HandshakeComplete:
    """A new session with this peer is confirmed (initiator: response received; responder: first data)."""

    peer_key: bytes


@dataclass(frozen=True, slots=True)
class HandshakeGaveUp:
    """No handshake completed after REKEY_ATTEMPT_TIME; queued packets were dropped, retries stop until new
    traffic for the peer arrives."""

    peer_key: bytes


@dataclass(frozen=True, slots=True)
class ResolveEndpoint:
    """Please resolve `host` again and call `Device.set_endpoint(peer_key, (ip, port))` with the answer."""

    peer_key: bytes
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class PeerRoamed:
    """An authenticated packet from this peer came from a new address; replies now go there."""

    peer_key: bytes
    old: tuple[str, int] | None
    new: tuple[str, int]


@dataclass(frozen=True, slots=True)
class KeysZeroed:
    """No new session for 3 x REJECT_AFTER_TIME: every key and handshake state of this peer was dropped."""

    peer_key: bytes

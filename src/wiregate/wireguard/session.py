"""Transport keypairs and their rotation (whitepaper 5.4.6 and 6.1-6.3; wireguard-go keypair.go, noise-protocol.go).

A peer holds up to three keypairs: `current` (used to send), `previous` (still accepted on receive, for packets in
flight across a rekey) and `next` (the responder's fresh keypair, unconfirmed until the initiator sends data with
it). Each keypair keeps one ChaCha20Poly1305 object per direction so the data path never re-keys the AEAD.
"""

from __future__ import annotations

import struct
from typing import Generic, TypeVar

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from wiregate.wireguard.constants import MESSAGE_TRANSPORT
from wiregate.wireguard.replay import ReplayFilter

_HEADER_PREFIX = struct.Struct("<II")

PeerT = TypeVar("PeerT")  # the owning device.Peer (opaque here, so session does not import device)


class Keypair(Generic[PeerT]):
    """One direction pair of transport keys with its nonce counter, replay window and indices."""

    __slots__ = ("send", "receive", "send_nonce", "created", "is_initiator", "local_index", "remote_index",
                 "replay", "peer", "header_prefix")

    def __init__(self, send_key: bytes, receive_key: bytes, *, created: float, is_initiator: bool,
                 local_index: int, remote_index: int, peer: PeerT) -> None:
        self.send = ChaCha20Poly1305(send_key)
        self.receive = ChaCha20Poly1305(receive_key)
        self.send_nonce = 0
        self.created = created
        self.is_initiator = is_initiator
        self.local_index = local_index
        self.remote_index = remote_index
        self.replay = ReplayFilter()
        self.peer = peer
        # type and receiver never change for this keypair; only the counter is packed per packet
        self.header_prefix = _HEADER_PREFIX.pack(MESSAGE_TRANSPORT, remote_index)


class Keypairs(Generic[PeerT]):
    """The previous/current/next slots of one peer."""

    __slots__ = ("previous", "current", "next")

    def __init__(self) -> None:
        self.previous: Keypair[PeerT] | None = None
        self.current: Keypair[PeerT] | None = None
        self.next: Keypair[PeerT] | None = None

    def all(self) -> list[Keypair[PeerT]]:
        """Every keypair held, for index cleanup."""
        return [k for k in (self.previous, self.current, self.next) if k is not None]

    def install(self, kp: Keypair[PeerT]) -> list[Keypair[PeerT]]:
        """Place a freshly derived keypair; returns the keypairs dropped (their indices must be freed).

        Initiator: it becomes current at once (it has key confirmation from the response); an unconfirmed
        `next` becomes previous, else the old current does. Responder: it waits in `next`, and previous is
        cleared so at most current + next are live."""
        dropped: list[Keypair[PeerT]] = []
        if kp.is_initiator:
            if self.next is not None:
                if self.previous is not None:
                    dropped.append(self.previous)
                if self.current is not None:
                    dropped.append(self.current)
                self.previous = self.next
                self.next = None
            else:
                if self.previous is not None:
                    dropped.append(self.previous)
                self.previous = self.current
            self.current = kp
        else:
            if self.next is not None:
                dropped.append(self.next)
            if self.previous is not None:
                dropped.append(self.previous)
            self.next = kp
            self.previous = None
        return dropped

    def confirm_next(self, kp: Keypair[PeerT]) -> Keypair[PeerT] | None:
        """Data arrived under `next`: it becomes current, the old current becomes previous. Returns the keypair
        that fell out (the old previous), if any, so its index can be freed."""
        if self.next is not kp:
            return None
        old = self.previous
        self.previous = self.current
        self.current = kp
        self.next = None
        return old

    def clear(self) -> list[Keypair[PeerT]]:
        """Drop all keypairs; returns them."""
        gone = self.all()
        self.previous = self.current = self.next = None
        return gone

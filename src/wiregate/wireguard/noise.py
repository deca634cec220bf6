"""Noise_IKpsk2 handshake messages (whitepaper 5.4.2-5.4.5; wireguard-go noise-protocol.go).

Pure functions over a per-peer `Handshake` record: they compute message bytes and the next chaining key / hash and
never touch indices, timers or the network (the Device does). MAC fields are left zero here; cookie.py fills them.
Failures return None: an unauthenticated message is never an exception on the receive path.
"""

from __future__ import annotations

import enum
import struct

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from wiregate.wireguard.constants import CONSTRUCTION, IDENTIFIER, MESSAGE_INITIATION, MESSAGE_RESPONSE
from wiregate.wireguard.crypto import InvalidTag, aead_decrypt, aead_encrypt, dh, hash_, kdf1, kdf2, kdf3

INITIAL_CHAIN_KEY = hash_(CONSTRUCTION)
INITIAL_HASH = hash_(INITIAL_CHAIN_KEY, IDENTIFIER)

# type(4) sender(4) ephemeral(32) static(32+16) timestamp(12+16) mac1(16) mac2(16)
INITIATION = struct.Struct("<II32s48s28s16s16s")
# type(4) sender(4) receiver(4) ephemeral(32) empty(0+16) mac1(16) mac2(16)
RESPONSE = struct.Struct("<III32s16s16s16s")
_ZERO_MACS = bytes(32)
_ZERO_PSK = bytes(32)


class HandshakeState(enum.IntEnum):
    """Where a peer's handshake stands (wireguard-go handshakeState)."""

    ZEROED = 0
    INITIATION_CREATED = 1
    INITIATION_CONSUMED = 2
    RESPONSE_CREATED = 3
    RESPONSE_CONSUMED = 4


class StaticIdentity:
    """Our long-term X25519 key pair."""

    __slots__ = ("private", "private_bytes", "public")

    def __init__(self, private_bytes: bytes) -> None:
        self.private_bytes = private_bytes
        self.private = X25519PrivateKey.from_private_bytes(private_bytes)
        self.public = self.private.public_key().public_bytes_raw()


class Handshake:
    """Handshake state for one peer (whitepaper 5.4: Ci, Hi, ephemeral keys, indices; plus replay bookkeeping)."""

    __slots__ = ("state", "hash", "chain_key", "local_ephemeral", "local_index", "remote_index", "remote_static",
                 "remote_ephemeral", "precomputed_ss", "psk", "last_timestamp", "last_initiation_consumption",
                 "last_sent_handshake")

    def __init__(self, remote_static: bytes, psk: bytes | None) -> None:
        self.remote_static = remote_static
        self.psk = psk or _ZERO_PSK
        self.precomputed_ss: bytes | None = None
        self.last_timestamp = bytes(12)
        self.last_initiation_consumption = float("-inf")
        self.last_sent_handshake = float("-inf")
        self.local_index = 0
        self.remote_index = 0
        self.clear()

    def clear(self) -> None:
        """Forget the in-flight handshake (keys, ephemeral, transcript)."""
        self.state = HandshakeState.ZEROED
        self.hash = b""
        self.chain_key = b""
        self.local_ephemeral: X25519PrivateKey | None = None
        self.remote_ephemeral = b""

    def precompute(self, identity: StaticIdentity) -> None:
        """DH(S_priv_ours, S_pub_peer), computed once per key change; None if the peer key is of low order."""
        try:
            self.precomputed_ss = dh(identity.private, self.remote_static)
        except ValueError:
            self.precomputed_ss = None


def create_initiation(hs: Handshake, identity: StaticIdentity, ephemeral_private: bytes, sender_index: int,
                      timestamp: bytes) -> bytes | None:
    """Message 1 (148 bytes, MACs zero); leaves `hs` in INITIATION_CREATED. None if the peer key is unusable."""
    if hs.precomputed_ss is None:
        return None
    eph = X25519PrivateKey.from_private_bytes(ephemeral_private)
    eph_pub = eph.public_key().public_bytes_raw()
    h = hash_(INITIAL_HASH, hs.remote_static)
    ck = kdf1(INITIAL_CHAIN_KEY, eph_pub)
    h = hash_(h, eph_pub)
    try:
        ck, key = kdf2(ck, dh(eph, hs.remote_static))
    except ValueError:
        return None
    enc_static = aead_encrypt(key, 0, identity.public, h)
    h = hash_(h, enc_static)
    ck, key = kdf2(ck, hs.precomputed_ss)
    enc_time = aead_encrypt(key, 0, timestamp, h)
    h = hash_(h, enc_time)
    hs.hash, hs.chain_key, hs.local_ephemeral = h, ck, eph
    hs.local_index = sender_index
    hs.state = HandshakeState.INITIATION_CREATED
    return INITIATION.pack(MESSAGE_INITIATION, sender_index, eph_pub, enc_static, enc_time, bytes(16), bytes(16))


class InitiationFirstHalf:
    """Result of opening the initiator's static key: who claims to be calling, and the transcript so far."""

    __slots__ = ("sender", "ephemeral", "initiator_static", "hash", "chain_key", "enc_time")

    def __init__(self, sender: int, ephemeral: bytes, initiator_static: bytes, h: bytes, ck: bytes,
                 enc_time: bytes) -> None:
        self.sender, self.ephemeral, self.initiator_static = sender, ephemeral, initiator_static
        self.hash, self.chain_key, self.enc_time = h, ck, enc_time


def open_initiation(identity: StaticIdentity, msg: bytes) -> InitiationFirstHalf | None:
    """Responder, step 1: decrypt the initiator's static public key (identifies the peer)."""
    _, sender, eph, enc_static, enc_time, _, _ = INITIATION.unpack(msg)
    h = hash_(INITIAL_HASH, identity.public)
    h = hash_(h, eph)
    ck = kdf1(INITIAL_CHAIN_KEY, eph)
    try:
        ck, key = kdf2(ck, dh(identity.private, eph))
        static = aead_decrypt(key, 0, enc_static, h)
    except (ValueError, InvalidTag):
        return None
    h = hash_(h, enc_static)
    return InitiationFirstHalf(sender, eph, static, h, ck, enc_time)


def finish_initiation(hs: Handshake, first: InitiationFirstHalf) -> tuple[bytes, bytes, bytes] | None:
    """Responder, step 2 with the peer's handshake record: decrypt the timestamp -> (timestamp, hash, chain key).

    Replay and flood checks and committing the state are the caller's (they need the clock)."""
    if hs.precomputed_ss is None:
        return None
    ck, key = kdf2(first.chain_key, hs.precomputed_ss)
    try:
        timestamp = aead_decrypt(key, 0, first.enc_time, first.hash)
    except InvalidTag:
        return None
    return timestamp, hash_(first.hash, first.enc_time), ck


def create_response(hs: Handshake, ephemeral_private: bytes, sender_index: int) -> bytes | None:
    """Message 2 (92 bytes, MACs zero) after an initiation was consumed; leaves `hs` in RESPONSE_CREATED."""
    if hs.state != HandshakeState.INITIATION_CONSUMED:
        return None
    eph = X25519PrivateKey.from_private_bytes(ephemeral_private)
    eph_pub = eph.public_key().public_bytes_raw()
    h = hash_(hs.hash, eph_pub)
    ck = kdf1(hs.chain_key, eph_pub)
    try:
        ck = kdf1(ck, dh(eph, hs.remote_ephemeral))
        ck = kdf1(ck, dh(eph, hs.remote_static))
    except ValueError:
        return None
    ck, tau, key = kdf3(ck, hs.psk)
    h = hash_(h, tau)
    empty = aead_encrypt(key, 0, b"", h)
    h = hash_(h, empty)
    hs.hash, hs.chain_key, hs.local_ephemeral = h, ck, eph
    hs.local_index = sender_index
    hs.state = HandshakeState.RESPONSE_CREATED
    return RESPONSE.pack(MESSAGE_RESPONSE, sender_index, hs.remote_index, eph_pub, empty, bytes(16), bytes(16))


def consume_response(hs: Handshake, identity: StaticIdentity, msg: bytes) -> tuple[int, bytes, bytes] | None:
    """Initiator: check message 2 against our INITIATION_CREATED state -> (responder index, hash, chain key)."""
    if hs.state != HandshakeState.INITIATION_CREATED or hs.local_ephemeral is None:
        return None
    _, sender, _, eph, empty, _, _ = RESPONSE.unpack(msg)
    h = hash_(hs.hash, eph)
    ck = kdf1(hs.chain_key, eph)
    try:
        ck = kdf1(ck, dh(hs.local_ephemeral, eph))
        ck = kdf1(ck, dh(identity.private, eph))
    except ValueError:
        return None
    ck, tau, key = kdf3(ck, hs.psk)
    h = hash_(h, tau)
    try:
        aead_decrypt(key, 0, empty, h)
    except InvalidTag:
        return None
    return sender, hash_(h, empty), ck


def derive_transport_keys(chain_key: bytes, initiator: bool) -> tuple[bytes, bytes]:
    """(send key, receive key) = KDF2(C, empty), swapped for the responder (whitepaper 5.4.5)."""
    t1, t2 = kdf2(chain_key, b"")
    return (t1, t2) if initiator else (t2, t1)

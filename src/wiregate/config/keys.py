"""X25519 key pairs in WireGuard's base64 form (from `cryptography`)."""

from __future__ import annotations

import base64
import secrets

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat


def generate_private_key() -> bytes:
    """A fresh 32-byte X25519 private key (clamped by the library when used)."""
    return X25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def generate_psk() -> bytes:
    """A fresh 32-byte WireGuard preshared key."""
    return secrets.token_bytes(32)


def public_key(private: bytes) -> bytes:
    """The X25519 public key of a 32-byte private key."""
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def encode_key(key: bytes) -> str:
    """32 bytes -> WireGuard's 44-character base64 form."""
    return base64.b64encode(key).decode("ascii")


def decode_key(text: str) -> bytes:
    """WireGuard's base64 form -> 32 bytes (ValueError when it is not one)."""
    raw = base64.b64decode(text.strip(), validate=True)
    if len(raw) != 32:
        raise ValueError("a WireGuard key is 32 bytes")
    return raw

"""WireGuard keys: X25519 private/public keys and preshared keys, in WireGuard's base64 form (44 characters)."""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from wiregate.errors import ConfigError

KEY_LEN = 32


def generate_private_key() -> bytes:
    """A new random X25519 private key (32 bytes, clamped as `wg genkey` prints it)."""
    k = bytearray(os.urandom(KEY_LEN))
    k[0] &= 248
    k[31] = (k[31] & 127) | 64
    return bytes(k)


def public_key(private: bytes) -> bytes:
    """The X25519 public key of a 32-byte private key."""
    if len(private) != KEY_LEN:
        raise ConfigError(f"private key must be {KEY_LEN} bytes, got {len(private)}")
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def generate_psk() -> bytes:
    """A new random 32-byte preshared key (`wg genpsk`)."""
    return os.urandom(KEY_LEN)


def encode_key(k: bytes) -> str:
    """WireGuard's base64 text form of a 32-byte key."""
    if len(k) != KEY_LEN:
        raise ValueError(f"a WireGuard key is {KEY_LEN} bytes, got {len(k)}")
    return base64.b64encode(k).decode("ascii")


def decode_key(s: str, what: str = "key") -> bytes:
    """Parse a WireGuard base64 key; ConfigError naming `what` (never echoing the value: it may be secret)."""
    text = s.strip() if isinstance(s, str) else ""
    if len(text) != 44 or not text.endswith("="):
        raise ConfigError(f"{what}: not a WireGuard key (expected 44 base64 characters ending in '=')")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{what}: not a WireGuard key (invalid base64)") from None
    if len(raw) != KEY_LEN or base64.b64encode(raw).decode("ascii") != text:
        raise ConfigError(f"{what}: not a WireGuard key (does not decode to exactly {KEY_LEN} bytes)")
    return raw

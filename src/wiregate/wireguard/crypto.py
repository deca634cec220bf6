"""The whitepaper's primitives (section 5.4) expressed with `cryptography` and `hashlib` only.

HASH, MAC, HMAC, KDF1..3, DH, AEAD and XAEAD. XChaCha20-Poly1305 is not offered by `cryptography`, so it is
composed as draft-irtf-cfrg-xchacha section 2.3 defines it: HChaCha20 derives a subkey from the first 16 nonce
bytes, then ChaCha20-Poly1305 runs with the last 8. HChaCha20 itself is not exposed either; its output is the ChaCha20
state after the 20 rounds at words 0..3 and 12..15, and a ChaCha20 keystream block is exactly that state plus the
input state, so the subtraction below recovers it from `algorithms.ChaCha20` (no round function is written here).
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

__all__ = ["InvalidTag", "hash_", "mac", "hmac", "kdf1", "kdf2", "kdf3", "dh", "aead_encrypt", "aead_decrypt",
           "hchacha20", "xaead_encrypt", "xaead_decrypt", "tai64n", "ZERO_NONCE"]

ZERO_NONCE = bytes(12)
_SIXTEEN_WORDS = struct.Struct("<16I")
_EIGHT_WORDS = struct.Struct("<8I")
_SIGMA = _SIXTEEN_WORDS.unpack(b"expand 32-byte k" + bytes(48))[:4]
_ZERO_BLOCK = bytes(64)
_TAI64_BASE = 0x400000000000000A  # TAI64 label for 1970 plus the 10 s TAI-UTC offset, as wireguard-go uses
_WHITENER_MASK = 0xFFFFFF  # round nanoseconds down to ~16.7 ms so the timestamp leaks no fine timing


def hash_(*parts: bytes) -> bytes:
    """HASH(input): BLAKE2s-256 of the concatenated parts."""
    h = hashlib.blake2s()
    for p in parts:
        h.update(p)
    return h.digest()


def mac(key: bytes, data: bytes) -> bytes:
    """MAC(key, input): keyed BLAKE2s with a 16-byte digest."""
    return hashlib.blake2s(data, digest_size=16, key=key).digest()


def hmac(key: bytes, data: bytes) -> bytes:
    """HMAC(key, input): HMAC-BLAKE2s-256."""
    return _hmac.digest(key, data, hashlib.blake2s)


def kdf1(key: bytes, data: bytes) -> bytes:
    """KDF1 (HKDF with HMAC-BLAKE2s, one output)."""
    t0 = hmac(key, data)
    return hmac(t0, b"\x01")


def kdf2(key: bytes, data: bytes) -> tuple[bytes, bytes]:
    """KDF2: two 32-byte outputs."""
    t0 = hmac(key, data)
    t1 = hmac(t0, b"\x01")
    return t1, hmac(t0, t1 + b"\x02")


def kdf3(key: bytes, data: bytes) -> tuple[bytes, bytes, bytes]:
    """KDF3: three 32-byte outputs."""
    t0 = hmac(key, data)
    t1 = hmac(t0, b"\x01")
    t2 = hmac(t0, t1 + b"\x02")
    return t1, t2, hmac(t0, t2 + b"\x03")


def dh(private: X25519PrivateKey, public: bytes) -> bytes:
    """DH(private, public): X25519. Raises ValueError for a low-order public key (all-zero shared secret)."""
    return private.exchange(X25519PublicKey.from_public_bytes(public))


def aead_encrypt(key: bytes, counter: int, plaintext: bytes, ad: bytes) -> bytes:
    """AEAD(key, counter, plain, ad): ChaCha20-Poly1305 with nonce 32 zero bits || 64-bit LE counter."""
    return ChaCha20Poly1305(key).encrypt(b"\x00\x00\x00\x00" + counter.to_bytes(8, "little"), plaintext, ad)


def aead_decrypt(key: bytes, counter: int, ciphertext: bytes, ad: bytes) -> bytes:
    """Inverse of aead_encrypt; raises InvalidTag."""
    return ChaCha20Poly1305(key).decrypt(b"\x00\x00\x00\x00" + counter.to_bytes(8, "little"), ciphertext, ad)


def hchacha20(key: bytes, nonce16: bytes) -> bytes:
    """HChaCha20(key, 16-byte nonce) -> 32-byte subkey (draft-irtf-cfrg-xchacha 2.2), from one keystream block."""
    # cryptography's 16-byte ChaCha20 "nonce" fills state words 12..15 (counter and nonce) verbatim.
    enc = Cipher(algorithms.ChaCha20(key, nonce16), mode=None).encryptor()
    out = _SIXTEEN_WORDS.unpack(enc.update(_ZERO_BLOCK))
    k = _EIGHT_WORDS.unpack(key)
    n = struct.unpack("<4I", nonce16)
    initial = (*_SIGMA, *k, *n)
    words = [(out[i] - initial[i]) & 0xFFFFFFFF for i in (0, 1, 2, 3, 12, 13, 14, 15)]
    return _EIGHT_WORDS.pack(*words)


def xaead_encrypt(key: bytes, nonce24: bytes, plaintext: bytes, ad: bytes) -> bytes:
    """XAEAD: XChaCha20-Poly1305 (24-byte random nonce)."""
    sub = hchacha20(key, nonce24[:16])
    return ChaCha20Poly1305(sub).encrypt(b"\x00\x00\x00\x00" + nonce24[16:], plaintext, ad)


def xaead_decrypt(key: bytes, nonce24: bytes, ciphertext: bytes, ad: bytes) -> bytes:
    """Inverse of xaead_encrypt; raises InvalidTag."""
    sub = hchacha20(key, nonce24[:16])
    return ChaCha20Poly1305(sub).decrypt(b"\x00\x00\x00\x00" + nonce24[16:], ciphertext, ad)


def tai64n(wall_seconds: float) -> bytes:
    """TAI64N(): 12-byte big-endian timestamp, nanoseconds whitened as wireguard-go does."""
    secs = int(wall_seconds // 1)
    nanos = int((wall_seconds - secs) * 1e9) & ~_WHITENER_MASK
    return struct.pack(">QI", _TAI64_BASE + secs, nanos)

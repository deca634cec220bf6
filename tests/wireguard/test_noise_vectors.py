"""Handshake and transport bytes checked against an independent, step-by-step computation of the whitepaper's
formulas (section 5.4), written here with hashlib/hmac/cryptography directly rather than through the core."""

from __future__ import annotations

import hashlib
import hmac
import random
import struct

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from wgcore_helpers import ADDR_A, ADDR_B, KEY_A, KEY_B, Clock, ip4

from wiregate.wireguard.crypto import hchacha20, xaead_decrypt, xaead_encrypt
from wiregate.wireguard.device import Device, PeerConfig

PSK = bytes(range(100, 132))
WALL = 1_700_000_000.5


class RecordingRng:
    """A seeded rng that remembers what it handed out, so the test can redo the maths with the same values."""

    def __init__(self, seed: int) -> None:
        self._r = random.Random(seed)
        self.draws: list[bytes] = []

    def __call__(self, n: int) -> bytes:
        b = self._r.randbytes(n)
        self.draws.append(b)
        return b


# -- the whitepaper's primitives, spelled out independently --------------------------------------------------
def HASH(x: bytes) -> bytes:
    return hashlib.blake2s(x).digest()


def HMAC(k: bytes, x: bytes) -> bytes:
    return hmac.new(k, x, hashlib.blake2s).digest()


def KDF(n: int, key: bytes, x: bytes) -> list[bytes]:
    t0 = HMAC(key, x)
    out, prev = [], b""
    for i in range(1, n + 1):
        prev = HMAC(t0, prev + bytes([i]))
        out.append(prev)
    return out


def DH(priv: bytes, pub: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(priv).exchange(X25519PublicKey.from_public_bytes(pub))


def PUB(priv: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(priv).public_key().public_bytes_raw()


def AEAD(key: bytes, counter: int, plain: bytes, ad: bytes | None) -> bytes:
    return ChaCha20Poly1305(key).encrypt(bytes(4) + struct.pack("<Q", counter), plain, ad)


def MAC(key: bytes, x: bytes) -> bytes:
    return hashlib.blake2s(x, digest_size=16, key=key).digest()


def make(seed: int, key: bytes, other: bytes) -> tuple[Device, RecordingRng]:
    rng = RecordingRng(seed)
    d = Device(key, wall_clock=Clock(WALL), rng=rng)
    d.add_peer(PeerConfig(PUB(other), preshared_key=PSK, allowed_ips=("10.0.0.0/24",), endpoint=ADDR_B))
    return d, rng


def test_initiation_and_response_match_the_whitepaper_formulas() -> None:
    a, rng_a = make(11, KEY_A, KEY_B)
    b, rng_b = make(12, KEY_B, KEY_A)
    a.send_packet(ip4("10.0.0.1", "10.0.0.2", b"data"), 5.0)
    (init, _), = a.take_datagrams()
    eph_i = next(d for d in rng_a.draws if len(d) == 32)
    s_pub_i, s_pub_r = PUB(KEY_A), PUB(KEY_B)

    # initiator, whitepaper 5.4.2
    c = HASH(b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s")
    h = HASH(c + b"WireGuard v1 zx2c4 Jason@zx2c4.com")
    h = HASH(h + s_pub_r)
    e_pub_i = PUB(eph_i)
    c, = KDF(1, c, e_pub_i)
    h = HASH(h + e_pub_i)
    c, k = KDF(2, c, DH(eph_i, s_pub_r))
    enc_static = AEAD(k, 0, s_pub_i, h)
    h = HASH(h + enc_static)
    c, k = KDF(2, c, DH(KEY_A, s_pub_r))
    tai = struct.pack(">QI", 0x400000000000000A + 1_700_000_000, 500_000_000 & ~0xFFFFFF)
    enc_time = AEAD(k, 0, tai, h)
    h = HASH(h + enc_time)
    sender = init[4:8]
    body = b"\x01\x00\x00\x00" + sender + e_pub_i + enc_static + enc_time
    mac1 = MAC(HASH(b"mac1----" + s_pub_r), body)
    assert init == body + mac1 + bytes(16)  # no cookie yet: MAC2 is zero
    hs = a.peers[s_pub_r].handshake
    assert hs.chain_key == c and hs.hash == h

    # responder, whitepaper 5.4.3
    b.receive_datagram(init, ADDR_A, 5.0)
    (resp, _), = b.take_datagrams()
    eph_r = [d for d in rng_b.draws if len(d) == 32][0]
    e_pub_r = PUB(eph_r)
    c, = KDF(1, c, e_pub_r)
    h = HASH(h + e_pub_r)
    c, = KDF(1, c, DH(eph_r, e_pub_i))
    c, = KDF(1, c, DH(eph_r, s_pub_i))
    c, tau, k = KDF(3, c, PSK)
    h = HASH(h + tau)
    empty = AEAD(k, 0, b"", h)
    body = b"\x02\x00\x00\x00" + resp[4:8] + sender + e_pub_r + empty
    assert resp == body + MAC(HASH(b"mac1----" + s_pub_i), body) + bytes(16)

    # transport keys (5.4.5) and the first data message (5.4.6): A sends its queued packet with counter 0
    t_send_i, t_recv_i = KDF(2, c, b"")
    a.receive_datagram(resp, ADDR_B, 5.0)
    (data, _), = a.take_datagrams()
    plain = ip4("10.0.0.1", "10.0.0.2", b"data")
    padded = plain + bytes(-len(plain) % 16)
    assert data == b"\x04\x00\x00\x00" + resp[4:8] + struct.pack("<Q", 0) + AEAD(t_send_i, 0, padded, None)
    b.receive_datagram(data, ADDR_A, 5.0)
    assert b.take_packets() == [plain]
    # and B answers with the other key
    b.send_packet(ip4("10.0.0.2", "10.0.0.1", b"back"), 5.0)
    (data2, _), = b.take_datagrams()
    plain2 = ip4("10.0.0.2", "10.0.0.1", b"back")
    assert data2[16:] == AEAD(t_recv_i, 0, plain2 + bytes(-len(plain2) % 16), None)


def test_same_keys_rng_and_clock_give_byte_identical_initiations() -> None:
    out = []
    for _ in range(2):
        a, _ = make(3, KEY_A, KEY_B)
        a.send_packet(ip4("10.0.0.1", "10.0.0.2"), 1.0)
        out.append(a.take_datagrams()[0][0])
    assert out[0] == out[1] and len(out[0]) == 148
    a, _ = make(4, KEY_A, KEY_B)
    a.send_packet(ip4("10.0.0.1", "10.0.0.2"), 1.0)
    assert a.take_datagrams()[0][0] != out[0]  # another ephemeral key, another message


def test_hchacha20_and_xchacha20poly1305_match_draft_irtf_cfrg_xchacha() -> None:
    # draft-irtf-cfrg-xchacha-03 section 2.2.1
    sub = hchacha20(bytes(range(32)), bytes.fromhex("000000090000004a0000000031415927"))
    assert sub.hex() == "82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc"
    # appendix A.3.1
    key = bytes(range(0x80, 0xA0))
    nonce = bytes(range(0x40, 0x58))
    aad = bytes.fromhex("50515253c0c1c2c3c4c5c6c7")
    pt = (b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, "
          b"sunscreen would be it.")
    expected = bytes.fromhex(
        "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb"
        "731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452"
        "2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9"
        "21f9664c97637da9768812f615c68b13b52e" "c0875924c1c7987947deafd8780acf49")
    assert xaead_encrypt(key, nonce, pt, aad) == expected
    assert xaead_decrypt(key, nonce, expected, aad) == pt

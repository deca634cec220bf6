"""MAC1/MAC2 and cookie replies (whitepaper 5.3 and 5.4.4, 5.4.7; wireguard-go cookie.go).

`CookieChecker` is the responder side (one per device, keyed by our public key): it checks MAC1 always and MAC2 when
under load, and seals cookie replies. `CookieGenerator` is the initiator side (one per peer, keyed by that peer's
public key): it writes MAC1/MAC2 on our handshake messages and opens the cookie replies the peer sends us.
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
import socket
import struct
from typing import Callable

from wiregate.wireguard.constants import COOKIE_REFRESH_TIME, LABEL_COOKIE, LABEL_MAC1, MESSAGE_COOKIE_REPLY
from wiregate.wireguard.crypto import InvalidTag, hash_, xaead_decrypt, xaead_encrypt

_COOKIE_REPLY = struct.Struct("<II24s32s")
_NEVER = float("-inf")
_NO_MAC2 = bytes(16)


def _mac16(key: bytes, data: bytes) -> bytes:
    return hashlib.blake2s(data, digest_size=16, key=key).digest()


def source_bytes(addr: tuple[str, int]) -> bytes:
    """The bytes a cookie is bound to: the packed source IP then the port (big-endian). inet_pton, not
    ipaddress: this runs for every handshake message under load (2.1 -> 0.3 us here)."""
    host = addr[0]
    try:
        if ":" in host:
            ip = socket.inet_pton(socket.AF_INET6, host.split("%", 1)[0])
        else:
            ip = socket.inet_pton(socket.AF_INET, host)
    except OSError:
        ip = host.encode()
    return ip + (addr[1] & 0xFFFF).to_bytes(2, "big")


class CookieChecker:
    """Responder side: MAC1/MAC2 verification and cookie replies."""

    __slots__ = ("mac1_key", "cookie_key", "_secret", "_secret_set", "_rng")

    def __init__(self, our_public: bytes, rng: Callable[[int], bytes]) -> None:
        self.mac1_key = hash_(LABEL_MAC1, our_public)
        self.cookie_key = hash_(LABEL_COOKIE, our_public)
        self._rng = rng
        self._secret = b""
        self._secret_set = _NEVER

    def check_mac1(self, msg: bytes) -> bool:
        """MAC1 = MAC(HASH(label_mac1 || our public key), msg up to mac1): proves the sender knows our key."""
        end = len(msg) - 32
        return _hmac.compare_digest(_mac16(self.mac1_key, msg[:end]), msg[end:end + 16])

    def _cookie(self, src: bytes) -> bytes:
        return _mac16(self._secret, src)

    def check_mac2(self, msg: bytes, addr: tuple[str, int], now: float) -> bool:
        """MAC2 must be MAC(cookie, msg up to mac2) with the cookie we would hand this source now."""
        end = len(msg) - 16
        if now - self._secret_set > COOKIE_REFRESH_TIME or msg[end:] == _NO_MAC2:
            return False  # no cookie handed out lately, or the sender has none: no need to compute one
        expect = _mac16(self._cookie(source_bytes(addr)), msg[:end])
        return _hmac.compare_digest(expect, msg[end:])

    def create_reply(self, msg: bytes, receiver: int, addr: tuple[str, int], now: float) -> bytes:
        """A cookie reply (type 3) to the handshake message `msg` that arrived from `addr`."""
        if now - self._secret_set > COOKIE_REFRESH_TIME:
            self._secret = self._rng(32)
            self._secret_set = now
        cookie = self._cookie(source_bytes(addr))
        nonce = self._rng(24)
        mac1 = msg[len(msg) - 32:len(msg) - 16]
        sealed = xaead_encrypt(self.cookie_key, nonce, cookie, mac1)
        return _COOKIE_REPLY.pack(MESSAGE_COOKIE_REPLY, receiver, nonce, sealed)


class CookieGenerator:
    """Initiator side: adds MAC1/MAC2 to our handshake messages for one peer, consumes its cookie replies."""

    __slots__ = ("mac1_key", "cookie_key", "cookie", "cookie_set", "last_mac1")

    def __init__(self, peer_public: bytes) -> None:
        self.mac1_key = hash_(LABEL_MAC1, peer_public)
        self.cookie_key = hash_(LABEL_COOKIE, peer_public)
        self.cookie = b""
        self.cookie_set = _NEVER
        self.last_mac1: bytes | None = None

    def add_macs(self, msg: bytes, now: float) -> bytes:
        """`msg` (with 32 trailing bytes for the MACs) with MAC1 set, and MAC2 if we hold a fresh cookie."""
        body = msg[:-32]
        mac1 = _mac16(self.mac1_key, body)
        self.last_mac1 = mac1
        if self.cookie and now - self.cookie_set <= COOKIE_REFRESH_TIME:
            mac2 = _mac16(self.cookie, body + mac1)
        else:
            mac2 = bytes(16)
        return body + mac1 + mac2

    def consume_reply(self, msg: bytes, now: float) -> bool:
        """Open a cookie reply (64 bytes) bound to our last MAC1; True when the cookie was taken."""
        if self.last_mac1 is None:
            return False
        _, _, nonce, sealed = _COOKIE_REPLY.unpack(msg)
        try:
            cookie = xaead_decrypt(self.cookie_key, nonce, sealed, self.last_mac1)
        except InvalidTag:
            return False
        self.cookie = cookie
        self.cookie_set = now
        return True

"""The sans-I/O WireGuard device: peer table, handshakes, data path, timers (whitepaper 5-6; wireguard-go device/).

The Device never reads a socket, a TUN device or the monotonic clock. The I/O layer feeds it

* IP packets read from the TUN (`send_packets(packets, now)`),
* UDP datagrams (`receive_datagrams([(data, addr)], now)`),
* timer expiry (`handle_timer(now)` once `now >= next_deadline()`),

and after each call drains `take_datagrams()` (to the UDP socket), `take_packets()` (to the TUN) and
`take_events()`. `now` is monotonic seconds; the only clock read is the injectable wall clock, used for TAI64N
timestamps and `Peer.last_handshake`. Randomness (ephemeral keys, indices, cookie secrets, timer jitter) comes
from the injectable `rng`, so a test with a seeded rng and fixed clocks gets byte-identical handshakes.

Where each rule lives: handshake maths in noise.py, MAC1/MAC2/cookies in cookie.py, keypair rotation in
session.py, the replay window in replay.py, cryptokey routing in allowedips.py, the timer rules of wireguard-go
timers.go in timers.py (each peer's `PeerTimers` yields actions that `_timer_action` carries out), the flood budgets
in ratelimit.py; this module wires them together. None of those modules imports this one.
"""

from __future__ import annotations

import collections
import enum
import ipaddress
import os
import struct
import time
from dataclasses import dataclass
from typing import Callable, Final, Iterable

from cryptography.exceptions import InvalidTag

from wiregate import hostport
from wiregate.errors import ConfigError
from wiregate.wireguard.allowedips import AllowedIPs, parse_prefix
from wiregate.wireguard.constants import (
    COOKIE_REPLIES_PER_SECOND, COOKIE_REPLIES_PER_SOURCE, COOKIE_REPLY_BURST, COOKIE_REPLY_SOURCE_BURST,
    DEFAULT_MTU, HANDSHAKE_BURST, HANDSHAKE_INITIATION_RATE, HANDSHAKE_QUEUE_SIZE, HANDSHAKES_PER_BATCH,
    HANDSHAKES_PER_SECOND, KEEPALIVE_TIMEOUT, MAX_STAGED_PACKETS, MESSAGE_COOKIE_REPLY_SIZE, MESSAGE_INITIATION_SIZE,
    MESSAGE_KEEPALIVE_SIZE, MESSAGE_RESPONSE_SIZE, MESSAGE_TRANSPORT, PADDING_MULTIPLE, RATELIMIT_BURST,
    RATELIMIT_PACKETS_PER_SECOND, REJECT_AFTER_MESSAGES, REJECT_AFTER_TIME, REKEY_AFTER_MESSAGES, REKEY_AFTER_TIME,
    REKEY_TIMEOUT, UNDER_LOAD_AFTER_TIME, UNDER_LOAD_HANDSHAKES,
)
from wiregate.wireguard.cookie import CookieChecker, CookieGenerator
from wiregate.wireguard.crypto import tai64n
from wiregate.wireguard.events import HandshakeComplete, HandshakeGaveUp, KeysZeroed, PeerRoamed, ResolveEndpoint
from wiregate.wireguard.noise import (
    Handshake, HandshakeState, StaticIdentity, consume_response, create_initiation, create_response,
    derive_transport_keys, finish_initiation, open_initiation,
)
from wiregate.wireguard.ratelimit import SourceLimiter, TokenBucket
from wiregate.wireguard.session import Keypair, Keypairs
from wiregate.wireguard.timers import PeerTimers, TimerAction, TimerQueue, jitter_from

__all__ = ["Device", "Peer", "PeerConfig"]

Addr = tuple[str, int]

_TYPE_INITIATION = b"\x01\x00\x00\x00"
_TYPE_RESPONSE = b"\x02\x00\x00\x00"
_TYPE_COOKIE = b"\x03\x00\x00\x00"
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_NONCE_PREFIX = b"\x00\x00\x00\x00"
# a transport message's first 16 bytes (type, receiver index, counter) in one call, and the AEAD nonce (32 zero
# bits, then the counter little-endian) packed from the counter directly
_TRANSPORT_HEADER = struct.Struct("<IIQ")
_NONCE = struct.Struct("<4xQ")
_PAD = bytes(PADDING_MULTIPLE)
class _Keep(enum.Enum):
    KEEP = enum.auto()


_KEEP: Final = _Keep.KEEP  # "argument not given" for update_peer
_NEVER = float("-inf")
_DEFAULT_PORT = 51820


@dataclass(frozen=True, slots=True)
class PeerConfig:
    """A peer as configured (wg-quick [Peer] / UAPI): `endpoint_host` is a DNS name ("host" or "host:port",
    wiregate.hostport's syntax) the Device asks the I/O layer to resolve (ResolveEndpoint) when there is no endpoint
    yet and again while handshakes keep failing."""

    public_key: bytes
    preshared_key: bytes | None = None
    allowed_ips: tuple[str, ...] = ()
    endpoint: tuple[str, int] | None = None
    endpoint_host: str | None = None
    persistent_keepalive: int = 0


class Peer:
    """One configured peer: its keys, session state, timers and counters (read them; change via the Device)."""

    __slots__ = (
        "public_key", "preshared_key", "allowed_ips", "endpoint", "endpoint_host", "endpoint_port",
        "last_handshake", "rx_bytes", "tx_bytes", "handshake", "cookie", "keypairs", "staged", "initiation_unsent",
        "timers",  # timers.PeerTimers: the five deadlines and their counters, named as in wireguard-go timers.go
    )

    def __init__(self, cfg: PeerConfig, timers: Callable[[Peer], PeerTimers[Peer]]) -> None:
        self.public_key = cfg.public_key
        self.preshared_key = cfg.preshared_key
        self.allowed_ips: tuple[str, ...] = ()
        self.endpoint: Addr | None = cfg.endpoint
        self.endpoint_host: str | None = None
        self.endpoint_port = cfg.endpoint[1] if cfg.endpoint else _DEFAULT_PORT
        self.last_handshake: float | None = None
        self.rx_bytes = 0
        self.tx_bytes = 0
        self.handshake = Handshake(cfg.public_key, cfg.preshared_key)
        self.cookie = CookieGenerator(cfg.public_key)
        self.keypairs: Keypairs[Peer] = Keypairs()
        self.staged: collections.deque[bytes] = collections.deque(maxlen=MAX_STAGED_PACKETS)
        self.initiation_unsent = False
        self.timers = timers(self)
        self.timers.persistent_keepalive = cfg.persistent_keepalive

    @property
    def persistent_keepalive(self) -> int:
        """Seconds between keepalives while idle (0 = off); change it with `Device.update_peer`."""
        return self.timers.persistent_keepalive


class Device:
    """A WireGuard interface's protocol state (see the module docstring for how to drive it)."""

    def __init__(self, private_key: bytes, *, wall_clock: Callable[[], float] = time.time,
                 rng: Callable[[int], bytes] = os.urandom, mtu: int = DEFAULT_MTU) -> None:
        if len(private_key) != 32:
            raise ConfigError("PrivateKey: must be 32 bytes")
        self._wall = wall_clock
        self._rng = rng
        self.mtu = mtu
        self._identity = StaticIdentity(private_key)
        self._checker = CookieChecker(self._identity.public, rng)
        self.peers: dict[bytes, Peer] = {}
        self._allowed: AllowedIPs[Peer] = AllowedIPs()
        self._hs_index: dict[int, Peer] = {}  # local index of an in-flight handshake -> peer
        self._kp_index: dict[int, Keypair[Peer]] = {}  # local index of a keypair -> keypair (data path)
        self._datagrams: list[tuple[bytes, Addr]] = []
        self._packets: list[bytes] = []
        self._events: list[object] = []
        self.drops: collections.Counter[str] = collections.Counter()
        self._forced_load = False
        self._under_load_until = _NEVER
        self._load_window_start = _NEVER
        self._load_window_count = 0
        self._last_handshake_at = _NEVER
        self._timerq: TimerQueue[PeerTimers[Peer]] = TimerQueue()
        self._jitter = jitter_from(rng)
        # handshake budgets (ratelimit.py, constants.py): what a flood may cost the loop the data path shares
        self._ratelimit = SourceLimiter(RATELIMIT_PACKETS_PER_SECOND, RATELIMIT_BURST)
        self._cookie_sources = SourceLimiter(COOKIE_REPLIES_PER_SOURCE, COOKIE_REPLY_SOURCE_BURST)
        self._cookie_budget = TokenBucket(COOKIE_REPLIES_PER_SECOND, COOKIE_REPLY_BURST)
        self._hs_budget = TokenBucket(HANDSHAKES_PER_SECOND, HANDSHAKE_BURST)
        self._hs_queue: collections.deque[tuple[bytes, bytes, Addr]] = collections.deque()
        self._hs_done = 0  # handshake messages processed in the current call

    # -- identity ------------------------------------------------------------------------------------------
    @property
    def private_key(self) -> bytes:
        """Our static private key."""
        return self._identity.private_bytes

    @property
    def public_key(self) -> bytes:
        """Our static public key."""
        return self._identity.public

    def set_private_key(self, k: bytes) -> None:
        """Change our static key: every session is expired (peers must handshake again); a peer whose public key
        equals our new one is removed, as wireguard-go does."""
        if len(k) != 32:
            raise ConfigError("PrivateKey: must be 32 bytes")
        self._identity = StaticIdentity(k)
        self._checker = CookieChecker(self._identity.public, self._rng)
        for peer in list(self.peers.values()):
            if peer.public_key == self._identity.public:
                self.remove_peer(peer.public_key)
                continue
            peer.handshake.precompute(self._identity)
            self._clear_handshake(peer)
            peer.handshake.last_sent_handshake = _NEVER
            for kp in (peer.keypairs.current, peer.keypairs.next):
                if kp is not None:
                    kp.send_nonce = REJECT_AFTER_MESSAGES

    # -- load ----------------------------------------------------------------------------------------------
    @property
    def under_load(self) -> bool:
        """True when the I/O layer forced it, or when more than UNDER_LOAD_HANDSHAKES handshake messages arrived
        within one second (then for UNDER_LOAD_AFTER_TIME more): initiations without a valid MAC2 get a cookie."""
        return self._forced_load or self._under_load_until > self._last_handshake_at

    @under_load.setter
    def under_load(self, value: bool) -> None:
        self._forced_load = bool(value)

    def _is_under_load(self, now: float) -> bool:
        self._last_handshake_at = now
        if now - self._load_window_start >= 1.0:
            self._load_window_start = now
            self._load_window_count = 0
        self._load_window_count += 1
        if self._load_window_count > UNDER_LOAD_HANDSHAKES or len(self._hs_queue) >= HANDSHAKE_QUEUE_SIZE // 8:
            self._under_load_until = now + UNDER_LOAD_AFTER_TIME
            return True
        return self._forced_load or self._under_load_until > now

    @property
    def queued_handshakes(self) -> int:
        """Handshake messages waiting for the handshake budget (processed by `handle_timer`)."""
        return len(self._hs_queue)

    # -- peers ---------------------------------------------------------------------------------------------
    def add_peer(self, cfg: PeerConfig) -> Peer:
        """Add a peer (ConfigError for a bad key or prefix, or a duplicate). A DNS endpoint without an address
        yields a ResolveEndpoint event at once; a persistent keepalive starts a handshake at the next timer."""
        if cfg.public_key in self.peers:
            raise ConfigError("PublicKey: this peer is already configured")
        normalised = self._check_config(cfg)
        peer = Peer(cfg, lambda p: PeerTimers(p, self._timerq, self._jitter))
        if cfg.endpoint_host:
            peer.endpoint_host, peer.endpoint_port = hostport.parse(
                cfg.endpoint_host, default_port=peer.endpoint_port, what="Endpoint")
        peer.handshake.precompute(self._identity)
        self.peers[cfg.public_key] = peer
        self._set_allowed(peer, normalised)
        if peer.endpoint is None and peer.endpoint_host:
            self._events.append(ResolveEndpoint(peer.public_key, peer.endpoint_host, peer.endpoint_port))
        if cfg.persistent_keepalive:  # due at once: connect out, as wg does when the interval is set
            peer.timers.persistent_keepalive = 0
            peer.timers.set_persistent_keepalive(cfg.persistent_keepalive)
        return peer

    def _check_config(self, cfg: PeerConfig) -> tuple[str, ...]:
        """Validate a PeerConfig (ConfigError naming the field); returns its normalised AllowedIPs."""
        if len(cfg.public_key) != 32:
            raise ConfigError("PublicKey: must be 32 bytes")
        if cfg.public_key == self._identity.public:
            raise ConfigError("PublicKey: a peer cannot have this interface's own public key")
        if cfg.preshared_key is not None and len(cfg.preshared_key) != 32:
            raise ConfigError("PresharedKey: must be 32 bytes")
        if cfg.persistent_keepalive < 0 or cfg.persistent_keepalive > 65535:
            raise ConfigError("PersistentKeepalive: must be 0..65535 seconds")
        if cfg.endpoint_host:
            hostport.parse(cfg.endpoint_host, default_port=_DEFAULT_PORT, what="Endpoint")
        return self._check_prefixes(cfg.allowed_ips)

    def sync_peers(self, configs: Iterable[PeerConfig]) -> None:
        """Make the peer table match `configs`, as a reload does: peers not listed are removed, new ones added, the
        others updated in place (their sessions, counters and timers survive). Every config is checked first, so
        a ConfigError changes nothing. Costs O(changed + listed) peers, never a scan per peer."""
        new: dict[bytes, PeerConfig] = {}
        for cfg in configs:
            self._check_config(cfg)
            if cfg.public_key in new:
                raise ConfigError("PublicKey: the same peer is listed twice")
            new[cfg.public_key] = cfg
        for key in [k for k in self.peers if k not in new]:
            self.remove_peer(key)
        for key, cfg in new.items():
            if key in self.peers:
                self.update_peer(key, preshared_key=cfg.preshared_key, allowed_ips=cfg.allowed_ips,
                                 endpoint=cfg.endpoint, endpoint_host=cfg.endpoint_host,
                                 persistent_keepalive=cfg.persistent_keepalive)
            else:
                self.add_peer(cfg)

    def update_peer(self, public_key: bytes, *, preshared_key: bytes | None | _Keep = _KEEP,
                    allowed_ips: Iterable[str] | None = None, endpoint: Addr | None = None,
                    endpoint_host: str | None | _Keep = _KEEP, persistent_keepalive: int | None = None) -> Peer:
        """Change a peer in place; sessions survive. Omitted (or None) arguments are left as they are;
        `preshared_key=None` removes the PSK; `allowed_ips` replaces the whole list."""
        peer = self.peers.get(public_key)
        if peer is None:
            raise ConfigError("PublicKey: no such peer")
        normalised = self._check_prefixes(allowed_ips) if allowed_ips is not None else None
        if preshared_key is not _KEEP:
            if preshared_key is not None and len(preshared_key) != 32:
                raise ConfigError("PresharedKey: must be 32 bytes")
            peer.preshared_key = preshared_key
            peer.handshake.psk = preshared_key or bytes(32)
        if persistent_keepalive is not None:
            if persistent_keepalive < 0 or persistent_keepalive > 65535:
                raise ConfigError("PersistentKeepalive: must be 0..65535 seconds")
            peer.timers.set_persistent_keepalive(persistent_keepalive)
        if normalised is not None:
            self._set_allowed(peer, normalised)
        if endpoint_host is not _KEEP:
            if endpoint_host:
                peer.endpoint_host, peer.endpoint_port = hostport.parse(
                    endpoint_host, default_port=peer.endpoint_port, what="Endpoint")
            else:
                peer.endpoint_host = None
        if endpoint is not None:
            self.set_endpoint(public_key, endpoint)
        return peer

    def remove_peer(self, public_key: bytes) -> None:
        """Forget a peer, its routes, sessions and queued packets (no error if it is unknown)."""
        peer = self.peers.pop(public_key, None)
        if peer is None:
            return
        for prefix in peer.allowed_ips:
            self._allowed.remove(prefix, peer)
        self._timerq.forget(peer.timers)
        self._zero_all(peer)

    def set_endpoint(self, public_key: bytes, endpoint: Addr) -> None:
        """Set where the peer's datagrams go (config, or the answer to ResolveEndpoint). If an initiation could
        not be sent for want of an address, it goes out at the next timer."""
        peer = self.peers.get(public_key)
        if peer is None:
            return
        peer.endpoint = (endpoint[0], int(endpoint[1]))
        if peer.initiation_unsent:
            peer.initiation_unsent = False
            peer.handshake.last_sent_handshake = _NEVER
            peer.timers.retransmit_now()

    @staticmethod
    def _check_prefixes(prefixes: Iterable[str]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(str(parse_prefix(p)) for p in prefixes))

    def _set_allowed(self, peer: Peer, prefixes: tuple[str, ...]) -> None:
        for prefix in peer.allowed_ips:  # only this peer's own prefixes: the cost does not grow with the table
            self._allowed.remove(prefix, peer)
        for prefix in prefixes:
            # a prefix owned by another peer moves to this one (wg semantics): drop it from the old owner's list
            owner = self._allowed.owner(prefix)
            if owner is not None and owner is not peer:
                owner.allowed_ips = tuple(p for p in owner.allowed_ips if p != prefix)
            self._allowed.insert(prefix, peer)
        peer.allowed_ips = prefixes

    def lookup_route(self, address: str) -> Peer | None:
        """The peer whose AllowedIPs hold the longest prefix containing `address` (cryptokey routing)."""
        return self._allowed.lookup(ipaddress.ip_address(address).packed)

    # -- outputs -------------------------------------------------------------------------------------------
    def take_datagrams(self) -> list[tuple[bytes, Addr]]:
        """Datagrams to send on the UDP socket, oldest first."""
        out, self._datagrams = self._datagrams, []
        return out

    def take_packets(self) -> list[bytes]:
        """Decrypted IP packets to write to the TUN device."""
        out, self._packets = self._packets, []
        return out

    def take_events(self) -> list[object]:
        """Events since the last call (see events.py)."""
        out, self._events = self._events, []
        return out

    # -- send path -----------------------------------------------------------------------------------------
    def send_packet(self, packet: bytes, now: float) -> None:
        """Route one IP packet from the TUN by destination; encrypt it, or queue it and start a handshake."""
        self.send_packets((packet,), now)

    def send_packets(self, packets: Iterable[bytes], now: float) -> None:
        """Batch form of send_packet (one timer update per peer per batch)."""
        lookup4 = self._allowed.lookup_v4
        lookup6 = self._allowed.lookup_v6
        by_peer: dict[Peer, list[bytes]] = {}
        # a batch is mostly one flow: remember the last destination's owner (the table cannot change mid-batch)
        last4 = last6 = None
        owner4 = owner6 = None
        for pkt in packets:
            n = len(pkt)
            if not n:
                continue
            version = pkt[0] >> 4
            if version == 4 and n >= 20:
                dst = pkt[16:20]
                if dst != last4:
                    last4, owner4 = dst, lookup4(dst)
                peer = owner4
            elif version == 6 and n >= 40:
                dst = pkt[24:40]
                if dst != last6:
                    last6, owner6 = dst, lookup6(dst)
                peer = owner6
            else:
                self.drops["tun_not_ip"] += 1
                continue
            if peer is None:
                self.drops["tun_no_route"] += 1
                continue
            lst = by_peer.get(peer)
            if lst is None:
                by_peer[peer] = [pkt]
            else:
                lst.append(pkt)
        for peer, pkts in by_peer.items():
            peer.staged.extend(pkts)
            self._send_staged(peer, now)

    def _send_keepalive(self, peer: Peer, now: float) -> None:
        """An empty transport message, unless data is queued anyway (wireguard-go SendKeepalive)."""
        if not peer.staged:
            peer.staged.append(b"")
        self._send_staged(peer, now)

    def _send_staged(self, peer: Peer, now: float) -> None:
        """Encrypt queued packets with the current keypair, or start a handshake when there is none usable."""
        if not peer.staged:
            return
        kp = peer.keypairs.current
        if kp is None or kp.send_nonce >= REJECT_AFTER_MESSAGES or now - kp.created >= REJECT_AFTER_TIME:
            self._send_initiation(peer, now, retry=False)
            return
        ep = peer.endpoint
        if ep is None:
            self._send_initiation(peer, now, retry=False)  # records that it could not go, asks for DNS
            return
        staged = peer.staged
        encrypt = kp.send.encrypt
        prefix = kp.header_prefix
        pack = _U64.pack
        mtu = self.mtu
        out = self._datagrams
        nonce = kp.send_nonce
        limit = REJECT_AFTER_MESSAGES
        tx = 0
        data_sent = False
        if nonce + len(staged) <= limit:  # the common case: the whole queue fits under this keypair
            batch = list(staged)
            staged.clear()
        else:
            batch = [staged.popleft() for _ in range(min(len(staged), limit - nonce))]
        append = out.append
        for pkt in batch:
            n = len(pkt)
            if n:
                data_sent = True
                # pad to a multiple of 16, capped at the MTU (a full-size TCP segment needs none)
                if n & 15 or n > mtu:
                    last = n % mtu if n > mtu else n
                    padded = (last + PADDING_MULTIPLE - 1) & ~(PADDING_MULTIPLE - 1)
                    if padded > mtu:
                        padded = mtu
                    if padded != last:
                        pkt = pkt + _PAD[:padded - last]
            nb = pack(nonce)
            dg = prefix + nb + encrypt(_NONCE_PREFIX + nb, pkt, None)
            append((dg, ep))
            tx += len(dg)
            nonce += 1
        kp.send_nonce = nonce
        peer.tx_bytes += tx
        # once per batch, as wireguard-go's RoutineSequentialSender does
        timers = peer.timers
        timers.any_authenticated_packet_traversal(now)
        timers.any_authenticated_packet_sent()
        if data_sent:
            timers.data_sent(now)
        # keepKeyFreshSending
        if nonce > REKEY_AFTER_MESSAGES or (kp.is_initiator and now - kp.created > REKEY_AFTER_TIME):
            self._send_initiation(peer, now, retry=False)
        if staged:  # nonces exhausted mid-batch: the rest waits for the new session
            self._send_initiation(peer, now, retry=False)

    def _new_index(self) -> int:
        for _ in range(64):
            idx: int = _U32.unpack(self._rng(4))[0]
            if idx not in self._hs_index and idx not in self._kp_index:
                return idx
        raise RuntimeError("rng keeps returning used session indices")

    def _send_handshake_datagram(self, peer: Peer, msg: bytes, now: float) -> bool:
        ep = peer.endpoint
        if ep is None:
            return False
        self._datagrams.append((msg, ep))
        peer.tx_bytes += len(msg)
        return True

    def _send_initiation(self, peer: Peer, now: float, retry: bool) -> None:
        """Create and send handshake message 1, at most once per REKEY_TIMEOUT (wireguard-go
        SendHandshakeInitiation)."""
        if not retry:
            peer.timers.handshake_attempts = 0
        hs = peer.handshake
        if now - hs.last_sent_handshake < REKEY_TIMEOUT:
            # Rate limited (we sent an initiation or a response moments ago). wireguard-go and the kernel just
            # return here, which can leave queued packets without any pending retry (two peers whose
            # initiations crossed answer each other and then both drop the other's response); we keep a
            # retry armed for when the limit lifts.
            if retry or peer.staged:
                peer.timers.retry_after_rate_limit(hs.last_sent_handshake)
            return
        hs.last_sent_handshake = now
        self._hs_index.pop(hs.local_index, None)
        idx = self._new_index()
        msg = create_initiation(hs, self._identity, self._rng(32), idx, tai64n(self._wall()))
        if msg is None:
            self.drops["initiation_bad_peer_key"] += 1
            return
        self._hs_index[idx] = peer
        msg = peer.cookie.add_macs(msg, now)
        peer.timers.any_authenticated_packet_traversal(now)
        peer.timers.any_authenticated_packet_sent()
        if not self._send_handshake_datagram(peer, msg, now):
            peer.initiation_unsent = True
            if peer.endpoint_host:
                self._events.append(ResolveEndpoint(peer.public_key, peer.endpoint_host, peer.endpoint_port))
        else:
            peer.initiation_unsent = False
        peer.timers.handshake_initiated(now)

    def _send_response(self, peer: Peer, now: float) -> None:
        """Handshake message 2 after a consumed initiation; derives the responder keypair (it waits in `next`)."""
        hs = peer.handshake
        hs.last_sent_handshake = now
        self._hs_index.pop(hs.local_index, None)
        idx = self._new_index()
        msg = create_response(hs, self._rng(32), idx)
        if msg is None:
            return
        self._hs_index[idx] = peer
        msg = peer.cookie.add_macs(msg, now)
        self._begin_session(peer, now)
        peer.timers.session_derived(now)
        peer.timers.any_authenticated_packet_traversal(now)
        peer.timers.any_authenticated_packet_sent()
        self._send_handshake_datagram(peer, msg, now)

    def _begin_session(self, peer: Peer, now: float) -> None:
        """Turn the finished handshake into a keypair and rotate it in (wireguard-go BeginSymmetricSession)."""
        hs = peer.handshake
        if hs.state == HandshakeState.RESPONSE_CONSUMED:
            initiator = True
        elif hs.state == HandshakeState.RESPONSE_CREATED:
            initiator = False
        else:
            return
        send_key, recv_key = derive_transport_keys(hs.chain_key, initiator)
        kp = Keypair(send_key, recv_key, created=now, is_initiator=initiator, local_index=hs.local_index,
                     remote_index=hs.remote_index, peer=peer)
        self._hs_index.pop(hs.local_index, None)
        hs.local_index = 0
        hs.clear()
        self._kp_index[kp.local_index] = kp
        for old in peer.keypairs.install(kp):
            self._kp_index.pop(old.local_index, None)

    def _handshake_complete(self, peer: Peer) -> None:
        """timersHandshakeComplete: stop retransmitting, reset counters, stamp last_handshake, report it."""
        peer.timers.handshake_complete()
        peer.last_handshake = self._wall()
        self._events.append(HandshakeComplete(peer.public_key))

    # -- receive path --------------------------------------------------------------------------------------
    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        """Process one UDP datagram; anything malformed or unauthenticated is dropped and counted in `drops`."""
        self.receive_datagrams(((data, addr),), now)

    def receive_datagrams(self, datagrams: Iterable[tuple[bytes, Addr]], now: float) -> None:
        """Batch form of receive_datagram; timers and roaming are updated once per peer per batch."""
        kp_index = self._kp_index
        packets = self._packets
        lookup4 = self._allowed.lookup_v4
        lookup6 = self._allowed.lookup_v6
        drops = self.drops
        self._hs_done = 0
        seen: dict[Peer, Addr] = {}  # peers with an authenticated transport packet -> address of the last one
        data_rx: set[Peer] = set()
        # a batch is mostly one session and one flow: remember the last receiver index's keypair (already checked
        # for age: `now` is fixed for the batch) and the last source addresses' owners. Handshake messages may
        # retire keypairs, so they forget the keypair; confirming `next` retires only an older one, never the last.
        last_idx = last4 = last6 = None
        owner4 = owner6 = None
        # set together on the first transport packet of each receiver index (last_idx then names it), read only
        # while last_idx is that index: declared, not bound to None, so their types need no narrowing per packet
        kp: Keypair[Peer]
        decrypt: Callable[[bytes, bytes, bytes | None], bytes]
        validate: Callable[[int, int], bool]
        peer: Peer
        header = _TRANSPORT_HEADER.unpack_from
        nonce_of = _NONCE.pack
        for data, addr in datagrams:
            size = len(data)
            if size < MESSAGE_KEEPALIVE_SIZE:
                drops["short"] += 1
                continue
            kind, idx, counter = header(data)
            if kind != MESSAGE_TRANSPORT:  # also catches a transport type with nonzero reserved bytes
                last_idx = None
                try:
                    self._receive_handshake(data[:4], data, addr, now)
                except Exception:  # noqa: BLE001 - a hostile datagram must never take the device down
                    drops["handshake_error"] += 1
                continue
            if idx != last_idx:
                found = kp_index.get(idx)
                if found is None:
                    drops["unknown_index"] += 1
                    last_idx = None
                    continue
                kp = found
                if now - kp.created >= REJECT_AFTER_TIME:
                    drops["expired_keypair"] += 1
                    last_idx = None
                    continue
                last_idx = idx
                decrypt, validate, peer = kp.receive.decrypt, kp.replay.validate, kp.peer
            try:
                pt = decrypt(nonce_of(counter), data[16:], None)
            except InvalidTag:
                drops["decrypt"] += 1
                continue
            if not validate(counter, REJECT_AFTER_MESSAGES):
                drops["replay"] += 1
                continue
            if kp is peer.keypairs.next:
                self._confirm_next(peer, kp, addr, now)
            peer.rx_bytes += size  # header, ciphertext and tag: what wg counts
            seen[peer] = addr
            n = len(pt)
            if not n:
                continue  # keepalive
            data_rx.add(peer)
            version = pt[0] >> 4
            if version == 4:
                if n < 20:
                    drops["bad_ip"] += 1
                    continue
                total = (pt[2] << 8) | pt[3]
                if total > n or total < 20:
                    drops["bad_ip"] += 1
                    continue
                if total != n:
                    pt = pt[:total]
                src = pt[12:16]
                if src != last4:
                    last4, owner4 = src, lookup4(src)
                if owner4 is not peer:
                    drops["source_not_allowed"] += 1
                    continue
            elif version == 6:
                if n < 40:
                    drops["bad_ip"] += 1
                    continue
                total = ((pt[4] << 8) | pt[5]) + 40
                if total > n:
                    drops["bad_ip"] += 1
                    continue
                if total != n:
                    pt = pt[:total]
                src = pt[8:24]
                if src != last6:
                    last6, owner6 = src, lookup6(src)
                if owner6 is not peer:
                    drops["source_not_allowed"] += 1
                    continue
            else:
                drops["bad_ip"] += 1
                continue
            packets.append(pt)
        if self._hs_queue:
            self._drain_handshakes(now)
        for peer, addr in seen.items():
            self._update_endpoint(peer, addr)
            self._keep_key_fresh_receiving(peer, now)
            timers = peer.timers
            timers.any_authenticated_packet_traversal(now)
            timers.any_authenticated_packet_received()
            if peer in data_rx:
                timers.data_received(now)

    def _confirm_next(self, peer: Peer, kp: Keypair[Peer], addr: Addr, now: float) -> None:
        """First authenticated data under the responder's new keypair: it becomes current (key confirmation)."""
        old = peer.keypairs.confirm_next(kp)
        if old is not None:
            self._kp_index.pop(old.local_index, None)
        self._update_endpoint(peer, addr)
        self._handshake_complete(peer)
        self._send_staged(peer, now)

    def _update_endpoint(self, peer: Peer, addr: Addr) -> None:
        """Roaming: the endpoint follows the source of the latest authenticated packet (whitepaper 2.1)."""
        if peer.endpoint != addr:
            old = peer.endpoint
            peer.endpoint = addr
            if old is not None:
                self._events.append(PeerRoamed(peer.public_key, old, addr))

    def _keep_key_fresh_receiving(self, peer: Peer, now: float) -> None:
        """Initiator side: rekey if the session nears REJECT_AFTER_TIME and we only receive (whitepaper 6.2)."""
        if peer.timers.sent_last_minute_handshake:
            return
        kp = peer.keypairs.current
        if kp is not None and kp.is_initiator and \
                now - kp.created > REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT:
            peer.timers.sent_last_minute_handshake = True
            self._send_initiation(peer, now, retry=False)

    def _receive_handshake(self, kind: bytes, data: bytes, addr: Addr, now: float) -> None:
        n = len(data)
        if kind == _TYPE_COOKIE:
            if n != MESSAGE_COOKIE_REPLY_SIZE:
                self.drops["bad_size"] += 1
                return
            idx = _U32.unpack_from(data, 4)[0]
            peer = self._hs_index.get(idx)
            if peer is None:
                kp = self._kp_index.get(idx)
                peer = kp.peer if kp is not None else None
            if peer is None or not peer.cookie.consume_reply(data, now):
                self.drops["cookie_reply"] += 1
            return
        if kind == _TYPE_INITIATION:
            if n != MESSAGE_INITIATION_SIZE:
                self.drops["bad_size"] += 1
                return
        elif kind == _TYPE_RESPONSE:
            if n != MESSAGE_RESPONSE_SIZE:
                self.drops["bad_size"] += 1
                return
        else:
            self.drops["unknown_type"] += 1
            return
        if not self._checker.check_mac1(data):
            self.drops["mac1"] += 1
            return
        if self._is_under_load(now):
            if not self._checker.check_mac2(data, addr, now):
                # a cookie reply costs ~40x a MAC1 check: budgeted per source and overall, so a flood of valid
                # MAC1s (the public key is no secret) cannot spend the loop on answering it
                if not self._cookie_sources.allow(addr[0], now) or not self._cookie_budget.allow(now):
                    self.drops["cookie_budget"] += 1
                    return
                sender = _U32.unpack_from(data, 4)[0]
                self._datagrams.append((self._checker.create_reply(data, sender, addr, now), addr))
                self.drops["cookie_sent"] += 1
                return
            if not self._ratelimit.allow(addr[0], now):
                self.drops["ratelimited"] += 1
                return
        queue = self._hs_queue
        if len(queue) >= HANDSHAKE_QUEUE_SIZE:
            self.drops["handshake_queue_full"] += 1
            return
        queue.append((kind, data, addr))
        self._drain_handshakes(now)

    def _drain_handshakes(self, now: float) -> None:
        """Process queued handshake messages, oldest first, within the budgets: HANDSHAKES_PER_BATCH per call and
        HANDSHAKES_PER_SECOND overall. What is left waits for `handle_timer` (see `next_deadline`)."""
        queue = self._hs_queue
        while queue and self._hs_done < HANDSHAKES_PER_BATCH and self._hs_budget.allow(now):
            self._hs_done += 1
            kind, data, addr = queue.popleft()
            try:
                if kind == _TYPE_INITIATION:
                    self._consume_initiation(data, addr, now)
                else:
                    self._consume_response(data, addr, now)
            except Exception:  # noqa: BLE001 - a hostile datagram must never take the device down
                self.drops["handshake_error"] += 1

    # -- timers --------------------------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        """When `handle_timer` must next be called (monotonic seconds; may be in the past = now), or None.
        Costs the same with 1 or 10,000 peers (timers.TimerQueue)."""
        t = self._timerq.peek()
        if self._hs_queue:
            q = self._hs_budget.ready_at(min(len(self._hs_queue), HANDSHAKES_PER_BATCH))
            if t is None or q < t:
                t = q
        return t

    def handle_timer(self, now: float) -> None:
        """Run every peer timer whose deadline is <= now, and the next slice of queued handshake messages."""
        self._hs_done = 0
        if self._hs_queue:
            self._drain_handshakes(now)
        for timers in self._timerq.pop_due(now):
            peer = timers.owner
            for action in timers.expire(now, named_endpoint=bool(peer.endpoint_host)):
                self._timer_action(peer, action, now)
            if self.peers.get(peer.public_key) is peer:
                timers.rearm()

    def _timer_action(self, peer: Peer, action: TimerAction, now: float) -> None:
        """Carry out what an expired timer asks for (timers.PeerTimers.expire)."""
        if action is TimerAction.RETRANSMIT_HANDSHAKE:
            self._send_initiation(peer, now, retry=True)
        elif action is TimerAction.NEW_HANDSHAKE:
            self._send_initiation(peer, now, retry=False)
        elif action is TimerAction.SEND_KEEPALIVE or action is TimerAction.PERSISTENT_KEEPALIVE:
            self._send_keepalive(peer, now)
        elif action is TimerAction.ZERO_KEYS:
            self._zero_all(peer)
            self._events.append(KeysZeroed(peer.public_key))
        elif action is TimerAction.GIVE_UP:
            peer.staged.clear()
            self._events.append(HandshakeGaveUp(peer.public_key))
        elif action is TimerAction.RESOLVE_ENDPOINT and peer.endpoint_host:
            self._events.append(ResolveEndpoint(peer.public_key, peer.endpoint_host, peer.endpoint_port))

    def _consume_initiation(self, data: bytes, addr: Addr, now: float) -> None:
        first = open_initiation(self._identity, data)
        if first is None:
            self.drops["initiation_auth"] += 1
            return
        peer = self.peers.get(first.initiator_static)
        if peer is None:
            self.drops["initiation_unknown_peer"] += 1
            return
        hs = peer.handshake
        result = finish_initiation(hs, first)
        if result is None:
            self.drops["initiation_auth"] += 1
            return
        timestamp, h, ck = result
        # replay and flood protection (whitepaper 5.1): strictly newer TAI64N, at most one per 20 ms
        if timestamp <= hs.last_timestamp:
            self.drops["initiation_replay"] += 1
            return
        if now - hs.last_initiation_consumption <= HANDSHAKE_INITIATION_RATE:
            self.drops["initiation_flood"] += 1
            return
        hs.hash, hs.chain_key = h, ck
        hs.remote_index = first.sender
        hs.remote_ephemeral = first.ephemeral
        hs.last_timestamp = timestamp
        hs.last_initiation_consumption = now
        hs.state = HandshakeState.INITIATION_CONSUMED
        peer.timers.any_authenticated_packet_traversal(now)
        peer.timers.any_authenticated_packet_received()
        self._update_endpoint(peer, addr)
        peer.rx_bytes += len(data)
        self._send_response(peer, now)

    def _consume_response(self, data: bytes, addr: Addr, now: float) -> None:
        peer = self._hs_index.get(_U32.unpack_from(data, 8)[0])
        if peer is None:
            self.drops["response_unknown_index"] += 1
            return
        hs = peer.handshake
        result = consume_response(hs, self._identity, data)
        if result is None:
            self.drops["response_auth"] += 1
            return
        hs.remote_index, hs.hash, hs.chain_key = result
        hs.state = HandshakeState.RESPONSE_CONSUMED
        self._update_endpoint(peer, addr)
        peer.rx_bytes += len(data)
        peer.timers.any_authenticated_packet_traversal(now)
        peer.timers.any_authenticated_packet_received()
        self._begin_session(peer, now)
        peer.timers.session_derived(now)
        self._handshake_complete(peer)
        self._send_keepalive(peer, now)  # key confirmation for the responder, and flushes queued packets

    def _clear_handshake(self, peer: Peer) -> None:
        hs = peer.handshake
        self._hs_index.pop(hs.local_index, None)
        hs.local_index = 0
        hs.clear()

    def _zero_all(self, peer: Peer) -> None:
        """Drop every keypair, the handshake state and queued packets (wireguard-go ZeroAndFlushAll). Python
        cannot wipe the key bytes inside the AEAD objects; dropping every reference is what it can do."""
        for kp in peer.keypairs.clear():
            self._kp_index.pop(kp.local_index, None)
        self._clear_handshake(peer)
        peer.staged.clear()

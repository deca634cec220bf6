"""Helpers for the WireGuard core tests: a fake clock pair of Devices wired back to back in memory, IP packets."""

from __future__ import annotations

import random
import socket
import struct

from wiregate.wireguard.device import Device, PeerConfig

ADDR_A = ("192.0.2.1", 51820)
ADDR_B = ("198.51.100.2", 51821)

# fixed keys (clamped X25519 scalars) so failures reproduce
KEY_A = bytes.fromhex("a8a2a6d1e4f0c3b5978a6c4e2f1d0b9a8877665544332211ffeeddccbbaa9948")
KEY_B = bytes.fromhex("5066d33ac2b1a0f9e8d7c6b5a4938271605f4e3d2c1b0a99887766554433227f")


def ip4(src: str, dst: str, payload: bytes = b"hello", proto: int = 17) -> bytes:
    """A minimal IPv4 packet (checksum left zero: the core does not look at it)."""
    head = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, proto, 0,
                       socket.inet_aton(src), socket.inet_aton(dst))
    return head + payload


def ip6(src: str, dst: str, payload: bytes = b"hello6", nh: int = 17) -> bytes:
    """A minimal IPv6 packet."""
    head = struct.pack(">IHBB16s16s", 6 << 28, len(payload), nh, 64,
                       socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst))
    return head + payload


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Pair:
    """Two Devices, A (10.0.0.1, fd00::1) and B (10.0.0.2, fd00::2), that deliver each other's datagrams
    when `pump()` is called. `now` is the shared monotonic time; `wall` moves with it."""

    def __init__(self, *, psk: bytes | None = None, seed: int = 7, keepalive_a: int = 0,
                 b_knows_a_endpoint: bool = False) -> None:
        self.now = 1000.0
        self.wall = Clock()
        self.a = Device(KEY_A, wall_clock=self.wall, rng=random.Random(seed).randbytes)
        self.b = Device(KEY_B, wall_clock=self.wall, rng=random.Random(seed + 1).randbytes)
        self.peer_b = self.a.add_peer(PeerConfig(self.b.public_key, preshared_key=psk,
                                                 allowed_ips=("10.0.0.2/32", "fd00::2/128"), endpoint=ADDR_B,
                                                 persistent_keepalive=keepalive_a))
        self.peer_a = self.b.add_peer(PeerConfig(self.a.public_key, preshared_key=psk,
                                                 allowed_ips=("10.0.0.1/32", "fd00::1/128"),
                                                 endpoint=ADDR_A if b_knows_a_endpoint else None))
        self.a_addr = ADDR_A
        self.b_addr = ADDR_B
        self.wire: list[tuple[str, bytes]] = []  # every datagram delivered: ("a->b" | "b->a", bytes)

    def advance(self, dt: float) -> None:
        """Move both clocks and run due timers of both devices."""
        self.now += dt
        self.wall.t += dt
        for d in (self.a, self.b):
            dl = d.next_deadline()
            if dl is not None and dl <= self.now:
                d.handle_timer(self.now)

    def pump(self, drop_a_to_b: bool = False, drop_b_to_a: bool = False, rounds: int = 10) -> int:
        """Deliver queued datagrams both ways until quiet; returns how many were delivered."""
        moved = 0
        for _ in range(rounds):
            out_a = self.a.take_datagrams()
            out_b = self.b.take_datagrams()
            if not out_a and not out_b:
                break
            for dg, dst in out_a:
                if not drop_a_to_b and dst == ADDR_B:
                    self.wire.append(("a->b", dg))
                    self.b.receive_datagram(dg, self.a_addr, self.now)
                    moved += 1
            for dg, dst in out_b:
                if not drop_b_to_a and dst == self.a_addr:
                    self.wire.append(("b->a", dg))
                    self.a.receive_datagram(dg, ADDR_B, self.now)
                    moved += 1
        return moved

    def connect(self) -> None:
        """A sends one packet to B, the handshake completes and the packet arrives; events are drained."""
        self.a.send_packet(ip4("10.0.0.1", "10.0.0.2", b"first"), self.now)
        self.pump()
        assert self.b.take_packets() == [ip4("10.0.0.1", "10.0.0.2", b"first")]
        self.a.take_events()
        self.b.take_events()


def run_until(p: Pair, until: float, *, drop_a_to_b: bool = False, drop_b_to_a: bool = False) -> None:
    """Jump the clock from deadline to deadline up to `until`, running timers and delivering datagrams."""
    p.pump(drop_a_to_b=drop_a_to_b, drop_b_to_a=drop_b_to_a)
    while True:
        dls = [d for d in (p.a.next_deadline(), p.b.next_deadline()) if d is not None]
        nxt = min(dls) if dls else None
        if nxt is None or nxt > until:
            break
        nxt = max(nxt, p.now)
        p.wall.t += nxt - p.now
        p.now = nxt
        for d in (p.a, p.b):
            dl = d.next_deadline()
            if dl is not None and dl <= p.now:
                d.handle_timer(p.now)
        p.pump(drop_a_to_b=drop_a_to_b, drop_b_to_a=drop_b_to_a)
    p.wall.t += until - p.now
    p.now = until


def kinds(wire: list[tuple[str, bytes]], direction: str) -> list[int]:
    """Message types seen on the wire in one direction (4 = data; 32-byte data = keepalive, shown as 0)."""
    return [0 if (dg[0] == 4 and len(dg) == 32) else dg[0] for d, dg in wire if d == direction]

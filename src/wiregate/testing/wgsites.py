"""Many simulated sites against one gateway, sans-I/O: N initiator Devices and one responder Device with N peers,
wired together in memory with a virtual clock (tests and `wiregate bench scale`).

    sim = Sites(1000)
    sim.storm()                  # every site sends a packet at once; run until each has a session
    sim.restart_gateway()        # a fresh gateway Device (same key and peers, no sessions)

Datagrams from the sites reach the gateway in batches of `batch` (as `UdpSocket.recv_batch` hands them over).
Each site has its own source address (its own IPv6 /64, so per-source limits see N sources). The clock jumps to
the next deadline when nothing is in flight; with `charge_cpu=True` it also advances by the wall time the gateway
spends in each call, so the gateway's CPU becomes part of the time until every site has handshaken (the sites
and the network cost nothing: they are other machines).
"""

from __future__ import annotations

import heapq
import random
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Callable

from wiregate.wireguard.device import Device, PeerConfig
from wiregate.wireguard.events import HandshakeComplete
from wiregate.wireguard.keys import public_key

GATEWAY_ADDR = ("fd00:5::1", 51820)
GATEWAY_TUNNEL = "fd00:b::1"


def site_addr(i: int) -> tuple[str, int]:
    """The underlay address of site i: a /64 of its own."""
    return (f"fd00:{(i >> 16) + 0x100:x}:{i & 0xFFFF:x}::2", 51820)


def site_tunnel(i: int) -> str:
    return f"fd00:c:{i >> 16:x}:{i & 0xFFFF:x}::1"


def ip6_packet(src: str, dst: str, payload: bytes) -> bytes:
    """A minimal IPv6/UDP-less packet (next header 59: no next header): enough for routing and the source check."""
    return struct.pack(">IHBB16s16s", 6 << 28, len(payload), 59, 64, socket.inet_pton(socket.AF_INET6, src),
                       socket.inet_pton(socket.AF_INET6, dst)) + payload


@dataclass
class StormResult:
    sites: int  # how many completed a handshake
    sim_seconds: float  # virtual time from the first packet until every site had a session
    gateway_cpu_seconds: float  # wall time spent inside the gateway Device's calls
    rounds: int  # delivery rounds
    gateway_drops: dict[str, int] = field(default_factory=dict)


class Sites:
    """See the module docstring."""

    def __init__(self, n: int, *, seed: int = 1, batch: int = 256, charge_cpu: bool = False) -> None:
        rnd = random.Random(seed)
        self.n = n
        self.batch = batch
        self.charge_cpu = charge_cpu
        self.now = 100.0
        self.wall0 = 1_700_000_000.0
        self.gateway_key = rnd.randbytes(32)
        self.site_keys = [rnd.randbytes(32) for _ in range(n)]
        self.site_pubs = [public_key(k) for k in self.site_keys]
        self._seed = seed
        self.gateway_cpu = 0.0
        self.gateway_packets = 0
        self.gateway = self._new_gateway()
        self.sites: list[Device] = []
        self.by_addr: dict[tuple[str, int], int] = {}
        gw_pub = self.gateway.public_key
        for i, key in enumerate(self.site_keys):
            d = Device(key, wall_clock=self._wall, rng=random.Random(seed * 100_003 + i).randbytes)
            d.add_peer(PeerConfig(gw_pub, allowed_ips=(f"{GATEWAY_TUNNEL}/128",), endpoint=GATEWAY_ADDR))
            self.sites.append(d)
            self.by_addr[site_addr(i)] = i
        self._dirty: set[int] = set()  # sites that may have output or a new deadline
        self._events_from: set[int] = set()  # sites that may have events
        self._heap: list[tuple[float, int]] = []  # (deadline, site), lazily corrected
        self._filed: dict[int, float] = {}  # site -> the deadline its live heap entry holds

    def _wall(self) -> float:
        return self.wall0 + self.now

    def gateway_peer(self, i: int) -> PeerConfig:
        return PeerConfig(self.site_pubs[i], allowed_ips=(f"{site_tunnel(i)}/128",))

    def _new_gateway(self) -> Device:
        gw = Device(self.gateway_key, wall_clock=self._wall, rng=random.Random(self._seed + 7).randbytes)
        for i in range(self.n):
            gw.add_peer(self.gateway_peer(i))
        return gw

    def restart_gateway(self) -> None:
        """The gateway process restarts: same key and peers, no sessions; sites still hold their old ones."""
        self.gateway = self._new_gateway()

    def _gw_call(self, fn: Callable[..., object], *args: object) -> None:
        t0 = time.perf_counter()
        fn(*args)
        dt = time.perf_counter() - t0
        self.gateway_cpu += dt
        if self.charge_cpu:
            self.now += dt

    def _touch(self, i: int) -> None:
        self._dirty.add(i)

    def _file_deadlines(self, touched: set[int]) -> None:
        """Keep the heap of site deadlines current for the sites just touched (lazy: stale entries skipped)."""
        for i in touched:
            dl = self.sites[i].next_deadline()
            if dl is not None and self._filed.get(i) != dl:
                self._filed[i] = dl
                heapq.heappush(self._heap, (dl, i))

    def deliver(self) -> int:
        """Move every queued datagram once (sites -> gateway in batches, gateway -> sites); returns how many."""
        moved = 0
        to_gw: list[tuple[bytes, tuple[str, int]]] = []
        dirty, self._dirty = self._dirty, set()
        for i in dirty:
            src = site_addr(i)
            for dg, dst in self.sites[i].take_datagrams():
                if dst == GATEWAY_ADDR:
                    to_gw.append((dg, src))
        for k in range(0, len(to_gw), self.batch):
            self._gw_call(self.gateway.receive_datagrams, to_gw[k:k + self.batch], self.now)
        moved += len(to_gw)
        for dg, dst in self.gateway.take_datagrams():
            site = self.by_addr.get(dst)
            if site is not None:
                self.sites[site].receive_datagram(dg, GATEWAY_ADDR, self.now)
                self._dirty.add(site)
                moved += 1
        self._events_from |= dirty | self._dirty
        self._file_deadlines(dirty | self._dirty)
        return moved

    def next_deadline(self) -> float | None:
        """The earliest deadline of the gateway and every site."""
        heap = self._heap
        while heap and self._filed.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        dls = [d for d in (self.gateway.next_deadline(), heap[0][0] if heap else None) if d is not None]
        return min(dls) if dls else None

    def run_timers(self) -> None:
        """Run the timers of the gateway and of every site that are due."""
        dl = self.gateway.next_deadline()
        if dl is not None and dl <= self.now:
            self._gw_call(self.gateway.handle_timer, self.now)
        heap = self._heap
        due = set()
        while heap and heap[0][0] <= self.now:
            t, i = heapq.heappop(heap)
            if self._filed.get(i) == t:
                del self._filed[i]
                due.add(i)
        for i in due:
            self.sites[i].handle_timer(self.now)
        self._dirty |= due
        self._file_deadlines(due)

    def send_from(self, i: int, payload: bytes) -> None:
        """Site i sends one packet to the gateway's tunnel address."""
        self.sites[i].send_packet(ip6_packet(site_tunnel(i), GATEWAY_TUNNEL, payload), self.now)
        self._dirty.add(i)
        self._events_from.add(i)
        self._file_deadlines({i})

    def send_from_sites(self, payload: bytes = b"hello") -> None:
        """Every site sends one packet to the gateway's tunnel address (a handshake first if it has no session)."""
        for i, d in enumerate(self.sites):
            d.send_packet(ip6_packet(site_tunnel(i), GATEWAY_TUNNEL, payload), self.now)
        every = set(range(self.n))
        self._dirty |= every
        self._events_from |= every
        self._file_deadlines(every)

    def run_until(self, done: Callable[[], bool], limit: float) -> int:
        """Deliver and run timers, jumping the clock from deadline to deadline, until done() or `limit` virtual
        seconds passed; returns the number of rounds."""
        rounds = 0
        end = self.now + limit
        while not done() and self.now < end:
            rounds += 1
            if self.deliver():
                self.run_timers()
                continue
            dl = self.next_deadline()
            if dl is None:
                break
            self.now = max(self.now, min(dl, end))
            self.run_timers()
        return rounds

    def storm(self, limit: float = 300.0) -> StormResult:
        """Every site sends a packet at the same moment; run until every site has completed a new handshake with
        the gateway (after `restart_gateway` the sites first notice, by the timers, that nobody answers)."""
        done_sites: set[int] = set()
        cpu0, t0, rounds0 = self.gateway_cpu, self.now, 0
        self.send_from_sites()

        def done() -> bool:
            seen, self._events_from = self._events_from, set()
            for i in seen:
                if any(isinstance(e, HandshakeComplete) for e in self.sites[i].take_events()):
                    done_sites.add(i)
            return len(done_sites) == self.n

        rounds = self.run_until(done, limit) + rounds0
        self.gateway_packets += len(self.gateway.take_packets())
        return StormResult(len(done_sites), round(self.now - t0, 3) if done() else float("inf"),
                           self.gateway_cpu - cpu0, rounds, dict(self.gateway.drops))

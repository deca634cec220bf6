"""`wiregate bench scale`: one gateway with 1,000 sites in the built-in WireGuard, sans-I/O (in this process).

* Restart storm: 1,000 site Devices hold sessions with a gateway Device that restarts (same key and peers, no
  sessions); the sites notice by their timers (15 s + jitter without an answer) and all initiate at once. Time is
  virtual: it jumps to the next deadline when nothing is in flight and advances by the gateway's own CPU time in
  each call (`wiregate.testing.wgsites`), so the figure is "time until every site has a session again" when the
  network costs nothing and the gateway's one core is the bottleneck. Reported with the gateway's CPU seconds.
* Memory per site: resident memory of a gateway Device in a fresh child process, with N peers configured, then
  with a keypair each (what a completed handshake leaves), divided by N (this includes what Python's tracer cannot
  see: the AEAD contexts in OpenSSL).
* Per-packet cost at 1 and 1,000 peers: batches of 64 data packets (1,392 bytes) sent and received by the gateway,
  each batch followed by `next_deadline()` as the interface loop does; at 1,000 peers once with one busy site and
  once with the batches going round-robin over all 1,000 sites. The ratios should be near 1.0.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import random
import statistics
import time
from typing import Any

from wiregate.testing.wgsites import GATEWAY_ADDR, GATEWAY_TUNNEL, Sites, ip6_packet, site_addr, site_tunnel
from wiregate.wireguard.device import Device, PeerConfig
from wiregate.wireguard.keys import public_key
from wiregate.wireguard.session import Keypair

SITES = 1000
BATCH = 64
PAYLOAD = 1392 - 40


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _memory_child(n: int, q: Any) -> None:
    rnd = random.Random(9)
    keys = [public_key(rnd.randbytes(32)) for _ in range(n)]
    configs = [PeerConfig(k, allowed_ips=(f"{site_tunnel(i)}/128",)) for i, k in enumerate(keys)]
    gc.collect()
    r0 = _rss()
    gw = Device(rnd.randbytes(32), rng=rnd.randbytes)
    for cfg in configs:
        gw.add_peer(cfg)
    gc.collect()
    r1 = _rss()
    for i, peer in enumerate(gw.peers.values()):  # what a completed handshake leaves: a keypair in the index
        kp = Keypair(rnd.randbytes(32), rnd.randbytes(32), created=0.0, is_initiator=False, local_index=i + 1,
                     remote_index=i + 1, peer=peer)
        peer.keypairs.install(kp)
        gw._kp_index[kp.local_index] = kp
    gc.collect()
    r2 = _rss()
    q.put({"sites": n, "rss_configured_bytes_per_site": round((r1 - r0) / n),
           "rss_with_session_bytes_per_site": round((r2 - r0) / n)})


def memory_per_site(n: int = SITES) -> dict[str, Any]:
    """RSS growth of a gateway Device per site, measured in a fresh child process (see the module docstring)."""
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: freed memory of earlier steps would hide growth
    q = ctx.Queue()
    p = ctx.Process(target=_memory_child, args=(n, q))
    p.start()
    try:
        out = q.get(timeout=600)
    finally:
        p.join(30)
    return out


def storm(n: int = SITES) -> dict[str, Any]:
    """First handshakes of n sites at once, then again after a gateway restart (virtual time, CPU charged)."""
    t0 = time.perf_counter()
    sim = Sites(n, charge_cpu=True)
    build = time.perf_counter() - t0
    first = sim.storm(limit=600)
    sim.deliver()
    sim.restart_gateway()
    again = sim.storm(limit=600)
    return {
        "sites": n,
        "first_all_handshaken_s": first.sim_seconds,
        "first_gateway_cpu_s": round(first.gateway_cpu_seconds, 3),
        "first_completed": first.sites,
        # from the moment every site sends again: includes the 15 s (+ jitter) before they notice the restart
        "restart_all_handshaken_s": again.sim_seconds,
        "restart_gateway_cpu_s": round(again.gateway_cpu_seconds, 3),
        "restart_completed": again.sites,
        "restart_gateway_counters": {k: v for k, v in again.gateway_drops.items()
                                     if k in ("cookie_sent", "cookie_budget", "handshake_queue_full",
                                              "ratelimited", "unknown_index")},
        "build_s": round(build, 2),
    }


def _per_packet(sim: Sites, rounds: int, round_robin: bool) -> tuple[float, float]:
    """(us per packet sent, us per packet received) by the gateway, median over rounds of BATCH packets."""
    gw = sim.gateway
    gw.take_packets()
    n = sim.n
    send_t, recv_t = [], []
    payload_up, payload_down = b"u" * PAYLOAD, b"d" * PAYLOAD
    for r in range(rounds):
        i = (r * 7919) % n if round_robin else 0
        site = sim.sites[i]
        site.send_packets([ip6_packet(site_tunnel(i), GATEWAY_TUNNEL, payload_up)] * BATCH, sim.now)
        up = [(dg, site_addr(i)) for dg, _ in site.take_datagrams()]
        down = [ip6_packet(GATEWAY_TUNNEL, site_tunnel(i), payload_down)] * BATCH
        t0 = time.perf_counter()
        gw.receive_datagrams(up, sim.now)
        gw.next_deadline()
        t1 = time.perf_counter()
        gw.send_packets(down, sim.now)
        gw.next_deadline()
        t2 = time.perf_counter()
        if len(gw.take_packets()) != BATCH:
            raise RuntimeError("bench scale: the gateway lost packets")
        for dg, _ in gw.take_datagrams():
            site.receive_datagram(dg, GATEWAY_ADDR, sim.now)
        site.take_packets()
        recv_t.append((t1 - t0) / BATCH)
        send_t.append((t2 - t1) / BATCH)
    return statistics.median(send_t) * 1e6, statistics.median(recv_t) * 1e6


def per_packet(n: int, rounds: int) -> dict[str, Any]:
    """Per-packet cost at 1 and at n peers (one busy site; and round-robin over all n)."""
    one = Sites(1, seed=3)
    one.storm(limit=60)
    one.deliver()
    many = Sites(n, seed=4)
    many.storm(limit=600)
    many.deliver()
    for sim in (one, many):  # every peer's short timers run out first, as on a gateway that has been up a while
        sim.run_until(lambda: False, 30.0)
    s1, r1 = _per_packet(one, rounds, False)
    sn, rn = _per_packet(many, rounds, False)
    sr, rr = _per_packet(many, rounds, True)
    return {
        "batch_packets": BATCH, "rounds": rounds,
        "send_us_per_packet_1_peer": round(s1, 3), "receive_us_per_packet_1_peer": round(r1, 3),
        f"send_us_per_packet_{n}_peers": round(sn, 3), f"receive_us_per_packet_{n}_peers": round(rn, 3),
        f"send_us_per_packet_{n}_peers_round_robin": round(sr, 3),
        f"receive_us_per_packet_{n}_peers_round_robin": round(rr, 3),
        "send_ratio": round(sn / s1, 3), "receive_ratio": round(rn / r1, 3),
        "send_ratio_round_robin": round(sr / s1, 3), "receive_ratio_round_robin": round(rr / r1, 3),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The `scale` section of the results file (see the module docstring)."""
    quick = bool(getattr(args, "quick", False))
    out: dict[str, Any] = {"quick": quick}
    out["storm"] = storm(SITES)
    out["memory"] = memory_per_site(SITES)
    out["per_packet"] = per_packet(SITES, 200 if quick else 2000)
    return out

"""Many peers on one Device (issue 15): 1,000 simulated sites handshake after a gateway restart, the per-batch
cost of timers does not grow with the peer count (counted in executed lines with a fake clock, not timed), and a
reload that adds and removes peers leaves the sessions of the others alone."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import wiregate.wireguard
from wiregate.testing.wgsites import GATEWAY_ADDR, GATEWAY_TUNNEL, PeerConfig, Sites, ip6_packet, site_addr, site_tunnel
from wiregate.wireguard.timers import TimerQueue

SITES = 1000
_CORE = str(Path(wiregate.wireguard.__file__).parent)


@pytest.fixture(scope="module")
def sites() -> Sites:
    """1,000 sites, each with a session to the gateway (one storm of first handshakes)."""
    sim = Sites(SITES)
    first = sim.storm(limit=120)
    assert first.sites == SITES
    return sim


def test_1000_sites_all_handshake_again_after_a_gateway_restart(sites: Sites) -> None:
    sites.restart_gateway()  # same key and peers, no sessions: the sites' data goes unanswered
    result = sites.storm(limit=200)
    assert result.sites == SITES
    # nobody answers for KEEPALIVE_TIMEOUT + REKEY_TIMEOUT (15 s + jitter), then the initiations arrive at once:
    # the gateway goes under load, answers cookies within its budget, and the retries (5 s) carry MAC2
    assert result.sim_seconds < 60, result
    sites.deliver()  # the last sites' key-confirming keepalives
    gw = sites.gateway
    assert sum(1 for p in gw.peers.values() if p.last_handshake is not None) == SITES
    # every site's data gets through the new sessions
    sites.send_from_sites(b"after")
    sites.deliver()
    got = gw.take_packets()
    assert len(got) == SITES and all(pkt.endswith(b"after") for pkt in got)


class _LineCounter:
    """Counts executed lines of the WireGuard core (src/wiregate/wireguard/*.py): an operation count that does not
    depend on the machine's speed."""

    def __init__(self) -> None:
        self.lines = 0

    def _trace(self, frame, event, arg):  # type: ignore[no-untyped-def]
        if not frame.f_code.co_filename.startswith(_CORE):
            return None
        if event == "line":
            self.lines += 1
        return self._trace

    def __enter__(self) -> "_LineCounter":
        sys.settrace(self._trace)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.settrace(None)


def _lines_per_batch(sim: Sites, batches: int) -> float:
    """Site 0 and the gateway exchange data, one batch each way per second of fake time, as the interface loop
    drives the gateway: receive, send, then next_deadline() and handle_timer() when due. Counts the gateway's
    lines per round once the other peers are idle (their next deadline minutes away)."""
    sim.run_until(lambda: False, 60.0)  # every other peer's short timers run out; only long deadlines remain
    gw, site = sim.gateway, sim.sites[0]
    gw.take_packets()
    site.take_packets()
    counter = _LineCounter()
    for _ in range(batches):
        sim.now += 1.0
        site.send_packets([ip6_packet(site_tunnel(0), GATEWAY_TUNNEL, b"x" * 100)] * 8, sim.now)
        up = [(dg, site_addr(0)) for dg, _ in site.take_datagrams()]
        with counter:
            gw.receive_datagrams(up, sim.now)
            gw.next_deadline()
            gw.send_packets([ip6_packet(GATEWAY_TUNNEL, site_tunnel(0), b"y" * 100)] * 8, sim.now)
            dl = gw.next_deadline()
            if dl is not None and dl <= sim.now:
                gw.handle_timer(sim.now)
            gw.next_deadline()
        assert len(gw.take_packets()) == 8
        for dg, _ in gw.take_datagrams():
            site.receive_datagram(dg, GATEWAY_ADDR, sim.now)
        assert len(site.take_packets()) == 8
        dl = site.next_deadline()
        if dl is not None and dl <= sim.now:
            site.handle_timer(sim.now)
    return counter.lines / batches


def test_timer_cost_per_batch_does_not_grow_with_the_peer_count(sites: Sites) -> None:
    one = Sites(1, seed=5)
    assert one.storm(limit=60).sites == 1
    small = _lines_per_batch(one, 40)
    large = _lines_per_batch(sites, 40)
    # the old next_deadline() scanned all five deadlines of every peer after each batch: ~6,000 lines at 1,000
    # peers against ~10 at one
    assert large <= small * 1.2 + 10, (small, large)


def test_timer_queue_wakes_only_due_peers_and_drops_cancelled_entries() -> None:
    class P:
        def __init__(self) -> None:
            self.timer_at = float("inf")
            self.t_retransmit_handshake = self.t_send_keepalive = self.t_new_handshake = None
            self.t_zero_key_material = self.t_persistent_keepalive = None

    q = TimerQueue()
    peers = [P() for _ in range(1000)]
    for i, p in enumerate(peers):
        p.t_zero_key_material = 1000.0 + i
        q.arm(p, p.t_zero_key_material)
    for _ in range(100):  # the data path pushes a later deadline on every batch: no new heap entry
        peers[0].t_persistent_keepalive = 2000.0
        q.arm(peers[0], 2000.0)
    assert len(q) == 1000
    peers[1].t_zero_key_material = None  # cancelled: skipped lazily
    peers[2].t_send_keepalive = 5.0  # earlier: a new entry
    q.arm(peers[2], 5.0)
    assert q.peek() == 5.0
    assert q.pop_due(1001.5) == [peers[2], peers[0]]
    q.forget(peers[3])
    assert q.peek() == 1004.0  # peers 1 (cancelled) and 3 (gone) were dropped on the way
    ops = q.ops
    for _ in range(100):
        q.peek()
    assert q.ops - ops == 100  # one look at the top per call once it is clean


def test_reload_of_1000_peers_adds_and_removes_without_touching_the_others(sites: Sites) -> None:
    gw = sites.gateway
    sites.deliver()  # the last key-confirming keepalives (when run alone)
    assert all(p.keypairs.current is not None for p in gw.peers.values())
    gw.take_packets()
    before = {k: (p, p.keypairs.current, p.rx_bytes) for k, p in gw.peers.items()}
    keep = [sites.gateway_peer(i) for i in range(10, SITES)]
    changed = PeerConfig(sites.site_pubs[10], allowed_ips=(f"{site_tunnel(10)}/128", "fd00:d::/64"))
    newcomers = [PeerConfig(bytes([i]) * 32, allowed_ips=(f"fd00:e::{i}/128",)) for i in range(1, 6)]
    gw.sync_peers([changed, *keep[1:], *newcomers])
    assert len(gw.peers) == SITES - 10 + 5
    for i in range(10):  # removed: no routes, no sessions
        assert sites.site_pubs[i] not in gw.peers
        assert gw.lookup_route(site_tunnel(i)) is None
    for i in range(10, SITES):
        peer = gw.peers[sites.site_pubs[i]]
        was, kp, rx = before[sites.site_pubs[i]]
        assert peer is was and peer.keypairs.current is kp and peer.rx_bytes == rx
    assert gw.lookup_route("fd00:d::9") is gw.peers[sites.site_pubs[10]]
    assert all(gw.peers[c.public_key].keypairs.current is None for c in newcomers)
    # sessions still carry data both ways, with no new handshake
    for i in (10, 500, SITES - 1):
        sites.send_from(i, b"still")
    sites.deliver()
    assert len(gw.take_packets()) == 3 and not gw.take_datagrams()
    # a bad config in the list changes nothing
    before_keys = set(gw.peers)
    with pytest.raises(Exception, match="PresharedKey"):
        gw.sync_peers([PeerConfig(sites.site_pubs[20], preshared_key=b"short")])
    assert set(gw.peers) == before_keys

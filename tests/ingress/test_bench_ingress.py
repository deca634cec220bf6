"""`wiregate bench ingress` runs what it says: nginx `stream`, Traefik v3 and the ingress each behind the same
HAProxy (`send-proxy-v2`), each carrying short connections to the same backend; percall reads strace's table."""

from __future__ import annotations

import pytest

from wiregate.bench import ingress as bench
from wiregate.bench.percall import parse_strace
from wiregate.testing.peers import need

pytestmark = [pytest.mark.peer, pytest.mark.timeout(120)]


def test_every_target_carries_short_connections_through_its_proxy_protocol_listener(tmp_path):
    need("haproxy", "nginx", "iperf3", "wrk")
    try:
        bench.traefik_binary()
    except Exception as exc:  # noqa: BLE001 - the message says what is missing
        pytest.skip(str(exc))
    with bench.Peers(tmp_path) as lab:  # waits until a request through each target is answered 200
        for t in bench.TARGETS:
            w = bench.wrk(lab.ports[f"hap_{t}_http"], 1, 4)
            assert w["rate"] > 20 and w["errors"] == 0, (t, w)
            assert 0 < w["p50_ms"] <= w["p99_ms"], (t, w)
            assert lab.pid(t) > 0
        # the proxies under test are the ones that read PROXY v2: Traefik's entrypoints trust HAProxy's address only
        static = (tmp_path / "traefik.toml").read_text()
        assert static.count('trustedIPs = ["127.0.0.1/32"]') == 2
        assert "proxy_protocol" in (tmp_path / "nginx" / "nginx.conf").read_text()
        assert lab.ingress.log().count("refused") == 0


def test_percall_reads_the_counts_of_strace_c():
    text = """% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 40.00    0.004000           1      4000           splice
 30.00    0.003000           1      2000       100 accept4
------ ----------- ----------- --------- --------- ----------------
100.00    0.007000           1      6000       100 total
"""
    assert parse_strace(text) == {"splice": 4000, "accept4": 2000}

"""`wiregate bench relay` compares like with like: same cores, all relay processes counted, working paths."""

from __future__ import annotations

import subprocess

import pytest

from wiregate.bench import relay as bench
from wiregate.relay import config_from_dict
from wiregate.testing.peers import need, which

pytestmark = [pytest.mark.peer, pytest.mark.timeout(90)]


@pytest.fixture
def lab(tmp_path, many_files):
    need("haproxy", "nginx", "iperf3", "wrk")
    lab = bench.Lab(tmp_path, quick=True)
    try:
        lab.start(2)
        yield lab
    finally:
        lab.close()


def test_bench_runs_haproxy_and_the_relay_on_the_same_cores_and_counts_every_relay_process(lab):
    setup = bench.relay_setup(lab)
    # HAProxy's config validates and asks for as many threads as the relay has worker processes
    cfg = (lab.dir / "haproxy_default.cfg").read_text()
    assert "nbthread 2" in cfg and "option splice" in (lab.dir / "haproxy_splice.cfg").read_text()
    r = subprocess.run([which("haproxy"), "-c", "-f", str(lab.dir / "haproxy_splice.cfg")], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert config_from_dict(bench.relay_config(lab.ports["relay"], lab, 2)).workers == 2
    assert setup["haproxy_nbthread"] == setup["relay_worker_processes"] == 2
    assert setup["relay_processes_counted_for_memory"] == 3  # supervisor + both workers
    assert setup["relay_event_loop"] == ["uvloop"] and setup["relay_data_path"] == ["splice"]

    # the memory probe really holds connections through each proxy and sees the relay's RSS grow
    for name in ("relay", "haproxy_default"):
        mem = bench.idle_memory(lab, name, 500)
        assert mem["rss_after_mb"] > mem["rss_before_mb"] > 1
        assert 0 < mem["kb_per_conn"] < 64

    # short connections through the relay reach nginx (PROXY v2 parsed there) without errors
    w = bench.wrk(lab.ports["relay"]["web"], 1, 10, 1)
    assert w["conn_per_s"] > 100 and w["errors"] == 0 and w["non_2xx"] == 0

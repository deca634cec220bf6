"""Health checks arriving at a wiregate home (issue 10 defect 6), with the defaults `init` / `join` write: the
gateway's checks of every service (PROXY LOCAL header, then close) are counted as health checks, in status and
metrics, and are neither logged nor counted as client traffic, nor as refusals. HAProxy's `check-send-proxy`
checks (LOCAL, then a reset) are tested with the real HAProxy in test_export_run.py."""

from __future__ import annotations

import re
import sys

import pytest

from wiregate.testing.system import CLIENT_IP, GATEWAY_TUNNEL_IP, SystemLab, client_requests, wait_for

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]


def test_gateway_health_checks_are_counted_as_such_at_home_and_never_as_clients(lab, tmp_path):
    sl = SystemLab(lab, tmp_path / "sys")
    sl.pair()
    sl.add_sample_services()
    sl.start_samples()
    sl.start_gateway()
    sl.start_home()
    tcp = ("https", "http", "echo")  # echo is a raw TCP listener: no sniffing, one default route
    wait_for(lambda: all(sl.status("home")["ingress"][n]["health_checks"] >= 2 for n in tcp), 20, 0.5)
    st = sl.status("home")["ingress"]
    assert {n: (st[n]["accepted"], st[n]["refused"]) for n in tcp} == dict.fromkeys(tcp, (0, {}))
    log = sl.log_tail("home", 200000)
    assert f"client {GATEWAY_TUNNEL_IP}" not in log
    assert [line for line in log.splitlines() if " WARNING wiregate.ingress" in line
            and "configured limits" not in line] == []  # (the start-up descriptor-budget note is not noise)
    r = sl.home.run([sys.executable, "-c", "import urllib.request; print(urllib.request.urlopen("
                     "'http://127.0.0.1:9852/metrics', timeout=10).read().decode())"])
    m = re.search(r'^wiregate_listener_events_total\{event="health_check",listener="echo"\} (\S+)$', r.stdout, re.M)
    assert m and float(m.group(1)) >= 2, r.stdout
    # client traffic is still client traffic, with the client's own address
    assert client_requests(sl, "echo")["echo"].startswith(f"echo client {CLIENT_IP}:")
    assert sl.status("home")["ingress"]["echo"]["accepted"] == 1
    assert f"client {CLIENT_IP}:" in sl.log_tail("home", 200000)

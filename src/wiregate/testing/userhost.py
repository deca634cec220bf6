"""Hosts as a user has them: `wiregate` run with the files `init` / `site add` / `join` write, defaults untouched.

    with Lab("g") as lab:
        vps = UserHost.make(lab, "v", tmp_path)        # a namespace with its own /run
        vps.cli("init", "gateway", "--endpoint", "vps.example.net", "--config-dir", str(d))
        proc = vps.start_node(d / "gateway.toml")       # `wiregate run FILE`, waits for READY=1
        vps.cli("status")                               # finds /run/wiregate/gateway.ctl as a user's would

A default file puts the control socket in /run/wiregate/NAME.ctl and the UAPI socket in /run/wireguard/IF.sock.
Each UserHost binds a temp dir over /run in a mount namespace of its own (inside its network namespace), so those
paths belong to that host alone, as on two real machines: nothing meets another test's nodes or this machine's.
Processes are the Lab's (ended by PID when it closes).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from wiregate.demo.system import start_ready
from wiregate.testing.netns import Lab, Netns

# the binds happen inside the new mount namespace only; "$0" is the host's /run directory
_PRIVATE_RUN = 'mount --bind "$0" /run && exec "$@"'


def wiregate_argv() -> list[str]:
    """The `wiregate` console script of this installation (what a user runs), else `python -m wiregate`."""
    beside = Path(sys.executable).parent / "wiregate"
    return [str(beside)] if beside.exists() else [sys.executable, "-m", "wiregate"]


@dataclass
class UserHost:
    lab: Lab
    ns: Netns
    run_dir: Path
    env: dict[str, str]

    @classmethod
    def make(cls, lab: Lab, name: str, workdir: Path, env: dict[str, str] | None = None) -> UserHost:
        run_dir = Path(workdir) / f"run-{name}"
        run_dir.mkdir(parents=True, exist_ok=True)
        return cls(lab, lab.netns(name), run_dir, dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})))

    def cmd(self, argv: list[str]) -> list[str]:
        """argv run in this host's network namespace with this host's /run."""
        return self.ns.cmd(["unshare", "--mount", "sh", "-c", _PRIVATE_RUN, str(self.run_dir), *argv])

    def run(self, argv: list[str], timeout: float = 30, **kw) -> subprocess.CompletedProcess:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(self.cmd(argv), timeout=timeout, check=False, env=self.env, **kw)

    def cli(self, *args: str, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
        """`wiregate ARGS...` on this host."""
        return self.run([*wiregate_argv(), *args], timeout=timeout, **kw)

    def spawn(self, argv: list[str], **kw) -> subprocess.Popen:
        kw.setdefault("env", self.env)
        return self.lab.spawn(None, self.cmd(argv), **kw)

    def start_node(self, path: Path, log: Path, *args: str, timeout: float = 30.0) -> subprocess.Popen:
        """`wiregate run [ARGS] FILE` in the background (output to `log`); returns once it sent READY=1."""
        def spawn(note: str) -> subprocess.Popen:
            with open(log, "ab") as out:
                return self.spawn([*wiregate_argv(), "run", *args, str(path)], stdout=out, stderr=subprocess.STDOUT,
                                  env=dict(self.env, NOTIFY_SOCKET=note))
        return start_ready(spawn, log.with_suffix(".notify"), f"wiregate run {path}", log, timeout)

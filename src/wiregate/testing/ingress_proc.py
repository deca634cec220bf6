"""An ingress in its own process (`python -m wiregate.ingress`), for peer tests and the benchmark.

    with IngressProcess(config_dict, workdir) as ing:   # waits until every TCP listener is in LISTEN
        ...; ing.log()                                  # what it logged so far; ended by PID on exit
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import BinaryIO

from wiregate import hostport
from wiregate.testing.haproxy_pp import wait_listening
from wiregate.testing.peers import stop


class IngressProcess:
    """`python -m wiregate.ingress --config <workdir>/ingress.json`, stopped by PID."""

    def __init__(self, config: dict, workdir: Path, log_level: str = "INFO", timeout: float = 10.0,
                 nofile: int | None = None, prefix: tuple[str, ...] = ()) -> None:
        """`nofile`: run with RLIMIT_NOFILE soft = hard = nofile; `prefix`: argv prefix (e.g. `ip netns exec NS`),
        in which case TCP listeners are not waited for (they are not reachable from here)."""
        self.config = config
        self.nofile = nofile
        self.prefix = tuple(prefix)
        self.dir = Path(workdir)
        self.log_level = log_level
        self.timeout = timeout
        self.path = self.dir / "ingress.json"
        self.log_path = self.dir / "ingress.log"
        self.proc: subprocess.Popen | None = None
        self._log: BinaryIO | None = None

    def __enter__(self) -> IngressProcess:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.config))
        self._log = self.log_path.open("wb")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        limit = self.nofile

        def lower_nofile() -> None:
            if limit is not None:
                import resource
                resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

        self.proc = subprocess.Popen([*self.prefix, sys.executable, "-m", "wiregate.ingress", "--config",
                                      str(self.path), "--log-level", self.log_level, "--drain", "2"],
                                     stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                     preexec_fn=lower_nofile if limit is not None else None)
        try:
            for lst in self.config["listeners"]:
                if lst.get("protocol", "tcp") == "tcp" and not self.prefix:
                    wait_listening(*hostport.parse(lst["listen"], names=False, allow_port_zero=True), self.timeout,
                                   self.proc)
        except BaseException:
            self.__exit__()
            raise
        return self

    def log(self) -> str:
        """Everything the ingress logged so far."""
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 5.0) -> str:
        """Wait until `text` appears in the log; returns the log (AssertionError with the log when it does not)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.log()
            if text in out:
                return out
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not logged in {timeout}s; log:\n{self.log()}")

    def reload(self, config: dict) -> None:
        """Rewrite the file and send SIGHUP."""
        self.config = config
        self.path.write_text(json.dumps(config))
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def __exit__(self, *exc) -> None:
        stop(self.proc)
        if self._log is not None and not self._log.closed:
            self._log.close()

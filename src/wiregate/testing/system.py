"""The whole system in three network namespaces, for the end-to-end tests: wiregate.demo.system (what `wiregate
demo` runs), plus the home tunnel as Debian's wireguard-go for home_mode="external".

    with Lab("e") as lab:
        sl = SystemLab(lab, workdir)
        sl.pair()                          # init gateway -> site add -> join, as a user would
        sl.add_sample_services()           # gateway [[services]] + home [[listeners]] + sample servers at home
        sl.start_gateway(); sl.start_home()
        sl.client.run([...])               # requests from the client namespace to the VPS's public address
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

from wiregate.demo import system as _demo
from wiregate.demo.system import CLIENT_IP as CLIENT_IP
from wiregate.demo.system import CLIENT_REQUESTS as CLIENT_REQUESTS
from wiregate.demo.system import GATEWAY_NAME as GATEWAY_NAME
from wiregate.demo.system import GATEWAY_SERVICES as GATEWAY_SERVICES
from wiregate.demo.system import GATEWAY_TUNNEL_IP as GATEWAY_TUNNEL_IP
from wiregate.demo.system import HOME_IP as HOME_IP
from wiregate.demo.system import HOME_LISTENERS as HOME_LISTENERS
from wiregate.demo.system import HOME_TUNNEL_IP as HOME_TUNNEL_IP
from wiregate.demo.system import SAMPLE_NAMES as SAMPLE_NAMES
from wiregate.demo.system import VPS_IP as VPS_IP
from wiregate.demo.system import VPS_PUBLIC_IP as VPS_PUBLIC_IP
from wiregate.demo.system import WG_PORT as WG_PORT
from wiregate.demo.system import client_requests as client_requests
from wiregate.demo.system import wait_for as wait_for
from wiregate.testing.peers import program, stop
from wiregate.testing.wgnet import WG_GO_ENV


class SystemLab(_demo.SystemLab):
    """The demo's SystemLab; with home_mode="external", start_home() first starts wireguard-go at home."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.wggo_proc: subprocess.Popen | None = None

    def start_home(self, timeout: float = 30.0) -> None:
        if self.home_mode == "external" and self.wggo_proc is None:
            self.start_wireguard_go_home()
        super().start_home(timeout)

    def stop_gateway(self) -> None:
        stop(self.gateway_proc)
        self.gateway_proc = None

    def stop_home(self) -> None:
        stop(self.home_proc)
        self.home_proc = None

    def start_wireguard_go_home(self, timeout: float = 10.0) -> None:
        """The home tunnel as Debian's wireguard-go, configured from `wiregate export wg-quick` + `wg-quick strip`
        (what a user of `external` mode runs); wiregate then only runs the ingress."""
        from wiregate.config import load
        from wiregate.config.export import wg_quick

        exe = program("wireguard-go")
        log = open(self.dir / "wireguard-go.log", "ab")
        try:
            self.wggo_proc = self.lab.spawn(self.home, ["env", *(f"{k}={v}" for k, v in WG_GO_ENV.items()), exe,
                                                        "-f", self.home_if], stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        sock = Path(f"/var/run/wireguard/{self.home_if}.sock")
        deadline = time.monotonic() + timeout
        while not sock.exists():
            if self.wggo_proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"wireguard-go did not start: {(self.dir / 'wireguard-go.log').read_text()}")
            time.sleep(0.02)
        cfg = load(self.home_file)
        conf = self.dir / f"{self.home_if}.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            text = wg_quick(cfg)[f"{cfg.tunnel.interface}.conf"]
            # wg(8) cannot resolve through our override file: give it the address the name has now
            f.write(text.replace(f"Endpoint = {GATEWAY_NAME}", f"Endpoint = {self._hosts_ip()}"))
        stripped = subprocess.run([program("wg-quick"), "strip", str(conf)], capture_output=True, text=True,
                                  check=True).stdout
        sconf = self.dir / f"{self.home_if}.stripped"
        fd = os.open(sconf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(stripped)
        self.home.run([program("wg"), "setconf", self.home_if, str(sconf)])
        self.home.run(["ip", "addr", "add", cfg.tunnel.address, "dev", self.home_if])
        self.home.run(["ip", "link", "set", "dev", self.home_if, "mtu", str(cfg.tunnel.mtu), "up"])

    def _hosts_ip(self) -> str:
        m = re.search(r"^(\S+)\s+" + re.escape(GATEWAY_NAME), self.hosts.read_text(), re.MULTILINE)
        return m.group(1) if m else VPS_IP

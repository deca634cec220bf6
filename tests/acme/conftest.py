"""The ACME end-to-end harness: the whole system (client/internet, VPS, home namespaces, both `wiregate run`
processes) plus pebble and its DNS in the internet namespace, every name resolving to the gateway's address."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from wiregate.testing.acme import Pebble
from wiregate.testing.peers import need
from wiregate.testing.system import CLIENT_IP, VPS_PUBLIC_IP, SystemLab, wait_for

GATEWAY = f"""
[[services]]
name = "https"
listen = ["{VPS_PUBLIC_IP}:443"]

[[services]]
name = "http"
listen = ["{VPS_PUBLIC_IP}:80"]
"""

# app: TLS-ALPN-01, terminated here, to the PROXY-reading echo service; web: HTTP-01, to the HTTP sample
HOME = """
[[listeners]]
name = "https"
listen = "tunnel:443"

[[listeners.routes]]
name = "app"
sni = ["app.example"]
target = "127.0.0.1:7007"
send_proxy = "v2"
tls = "acme"

[[listeners.routes]]
name = "web"
sni = ["web.example"]
target = "127.0.0.1:8080"
http_headers = true
tls = "acme"
acme_challenge = "http-01"

[[listeners]]
name = "http"
listen = "tunnel:80"

[[listeners.routes]]
name = "www"
host = ["web.example"]
target = "127.0.0.1:8080"
http_headers = true
"""


def acme_table(pb: Pebble) -> str:
    return f"""
[acme]
directory = "{pb.directory}"
email = "admin@example.org"
agree_tos = true
ca_bundle = "{pb.ca_bundle}"
"""


class AcmeLab:
    """SystemLab + Pebble, wired: the VPS forwards between the internet and home so home reaches the CA."""

    def __init__(self, lab, tmp: Path, *, validity: int | None = None, home: str = HOME) -> None:
        need("pebble", "pebble-challtestsrv", "curl")
        self.sl = sl = SystemLab(lab, tmp / "sys")
        # home reaches the CA over its own internet access (through the VPS namespace as its router)
        sl.vps.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        sl.home.run(["ip", "route", "add", "203.0.113.0/24", "via", "198.51.100.1"])
        sl.client.run(["ip", "route", "add", "198.51.100.0/24", "via", VPS_PUBLIC_IP])
        self.pb = Pebble(lab, sl.client, tmp / "pebble", ip=CLIENT_IP, resolve_to=VPS_PUBLIC_IP)
        self.pb.start(validity=validity)
        sl.pair()
        sl.add_sample_services(gateway_extra=GATEWAY, home_extra=home + acme_table(self.pb))
        sl.samples_proc = lab.spawn(sl.home, [sys.executable, "-m", "wiregate.testing.samples", "--http",
                                              "127.0.0.1:8080", "--echo", "127.0.0.1:7007", "--proxy"],
                                    stdout=subprocess.PIPE, text=True)
        assert sl.samples_proc.stdout.readline().strip() == "ready"
        sl.start_gateway()

    def certificates(self) -> list[dict]:
        try:
            return self.sl.status("home").get("certificates", [])
        except Exception:  # noqa: BLE001 - not up yet
            return []

    def wait_issued(self, n: int, timeout: float = 60.0, issued: int = 1) -> float:
        def done() -> bool:
            certs = self.certificates()
            return len(certs) == n and all(c["not_after"] and c["issued"] >= issued and not c["last_error"]
                                           for c in certs)
        try:
            return wait_for(done, timeout)
        except TimeoutError:
            raise AssertionError(f"not issued: {json.dumps(self.certificates())}\nhome log:\n"
                                 f"{self.sl.log_tail('home', 4000)}\npebble:\n{self.pb.log_tail()}") from None


@pytest.fixture
def acme_lab(lab, tmp_path):
    return AcmeLab(lab, tmp_path)

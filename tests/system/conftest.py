"""Helpers for the whole-system tests: sample config files written into a temp dir."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from wiregate.wireguard import keys

GW_KEY = bytes(range(1, 33))  # fixed: conftest may be imported twice (as conftest and by tests)
HOME_KEY = bytes(range(101, 133))


def write_key(path: Path, key: bytes, mode: int = 0o600) -> Path:
    path.write_text(keys.encode_key(key) + "\n")
    os.chmod(path, mode)
    return path


GATEWAY_TOML = """
role = "gateway"
name = "gw"

[tunnel]
endpoint = "vps.example.net"
address = "192.0.2.1/24"
private_key_file = "gateway.key"

[[sites]]
name = "home"
public_key = "{home_pub}"
address = "192.0.2.2"

[[services]]
name = "https"
listen = ["0.0.0.0:443", "[::]:443"]

[[services]]
name = "dns"
protocol = "udp"
listen = ["0.0.0.0:53"]
"""

HOME_TOML = """
role = "home"
name = "home"

[tunnel]
address = "192.0.2.2/24"
gateway_endpoint = "vps.example.net:51820"
gateway_public_key = "{gw_pub}"
gateway_address = "192.0.2.1"
private_key_file = "home.key"

[[listeners]]
name = "https"
listen = "tunnel:443"
default_route = "web"

[[listeners.routes]]
name = "blog"
sni = ["blog.example.org"]
target = "192.168.1.10:443"
send_proxy = "v2"

[[listeners.routes]]
name = "web"
target = "192.168.1.11:443"
send_proxy = "v1"
"""


def gateway_text() -> str:
    return GATEWAY_TOML.format(home_pub=keys.encode_key(keys.public_key(HOME_KEY)))


def home_text() -> str:
    return HOME_TOML.format(gw_pub=keys.encode_key(keys.public_key(GW_KEY)))


@pytest.fixture
def gw_file(tmp_path: Path) -> Path:
    write_key(tmp_path / "gateway.key", GW_KEY)
    p = tmp_path / "gateway.toml"
    p.write_text(gateway_text())
    return p


@pytest.fixture
def home_file(tmp_path: Path) -> Path:
    write_key(tmp_path / "home.key", HOME_KEY)
    p = tmp_path / "home.toml"
    p.write_text(home_text())
    return p


def wiregate(*args: str, **kw) -> subprocess.CompletedProcess:
    """Run the CLI in a child process (as a user would)."""
    kw.setdefault("timeout", 60)
    return subprocess.run([sys.executable, "-m", "wiregate", *args], capture_output=True, text=True, **kw)

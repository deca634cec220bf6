"""`wiregate demo`: refuses clearly without root; as root it runs the whole system and reports real addresses."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from wiregate.cli.demo import NEEDS_ROOT
from wiregate.testing.netns import can_use_netns
from wiregate.testing.peers import which


def test_demo_without_root_says_it_needs_root_and_why():
    if os.geteuid() == 0:
        if not which("setpriv"):
            pytest.skip("needs setpriv (util-linux) to drop root for this test")
        argv = [which("setpriv"), "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m",
                "wiregate", "demo"]
    else:
        argv = [sys.executable, "-m", "wiregate", "demo"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip() == NEEDS_ROOT and "Traceback" not in r.stderr


@pytest.mark.netns
@pytest.mark.timeout(120)
def test_demo_reports_the_client_address_for_every_service():
    reason = can_use_netns()
    if reason:
        pytest.skip(reason)
    before = _namespaces()
    r = subprocess.run([sys.executable, "-m", "wiregate", "demo"], capture_output=True, text=True, timeout=110)
    print(r.stdout[-4000:])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.count("203.0.113.2") >= 5 and "every service saw the real client address" in r.stdout
    # the demo removed what it made: namespaces (with their links), processes, UAPI sockets, its temp dir
    assert _namespaces() - before == set()
    workdir = re.search(r"pairing in (/\S+):", r.stdout).group(1)
    interfaces = set(re.findall(r"tunnel (wg[gh]\d+) \(builtin mode\)", r.stdout))
    assert len(interfaces) == 2
    assert not Path(workdir).exists()
    assert not [i for i in interfaces if Path(f"/var/run/wireguard/{i}.sock").exists()]
    assert not [pid for pid, cmd in _cmdlines().items() if workdir in cmd]  # no process of the demo is left
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert not [i for i in interfaces if f" {i}:" in links or f" {i}@" in links]
    took = float(re.search(r"==> done in ([0-9.]+)s", r.stdout).group(1))
    assert took < 60


def _cmdlines() -> dict[int, str]:
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                out[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                pass
    return out


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.startswith("wgtd")}

"""The descriptor limit fits the configured limits: the systemd unit sets LimitNOFILE, `check` warns when the
limits cannot fit this process's descriptor limit."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest

from tests.system.conftest import wiregate
from wiregate.config import load
from wiregate.limits import config_demand, needed, unit_nofile
from wiregate.testing.peers import which


def test_the_unit_sets_a_limit_nofile_that_fits_the_configured_limits(gw_file, tmp_path):
    r = wiregate("install-service", str(gw_file), "--unit-dir", str(tmp_path / "units"))
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "units" / "wiregate-gw.service").read_text()
    line = next(x for x in text.splitlines() if x.startswith("LimitNOFILE="))
    limit = int(line.split("=")[1])
    cfg = load(gw_file)
    assert limit == unit_nofile(cfg) and limit >= needed(*config_demand(cfg)) and limit >= 65536
    if which("systemd-analyze"):
        r = subprocess.run([which("systemd-analyze"), "verify", str(tmp_path / "units" / "wiregate-gw.service")],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("which_file", ["gw_file", "home_file"])
def test_check_warns_when_the_limits_cannot_fit_the_descriptor_limit(which_file, request):
    path = request.getfixturevalue(which_file)
    r = subprocess.run([sys.executable, "-m", "wiregate", "check", str(path)], capture_output=True, text=True,
                       timeout=60, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024)))
    assert r.returncode == 0, r.stderr  # a warning, not a refusal
    assert "ok (" in r.stdout
    [warning] = r.stderr.strip().splitlines()
    assert warning.startswith(f"{path}: warning: ") and "1024" in warning and "LimitNOFILE" in warning
    # smaller limits that fit a hard limit of 8192 (soft 1024): no warning, as `run` raises the soft one to it
    text = path.read_text()
    for table in ("[[services]]", "[[listeners]]"):
        text = text.replace(table + "\n", table + "\nmax_connections = 1000\nmax_flows = 1000\n")
    path.write_text(text)
    assert needed(*config_demand(load(path))) <= 8192
    r = subprocess.run([sys.executable, "-m", "wiregate", "check", str(path)], capture_output=True, text=True,
                       timeout=60, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 8192)))
    assert r.returncode == 0 and r.stderr == "", r.stderr

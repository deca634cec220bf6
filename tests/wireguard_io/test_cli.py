"""`wiregate genkey|pubkey|genpsk` and `wiregate wg up` as a user runs them."""

from __future__ import annotations

import base64
import subprocess
import sys

import pytest

from tests.conftest import need
from wiregate.testing.peers import which

PRIV = base64.b64encode(bytes(range(32))).decode()


def wiregate(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wiregate", *args], input=stdin, capture_output=True, text=True,
                          timeout=30)


def test_config_readable_by_others_is_refused_with_one_line(tmp_path):
    conf = tmp_path / "wg0.conf"
    conf.write_text(f"[Interface]\nPrivateKey = {PRIV}\n")
    conf.chmod(0o644)
    r = wiregate("wg", "up", str(conf))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"wiregate: error: {conf}: holds a private key but its mode is 0644; "
                                             f"run: chmod 600 {conf}"]


def test_bad_config_line_is_reported_with_file_line_and_key(tmp_path):
    conf = tmp_path / "wg0.conf"
    conf.write_text(f"[Interface]\nPrivateKey = {PRIV}\n\n[Peer]\nPublicKey = {PRIV}\nEndpoint = nowhere\n")
    conf.chmod(0o600)
    r = wiregate("wg", "up", str(conf))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith(f"wiregate: error: {conf}:6: Endpoint: ")

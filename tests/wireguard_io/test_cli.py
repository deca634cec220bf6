"""`wiregate genkey|pubkey|genpsk` and `wiregate wg up` as a user runs them."""

from __future__ import annotations

import base64
import subprocess
import sys

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


def test_genkey_pubkey_genpsk_agree_with_wg():
    need("wg")
    priv = wiregate("genkey").stdout.strip()
    assert len(base64.b64decode(priv, validate=True)) == 32
    ours = wiregate("pubkey", stdin=priv + "\n")
    theirs = subprocess.run([which("wg"), "pubkey"], input=priv + "\n", capture_output=True, text=True)
    assert ours.returncode == 0 and ours.stdout.strip() == theirs.stdout.strip()
    # and the other way round: a key made by wg
    wg_priv = subprocess.run([which("wg"), "genkey"], capture_output=True, text=True).stdout
    wg_pub = subprocess.run([which("wg"), "pubkey"], input=wg_priv, capture_output=True, text=True).stdout
    assert wiregate("pubkey", stdin=wg_priv).stdout == wg_pub
    psk1, psk2 = wiregate("genpsk").stdout.strip(), wiregate("genpsk").stdout.strip()
    assert len(base64.b64decode(psk1, validate=True)) == 32 and psk1 != psk2


def test_pubkey_of_garbage_is_one_clean_error():
    r = wiregate("pubkey", stdin="not a key\n")
    assert r.returncode == 2 and r.stderr.startswith("wiregate: error: private key on stdin: ")
    assert "Traceback" not in r.stderr and "not a key" not in r.stderr  # never echo what might be a secret


def test_genkey_writes_a_file_only_the_owner_can_read(tmp_path):
    out = tmp_path / "k"
    subprocess.run(f"{sys.executable} -m wiregate genkey > {out}", shell=True, check=True, umask=0o022)
    assert out.stat().st_mode & 0o777 == 0o600

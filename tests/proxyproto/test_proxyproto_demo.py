"""`wiregate proxy-demo` runs the round trip with a real HAProxy and says what it proved."""

import argparse
import subprocess
import sys

import pytest
from wiregate.testing.peers import need

from wiregate.cli import proxy_demo
from wiregate.proxyproto import TLV, Command, decode, encode_v2

pytestmark = pytest.mark.timeout(60)


@pytest.mark.peer
def test_proxy_demo_shows_both_directions_and_exits_zero():
    need("haproxy")
    r = subprocess.run([sys.executable, "-m", "wiregate", "proxy-demo"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "Traceback" not in out + r.stderr
    assert "byte for byte what our encoder writes for the same addresses and TLVs: yes" in out
    assert "AUTHORITY  gw.wiregate.test" in out and "(verified)" in out and "TLSv1.3" in out
    for client in ("203.0.113.7:40001", "2001:db8::7:40002", "203.0.113.7:40003", "2001:db8::7:40004"):
        assert f"HAProxy answered 200 {client}" in out
    assert "NO" not in out.split()
    assert out.rstrip().splitlines()[-1].startswith("Proven:")
    assert "HAProxy stopped by its PID" in out


def test_proxy_demo_without_haproxy_is_one_clean_line():
    r = subprocess.run([sys.executable, "-m", "wiregate", "proxy-demo", "--haproxy", "/nonexistent/haproxy"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert r.stderr.strip() == "wiregate: error: haproxy is not installed at /nonexistent/haproxy " \
                               "(Debian: apt-get install haproxy)"
    assert r.stdout == ""


@pytest.mark.peer
def test_proxy_demo_runs_from_the_demo_commands_namespace(capsys):
    # `wiregate demo` hands over its own argparse namespace, which has no --haproxy option
    need("haproxy")
    assert proxy_demo.run(argparse.Namespace()) == 0
    assert "Proven:" in capsys.readouterr().out


def test_describe_names_every_tlv_and_the_local_command():
    h, _ = decode(encode_v2(("192.0.2.1", 1), ("192.0.2.2", 2), crc32c=True,
                            tlvs=[TLV(1, b"h2"), TLV(0xE0, b"\xff\x00")]))
    lines = proxy_demo.describe(h)
    assert lines[0] == "PROXY v2 PROXY INET/STREAM client 192.0.2.1:1 -> 192.0.2.2:2, 45 bytes"
    assert lines[1].split()[0] == "CRC32C" and lines[2].split() == ["ALPN", "h2"]
    assert lines[3].split() == ["type", "0xe0", "ff00"]
    local, _ = decode(encode_v2(command=Command.LOCAL))
    assert proxy_demo.describe(local) == ["PROXY v2 LOCAL (use the real connection's addresses), 16 bytes"]

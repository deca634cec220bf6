"""Control socket, metrics endpoint, sd_notify and the systemd unit, each against a real peer."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import urllib.request

import pytest

from tests.system.conftest import wiregate
from wiregate import sdnotify
from wiregate.cli.install_service import unit_text
from wiregate.cli.status import render
from wiregate.control import MAX_REQUEST, ControlServer, request
from wiregate.errors import WiregateError
from wiregate.metrics import MetricsServer
from wiregate.status import NodeStatus, from_json
from wiregate.testing.peers import which

STATUS = {
    "role": "gateway", "name": "gw", "pid": 1, "config": "/etc/wiregate/gateway.toml", "uptime": 5.0,
    "reloads": {"ok": 1, "refused": 2},
    "tunnel": {"mode": "builtin", "interface": "wg0", "address": "192.0.2.1/24", "listen_port": 51820,
               "peers": [{"name": "home", "public_key": "Z46s1m2b+Du25JUC7tNTXngfaPxUhjwMAq8H1ROcE2E=",
                          "endpoint": "198.51.100.2:40000", "last_handshake": 0, "rx_bytes": 2048,
                          "tx_bytes": 10}]},
    "relay": {"open_connections": 3, "data_path": "splice", "services": {
        "https": {"kind": "tcp", "listeners": ["0.0.0.0:443"], "open": 3,
                  "totals": {"accepted": 7, "refused": 1},
                  "backends": [{"name": "home", "host": "192.0.2.2", "port": 443, "state": "up", "active": 3,
                                "total": 7}]}}},
}
HOME_STATUS = {
    "role": "home", "name": "home", "pid": 2, "config": "/etc/wiregate/home.toml", "uptime": 9.0,
    "reloads": {"ok": 0, "refused": 0}, "tunnel": {"mode": "external", "interface": "wg0", "peers": []},
    "ingress": {"https": {"listen": "192.0.2.2:443", "protocol": "tcp", "open": 2, "accepted": 9,
                          "refused": {"untrusted_header": 1}}},
}


async def _serve(tmp_path, handler):
    return await ControlServer.start(tmp_path / "run" / "gw.ctl", handler)


async def test_control_socket_is_0600_and_answers_json(tmp_path):
    async def handler(req):
        return {"ok": True, "echo": req["cmd"]}
    srv = await _serve(tmp_path, handler)
    try:
        assert stat.S_IMODE(srv.path.stat().st_mode) == 0o600
        reply = await asyncio.to_thread(request, srv.path, {"cmd": "status"})
        assert reply == {"ok": True, "echo": "status"}
        raw = await asyncio.to_thread(_raw, srv.path, b"not json\n")
        assert raw == {"ok": False, "error": "request is not one line of JSON"}
        big = await asyncio.to_thread(_raw, srv.path, b"x" * (MAX_REQUEST + 10) + b"\n")
        assert big["ok"] is False and "larger than" in big["error"]
    finally:
        await srv.close()
    assert not srv.path.exists()


def _raw(path, data: bytes) -> dict:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(path))
        try:
            s.sendall(data)
        except OSError:
            pass
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return json.loads(buf)


async def test_second_server_on_a_live_socket_is_refused_and_stale_one_replaced(tmp_path):
    async def handler(req):
        return {"ok": True}
    srv = await _serve(tmp_path, handler)
    try:
        with pytest.raises(WiregateError, match="another wiregate is running"):
            await _serve(tmp_path, handler)
    finally:
        await srv.close()
    # a stale socket file (nobody listening) is taken over
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(srv.path))
    stale.close()
    srv2 = await _serve(tmp_path, handler)
    await srv2.close()


def test_status_client_says_when_nothing_runs(tmp_path):
    r = wiregate("status", str(tmp_path / "nope.ctl"))
    assert r.returncode == 2 and "not found (is `wiregate run` running?)" in r.stderr


def test_status_rendering_shows_peer_services_and_health():
    text = render(from_json(NodeStatus, STATUS))
    assert "peer home Z46s1m2b+Du2... endpoint 198.51.100.2:40000  handshake never  rx 2.0 KiB" in text
    assert "service https (tcp) on 0.0.0.0:443: open 3, accepted 7, refused 1" in text
    assert "site home 192.0.2.2:443 up active 3 total 7" in text


def test_status_rendering_shows_ingress_listeners():
    text = render(from_json(NodeStatus, HOME_STATUS))
    assert "listener https (tcp) on 192.0.2.2:443: open 2, accepted 9, refused: untrusted_header 1" in text


async def test_metrics_endpoint_serves_prometheus_text_from_status():
    current = [STATUS]
    srv = MetricsServer(lambda: from_json(NodeStatus, current[0]))
    await srv.start("127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{srv.port}/metrics"
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read().decode())
        assert 'wiregate_tunnel_rx_bytes_total{peer="home"} 2048.0' in body
        assert 'wiregate_backend_up{backend="home",service="https"} 1.0' in body
        assert 'wiregate_service_open{service="https"} 3.0' in body
        assert 'wiregate_reloads_total{node="gw",result="refused"} 2.0' in body
        current[0] = HOME_STATUS  # the collector reads the status at each scrape
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read().decode())
        assert 'wiregate_listener_open{listener="https"} 2.0' in body
        assert 'wiregate_listener_events_total{event="refused_untrusted_header",listener="https"} 1.0' in body
        with pytest.raises(urllib.error.HTTPError) as exc:
            await asyncio.to_thread(lambda: urllib.request.urlopen(url[:-8] + "/other", timeout=10))
        assert exc.value.code == 404
    finally:
        await srv.close()


def test_sd_notify_datagram_reaches_the_notify_socket(tmp_path, monkeypatch):
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert sdnotify.notify("READY=1", "STATUS=1 site(s)")
        assert s.recv(4096) == b"READY=1\nSTATUS=1 site(s)"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert sdnotify.notify("READY=1") is False


def test_sd_notify_abstract_socket(monkeypatch):
    name = f"wgt-notify-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.notify("STOPPING=1")
        assert s.recv(4096) == b"STOPPING=1"


def test_install_service_writes_a_unit_systemd_accepts(gw_file, tmp_path):
    r = wiregate("install-service", str(gw_file), "--unit-dir", str(tmp_path / "units"))
    assert r.returncode == 0, r.stderr
    unit = tmp_path / "units" / "wiregate-gw.service"
    text = unit.read_text()
    assert "Type=notify" in text and "ExecReload=/bin/kill -HUP $MAINPID" in text
    assert f"run {gw_file.resolve()}" in text and "NoNewPrivileges=yes" in text and "ProtectSystem=strict" in text
    if not which("systemd-analyze"):
        pytest.skip("needs systemd-analyze to verify the unit")
    r = subprocess.run([which("systemd-analyze"), "verify", str(unit)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_unit_for_external_mode_keeps_net_admin_for_wg_but_makes_no_uapi_dir():
    text = unit_text(__import__("pathlib").Path("/etc/wiregate/home.toml"), "home", "/usr/bin/wiregate", "external")
    assert "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_BIND_SERVICE\n" in text and "mkdir" not in text
    text = unit_text(__import__("pathlib").Path("/etc/wiregate/home.toml"), "home", "/usr/bin/wiregate", "builtin")
    assert "ExecStartPre=+/bin/mkdir -p -m 0755 /run/wireguard\n" in text and "-/run/wireguard" in text

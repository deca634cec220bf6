"""UDP listeners (route by port, a PROXY v2 header per datagram from trusted sources) and the runner process."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket

import pytest

from wiregate.ingress import Listener, Route
from wiregate.proxyproto import Protocol, decode, encode_v2
from wiregate.testing.ingress_proc import IngressProcess
from wiregate.testing.peers import free_port

CLIENT = ("203.0.113.7", 51234)
pytestmark = pytest.mark.timeout(30)


class UdpEcho(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: list[tuple[bytes, tuple]] = []

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.got.append((data, addr))
        self.transport.sendto(b"re:" + data[-4:], addr)


async def test_udp_datagrams_carry_a_v2_header_per_datagram_and_replies_come_back(ingress, caplog):
    loop = asyncio.get_running_loop()
    tr, svc = await loop.create_datagram_endpoint(UdpEcho, local_addr=("127.0.0.1", 0))
    port = tr.get_extra_info("sockname")[1]
    ing = await ingress(Listener("dns", ("127.0.0.1", 0), protocol="udp", trusted=("127.0.0.1",),
                                 routes=(Route("svc", ("127.0.0.1", port), send_proxy="v2"),), default_route="svc"))
    lport = ing.addresses["dns"][1]
    caplog.set_level(logging.INFO, "wiregate.ingress")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    s.connect(("127.0.0.1", lport))
    for i in range(3):
        s.send(encode_v2(CLIENT, ("198.51.100.2", 53), protocol=Protocol.DGRAM) + b"q%03d" % i)
        reply = await asyncio.wait_for(loop.sock_recv(s, 100), 3)
        assert reply == b"re:q%03d" % i
    s.send(b"no header from a trusted source")
    async with asyncio.timeout(10):  # wait for the refusal to be counted
        while ing.status()["dns"]["refused"].get("missing_header") != 1:
            await asyncio.sleep(0.01)
    assert len(svc.got) == 3
    for i, (data, _) in enumerate(svc.got):
        hdr, payload = decode(data)
        assert hdr.source == CLIENT and hdr.protocol == Protocol.DGRAM and payload == b"q%03d" % i
    assert len({addr for _, addr in svc.got}) == 1  # one flow
    st = ing.status()["dns"]
    assert st["open"] == 1 and st["refused"] == {"missing_header": 1}
    assert "missing_header" in caplog.text
    s.close()
    tr.close()


async def test_udp_header_from_untrusted_source_is_dropped(ingress, caplog):
    loop = asyncio.get_running_loop()
    tr, svc = await loop.create_datagram_endpoint(UdpEcho, local_addr=("127.0.0.1", 0))
    port = tr.get_extra_info("sockname")[1]
    ing = await ingress(Listener("u", ("127.0.0.1", 0), protocol="udp", trusted=("10.0.0.1",),
                                 routes=(Route("svc", ("127.0.0.1", port)),), default_route="svc"))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    s.connect(("127.0.0.1", ing.addresses["u"][1]))
    s.send(encode_v2(CLIENT, ("198.51.100.2", 53), protocol=Protocol.DGRAM) + b"forged")
    s.send(b"plain")
    assert await asyncio.wait_for(loop.sock_recv(s, 100), 3) == b"re:lain"
    assert [d for d, _ in svc.got] == [b"plain"]
    assert ing.status()["u"]["refused"] == {"untrusted_header": 1}
    assert "untrusted_header" in caplog.text
    s.close()
    tr.close()


def test_runner_reloads_on_sighup_refuses_a_bad_file_and_drains_on_sigterm(tmp_path):
    import threading
    from socketserver import BaseRequestHandler, ThreadingTCPServer

    class Tag(BaseRequestHandler):
        def handle(self) -> None:
            self.request.sendall(self.server.tag)

    servers = []
    for tag in (b"A", b"B"):
        srv = ThreadingTCPServer(("127.0.0.1", 0), Tag)
        srv.tag = tag
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
    port = free_port()

    def cfg(target: int) -> dict:
        return {"listeners": [{"name": "p", "listen": ["127.0.0.1", port], "server_first": True,
                               "routes": [{"name": "r", "target": ["127.0.0.1", target]}], "default_route": "r"}]}

    def ask() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            return c.recv(10)

    try:
        with IngressProcess(cfg(servers[0].server_address[1]), tmp_path) as ing:
            assert ask() == b"A"  # server_first: the service's greeting comes without the client sending
            ing.reload(cfg(servers[1].server_address[1]))
            ing.wait_log("configuration reloaded")
            assert ask() == b"B"
            bad = cfg(servers[0].server_address[1])
            bad["listeners"][0]["default_route"] = "missing"
            ing.path.write_text(json.dumps(bad))
            ing.proc.send_signal(signal.SIGHUP)
            log = ing.wait_log("reload refused")
            assert 'default_route: "missing"' in log
            assert ask() == b"B"
            ing.proc.send_signal(signal.SIGTERM)
            assert ing.proc.wait(10) == 0
            assert "draining" in ing.log()
    finally:
        for srv in servers:
            srv.shutdown()
            srv.server_close()


def test_cli_reports_a_bad_file_in_one_line(tmp_path):
    import subprocess
    import sys

    f = tmp_path / "bad.json"
    f.write_text(json.dumps({"listeners": [{"name": "x", "listen": ["127.0.0.1", 99999]}]}))
    out = subprocess.run([sys.executable, "-m", "wiregate", "ingress", str(f)], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [f"wiregate: error: {f}: listeners[0].listen: "
                                               '["127.0.0.1", 99999]: port out of range']

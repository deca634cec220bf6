"""UDP flows hold a socket each: bounded by their own limits (max_flows, max_per_source, held to a share of the
descriptor limit) so a datagram flood through gateway -> home cannot take TCP down; [::] answers IPv4 clients;
open flows do not hold up a drain."""

from __future__ import annotations

import asyncio
import json
import resource
import socket
import subprocess
import sys
import threading
import time
from socketserver import BaseRequestHandler, ThreadingTCPServer

import pytest

from wiregate.ingress import Listener, Route
from wiregate.proxyproto import Protocol, encode_v2
from wiregate.testing.ingress_proc import IngressProcess
from wiregate.testing.peers import free_port, stop, wait_port

pytestmark = pytest.mark.timeout(90)
NOFILE = 128


class UdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.transport.sendto(b"re:" + data[-4:], addr)


class Echo(BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(100):
            self.request.sendall(b"re:" + data)


def wait_until(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.05)


def tcp_ask(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        c.sendall(b"ping")
        return c.recv(100)


def test_a_udp_flood_from_many_ports_through_gateway_and_home_does_not_take_tcp_down(tmp_path):
    """Before: every source port became a flow holding a socket (the relay's max_flows 4096, the home's
    max_connections 10000, idle for 3600 s) until descriptors ran out: the relay's socket() error escaped its
    callback and TCP through both sides failed. Now flows stop at a share of the descriptor limit."""
    srv = ThreadingTCPServer(("127.0.0.1", 0), Echo)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    echo.bind(("127.0.0.1", 0))
    stop_echo = threading.Event()

    def udp_echo() -> None:  # a UDP service at home, answering every datagram
        echo.settimeout(0.2)
        while not stop_echo.is_set():
            try:
                data, addr = echo.recvfrom(65535)
                echo.sendto(b"re:" + data[-4:], addr)
            except OSError:
                continue
    threading.Thread(target=udp_echo, daemon=True).start()
    home_tcp, home_udp, gw_tcp, gw_udp = free_port(), free_port(kind=socket.SOCK_DGRAM), free_port(), \
        free_port(kind=socket.SOCK_DGRAM)
    home = {"listeners": [
        {"name": "web", "listen": ["127.0.0.1", home_tcp], "trusted": ["127.0.0.1"],
         "routes": [{"name": "r", "target": list(srv.server_address)}], "default_route": "r"},
        {"name": "game", "listen": ["127.0.0.1", home_udp], "protocol": "udp", "trusted": ["127.0.0.1"],
         "routes": [{"name": "g", "target": list(echo.getsockname())}], "default_route": "g"}]}
    gw = {"services": [
        {"name": "web", "listen": [f"127.0.0.1:{gw_tcp}"], "backends": [{"host": "127.0.0.1", "port": home_tcp}],
         "health": False, "proxy_protocol": "v2"},
        {"name": "game", "protocol": "udp", "listen": [f"127.0.0.1:{gw_udp}"], "proxy_protocol": "v2",
         "backends": [{"host": "127.0.0.1", "port": home_udp}]}]}
    (tmp_path / "gw").mkdir()
    gw_cfg, gw_log = tmp_path / "gw" / "relay.json", tmp_path / "gw" / "relay.log"
    gw_cfg.write_text(json.dumps(gw))
    relay = subprocess.Popen([sys.executable, "-m", "wiregate.relay", "--config", str(gw_cfg)],
                             stdout=subprocess.DEVNULL, stderr=gw_log.open("w"),
                             preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE)))
    try:
        with IngressProcess(home, tmp_path / "home", nofile=NOFILE) as ing:
            wait_port("127.0.0.1", gw_tcp, 10, relay)
            assert tcp_ask(gw_tcp) == b"re:ping"
            # the flood: 400 distinct source ports (more than NOFILE), one datagram each, sockets kept open so
            # the ports stay distinct
            flood = []
            try:
                for i in range(400):
                    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    flood.append(s)
                    s.sendto(b"f%03d" % i, ("127.0.0.1", gw_udp))
                # the relay passed what it admits on; wait until the flows at home stop growing
                last = [-1, 0]

                def settled() -> bool:
                    n = ing.log().count("udp client")
                    last[:] = [n, last[1] + 1 if n == last[0] else 0]
                    return last[1] >= 10
                wait_until(settled, 20, "the flood to be handled")
                # TCP through both sides still works, several times over
                for _ in range(5):
                    assert tcp_ask(gw_tcp) == b"re:ping"
                assert relay.poll() is None and ing.proc.poll() is None
                flows = ing.log().count("udp client")
                assert 0 < flows < 100, f"{flows} UDP flows at home"
                # the flood's first flows were answered (UDP works, it is only bounded)
                flood[0].settimeout(5)
                assert flood[0].recv(100) == b"re:f000"
            finally:
                for s in flood:
                    s.close()
            gw_text, home_text = gw_log.read_text(), ing.log()
            assert "Traceback" not in gw_text and "Traceback" not in home_text
            assert "refused UDP flow" in gw_text and "max_flows" in gw_text
            assert "at most" in gw_text and "UDP flows" in gw_text  # the cap under the descriptor limit is logged
    finally:
        stop(relay)
        stop_echo.set()
        echo.close()
        srv.shutdown()
        srv.server_close()


async def test_flows_are_limited_per_client_address_and_expire_after_flow_idle_timeout(ingress):
    loop = asyncio.get_running_loop()
    tr, _ = await loop.create_datagram_endpoint(UdpEcho, local_addr=("127.0.0.1", 0))
    port = tr.get_extra_info("sockname")[1]
    ing = await ingress(Listener("u", ("127.0.0.1", 0), protocol="udp", trusted=("127.0.0.1",), max_per_source=2,
                                 flow_idle_timeout=0.4, routes=(Route("svc", ("127.0.0.1", port)),),
                                 default_route="svc"))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    s.connect(("127.0.0.1", ing.addresses["u"][1]))
    for client_port in (1001, 1002, 1003):  # one client address, three ports: the third is refused
        s.send(encode_v2(("203.0.113.7", client_port), ("198.51.100.2", 53), protocol=Protocol.DGRAM) + b"q%d" %
               client_port)
    s.send(encode_v2(("203.0.113.8", 1), ("198.51.100.2", 53), protocol=Protocol.DGRAM) + b"other")
    replies = set()
    async with asyncio.timeout(10):
        while len(replies) < 3:
            replies.add(await loop.sock_recv(s, 100))
    assert replies == {b"re:1001", b"re:1002", b"re:ther"}
    assert ing.status()["u"]["refused"] == {"source_limit": 1}
    assert ing.status()["u"]["open"] == 3
    async with asyncio.timeout(10):  # a sane idle default, here shortened: silent flows go
        while ing.status()["u"]["open"]:
            await asyncio.sleep(0.05)
    s.close()
    tr.close()


def test_the_home_defaults_for_udp_flows_are_bounded():
    from wiregate.config.schema import HOME

    lst = next(t for t in HOME.children if t.name == "listeners")
    opts = {o.key: o.default for o in lst.opts}
    assert opts["flow_idle_timeout"] == 60.0  # was the TCP idle_timeout: 3600 s
    assert opts["max_flows"] <= 4096 and opts["max_per_source"] <= 256


async def test_a_dual_stack_udp_listener_answers_ipv4_clients(ingress):
    loop = asyncio.get_running_loop()
    tr, _ = await loop.create_datagram_endpoint(UdpEcho, local_addr=("127.0.0.1", 0))
    port = tr.get_extra_info("sockname")[1]
    ing = await ingress(Listener("u", ("::", 0), protocol="udp", routes=(Route("svc", ("127.0.0.1", port)),),
                                 default_route="svc"))
    for family, host, tag in ((socket.AF_INET, "127.0.0.1", b"ipv4"), (socket.AF_INET6, "::1", b"ipv6")):
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.setblocking(False)
        s.connect((host, ing.addresses["u"][1]))
        s.send(tag)
        assert await asyncio.wait_for(loop.sock_recv(s, 100), 5) == b"re:" + tag
        s.close()
    tr.close()


async def test_open_udp_flows_do_not_hold_up_the_drain(backends, ingress):
    loop = asyncio.get_running_loop()
    tr, _ = await loop.create_datagram_endpoint(UdpEcho, local_addr=("127.0.0.1", 0))
    port = tr.get_extra_info("sockname")[1]
    ing = await ingress(Listener("u", ("127.0.0.1", 0), protocol="udp", routes=(Route("svc", ("127.0.0.1", port)),),
                                 default_route="svc"))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    s.connect(("127.0.0.1", ing.addresses["u"][1]))
    s.send(b"ping")
    assert await asyncio.wait_for(loop.sock_recv(s, 100), 5) == b"re:ping"
    assert ing.status()["u"]["open"] == 1
    t0 = time.monotonic()
    await ing.close(drain_timeout=10)
    assert time.monotonic() - t0 < 3  # before: the flow counted as an open connection, so the whole 10 s
    s.close()
    tr.close()

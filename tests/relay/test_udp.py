"""UDP services: flow round trip with the client address in a PROXY v2 DGRAM header, expiry, size bound."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from wiregate.proxyproto import Decoder, Protocol
from wiregate.relay import Backend, RelayConfig, UDPService

from .conftest import eventually, local_port, running

pytestmark = pytest.mark.timeout(30)


class UDPBackend(asyncio.DatagramProtocol):
    """Answers each datagram with what it learnt: 'client ip:port|payload' (from the PROXY header when present)."""

    def __init__(self, proxy: bool) -> None:
        self.proxy = proxy
        self.peers: list[tuple] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.peers.append(addr)
        if self.proxy:
            dec = Decoder()
            h = dec.feed(data)
            assert h is not None and h.protocol is Protocol.DGRAM
            who, payload = f"{h.source[0]}:{h.source[1]}", dec.rest
        else:
            who, payload = f"{addr[0]}:{addr[1]}", data
        self.transport.sendto(who.encode() + b"|" + payload, addr)


async def udp_backend(proxy: bool) -> tuple[UDPBackend, int]:
    loop = asyncio.get_running_loop()
    tr, proto = await loop.create_datagram_endpoint(lambda: UDPBackend(proxy), local_addr=("127.0.0.1", 0))
    return proto, tr.get_extra_info("sockname")[1]


def client_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


async def ask(sock: socket.socket, port: int, payload: bytes, timeout: float = 2.0) -> bytes:
    loop = asyncio.get_running_loop()
    await loop.sock_sendto(sock, payload, ("127.0.0.1", port))
    return await asyncio.wait_for(loop.sock_recv(sock, 65535), timeout)


def udp_service(port: int, bport: int, **kw) -> UDPService:
    return UDPService("dns", (("127.0.0.1", port),), (Backend("127.0.0.1", bport),), **kw)


async def test_udp_flow_round_trip_carries_the_client_address():
    backend, bport = await udp_backend(proxy=True)
    port = local_port(socket.SOCK_DGRAM)
    async with running(RelayConfig((udp_service(port, bport, proxy_protocol="v2"),))) as relay:
        a, b = client_socket(), client_socket()
        me_a = "127.0.0.1:%d" % a.getsockname()[1]
        me_b = "127.0.0.1:%d" % b.getsockname()[1]
        assert await ask(a, port, b"one") == me_a.encode() + b"|one"
        assert await ask(b, port, b"two") == me_b.encode() + b"|two"
        assert await ask(a, port, b"three") == me_a.encode() + b"|three"
        # one upstream socket per client: the backend saw two relay ports, a's datagrams from the same one
        assert len(set(backend.peers)) == 2 and backend.peers[0] == backend.peers[2]
        assert relay.status()["services"]["dns"]["open"] == 2
        a.close()
        b.close()
    backend.transport.close()


async def test_udp_without_header_forwards_payload_untouched():
    backend, bport = await udp_backend(proxy=False)
    port = local_port(socket.SOCK_DGRAM)
    async with running(RelayConfig((udp_service(port, bport),))):
        c = client_socket()
        reply = await ask(c, port, b"\x00\x01raw")
        assert reply.endswith(b"|\x00\x01raw") and not reply.startswith(b"127.0.0.1:%d" % c.getsockname()[1])
        c.close()
    backend.transport.close()


async def test_idle_flows_expire_and_the_table_is_bounded():
    backend, bport = await udp_backend(proxy=True)
    port = local_port(socket.SOCK_DGRAM)
    cfg = RelayConfig((udp_service(port, bport, proxy_protocol="v2", max_flows=2, flow_idle_timeout=0.3),))
    async with running(cfg) as relay:
        a, b, c = client_socket(), client_socket(), client_socket()
        await ask(a, port, b"a")
        await ask(b, port, b"b")
        with pytest.raises(asyncio.TimeoutError):  # a third client while two flows are live: dropped
            await ask(c, port, b"c", timeout=0.2)
        st = relay.status()["services"]["dns"]
        assert st["open"] == 2 and st["totals"]["refused"] == 1
        await eventually(lambda: relay.status()["services"]["dns"]["open"] == 0, what="idle flows to expire")
        assert (await ask(c, port, b"c")).endswith(b"|c")  # room again
        for s in (a, b, c):
            s.close()
    backend.transport.close()


async def test_a_wildcard_listener_names_and_answers_from_the_address_the_client_wrote_to():
    """On 0.0.0.0 the relay learns each datagram's destination (IP_PKTINFO): it goes into the header, and the
    reply leaves from it. A connected client socket accepts replies only from the address it wrote to."""
    backend, bport = await udp_backend(proxy=True)
    headers = []
    feed = backend.datagram_received

    def record(data, addr):
        dec = Decoder()
        headers.append(dec.feed(data))
        feed(data, addr)
    backend.datagram_received = record
    port = local_port(socket.SOCK_DGRAM)
    svc = UDPService("dns", (("0.0.0.0", port),), (Backend("127.0.0.1", bport),), proxy_protocol="v2")
    loop = asyncio.get_running_loop()
    async with running(RelayConfig((svc,))) as relay:
        c = client_socket()
        me = "127.0.0.1:%d" % c.getsockname()[1]
        for dst in ("127.0.0.2", "127.0.0.3"):
            c.connect((dst, port))
            await loop.sock_sendall(c, dst.encode())
            assert await asyncio.wait_for(loop.sock_recv(c, 65535), 2) == f"{me}|{dst}".encode()
            assert headers[-1].destination == (dst, port)
        assert relay.status()["services"]["dns"]["open"] == 2  # one flow per (client, address it wrote to)
        c.close()
    backend.transport.close()


async def test_ipv6_wildcard_listener_round_trip_names_the_ipv6_client_and_destination():
    backend, bport = await udp_backend(proxy=True)
    headers = []
    feed = backend.datagram_received

    def record(data, addr):
        headers.append(Decoder().feed(data))
        feed(data, addr)
    backend.datagram_received = record
    port = local_port(socket.SOCK_DGRAM)
    svc = UDPService("dns", (("::", port),), (Backend("127.0.0.1", bport),), proxy_protocol="v2")
    loop = asyncio.get_running_loop()
    async with running(RelayConfig((svc,))):
        c = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        c.setblocking(False)
        c.connect(("::1", port))
        await loop.sock_sendall(c, b"six")
        me = "::1:%d" % c.getsockname()[1]
        assert await asyncio.wait_for(loop.sock_recv(c, 65535), 2) == f"{me}|six".encode()
        assert headers[0].source == ("::1", c.getsockname()[1]) and headers[0].destination == ("::1", port)
        c.close()
    backend.transport.close()


def test_pktinfo_control_messages_carry_the_address_both_ways():
    import struct

    from wiregate.relay.udp import IP_PKTINFO, destination_of, source_cmsg
    # IPv6: in6_pktinfo has the same layout whether received (destination) or sent (source to use)
    assert destination_of(source_cmsg(socket.AF_INET6, "2001:db8::7")) == "2001:db8::7"
    # IPv4 received: the header's destination is ipi_addr, not ipi_spec_dst
    got = [(socket.IPPROTO_IP, IP_PKTINFO, struct.pack("=i4s4s", 2, bytes([192, 0, 2, 1]), bytes([203, 0, 113, 9])))]
    assert destination_of(got) == "203.0.113.9"
    # IPv4 sent: the source to use goes in ipi_spec_dst, with no interface forced
    [(level, kind, data)] = source_cmsg(socket.AF_INET, "198.51.100.7")
    assert (level, kind) == (socket.IPPROTO_IP, IP_PKTINFO)
    assert struct.unpack("=i4s4s", data) == (0, bytes([198, 51, 100, 7]), bytes(4))
    assert destination_of([]) is None


async def test_one_client_address_gets_at_most_max_per_source_flows():
    backend, bport = await udp_backend(proxy=False)
    port = local_port(socket.SOCK_DGRAM)
    async with running(RelayConfig((udp_service(port, bport, max_per_source=2),))) as relay:
        a, b, c = client_socket(), client_socket(), client_socket()  # one address, three ports
        await ask(a, port, b"a")
        await ask(b, port, b"b")
        with pytest.raises(asyncio.TimeoutError):
            await ask(c, port, b"c", timeout=0.3)
        st = relay.status()["services"]["dns"]
        assert st["open"] == 2 and st["totals"]["refused"] == 1
        for s in (a, b, c):
            s.close()
    backend.transport.close()


async def test_no_descriptor_for_a_flow_refuses_the_client_and_keeps_the_relay_serving():
    """socket() failing (EMFILE) used to raise out of the datagram callback; now the flow is refused, new flows
    pause for a back-off, and existing flows keep working."""
    import resource

    backend, bport = await udp_backend(proxy=False)
    port = local_port(socket.SOCK_DGRAM)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    async with running(RelayConfig((udp_service(port, bport),))) as relay:
        a = client_socket()
        assert (await ask(a, port, b"a")).endswith(b"|a")
        b = client_socket()
        hog = []
        loop = asyncio.get_running_loop()
        errors = []
        loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 8, hard))
            try:
                while True:
                    hog.append(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            except OSError:
                pass
            with pytest.raises(asyncio.TimeoutError):
                await ask(b, port, b"b", timeout=0.3)
            assert relay.status()["services"]["dns"]["totals"]["refused"] >= 1
            assert (await ask(a, port, b"again")).endswith(b"|again")  # the existing flow still works
        finally:
            for s in hog:
                s.close()
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            loop.set_exception_handler(None)
        assert errors == []
        for s in (a, b):
            s.close()
    backend.transport.close()

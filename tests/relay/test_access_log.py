"""The gateway's access log (`wiregate run --access-log`): one INFO line per TCP connection and UDP flow naming
the real client and the address the client connected to, not the wildcard the service listens on (issue 10)."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from wiregate.relay import RelayConfig, TCPService, UDPService

from .conftest import EchoBackend, exchange, local_port, running
from .test_udp import udp_backend

pytestmark = pytest.mark.timeout(30)


def _access_lines(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "wiregate.relay.access"]


async def test_tcp_access_line_is_info_and_names_the_address_the_client_connected_to(caplog):
    caplog.set_level(logging.INFO, logger="wiregate.relay.access")  # what --access-log sets
    b = await EchoBackend(proxy=False).start()
    port = local_port()
    svc = TCPService(name="web", listen=(("0.0.0.0", port),), backends=(b.backend,), proxy_protocol="none",
                     health=None)
    async with running(RelayConfig((svc,))):
        assert await exchange(port, b"hi", host="127.0.0.2") == b"hi"  # any loopback address reaches 0.0.0.0
    await b.stop()
    (rec,) = _access_lines(caplog)
    assert rec.levelno == logging.INFO
    msg = rec.getMessage()
    assert msg.startswith("web: 127.0.0.1:") and msg.endswith(f"-> b via 127.0.0.2:{port}"), msg
    assert "0.0.0.0" not in msg


async def test_udp_access_line_is_info_and_names_the_address_the_client_wrote_to(caplog):
    caplog.set_level(logging.INFO, logger="wiregate.relay.access")
    backend, bport = await udp_backend(proxy=False)
    from wiregate.relay import Backend

    port = local_port(socket.SOCK_DGRAM)
    svc = UDPService(name="dns", listen=(("0.0.0.0", port),), backends=(Backend("127.0.0.1", bport, name="b"),),
                     proxy_protocol="none")
    loop = asyncio.get_running_loop()
    async with running(RelayConfig((svc,))):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
            await loop.sock_sendto(s, b"ping", ("127.0.0.3", port))
            assert (await asyncio.wait_for(loop.sock_recv(s, 2000), 5)).endswith(b"|ping")
    backend.transport.close()
    (rec,) = _access_lines(caplog)
    assert rec.levelno == logging.INFO
    msg = rec.getMessage()
    assert msg.startswith("dns: UDP flow 127.0.0.1:") and msg.endswith(f"-> b via 127.0.0.3:{port}"), msg


async def test_no_access_line_unless_asked(caplog):
    caplog.set_level(logging.WARNING, logger="wiregate.relay.access")  # `wiregate run` without --access-log
    caplog.set_level(logging.INFO, logger="wiregate.relay")
    b = await EchoBackend(proxy=False).start()
    port = local_port()
    svc = TCPService(name="web", listen=(("127.0.0.1", port),), backends=(b.backend,), proxy_protocol="none",
                     health=None)
    async with running(RelayConfig((svc,))):
        assert await exchange(port, b"hi") == b"hi"
    await b.stop()
    assert _access_lines(caplog) == []

"""The asyncio ingress in-process: PROXY in and out, refusals logged with the reason, limits, reload, drain."""

from __future__ import annotations

import asyncio
import logging

import pytest

from wiregate.errors import ConfigError, WiregateError
from wiregate.ingress import IngressConfig, Listener, Route
from wiregate.proxyproto import Decoder, encode_v1, encode_v2
from wiregate.testing.tls_hello import client_hello, records, sni_ext

CLIENT = ("203.0.113.7", 51234)
pytestmark = pytest.mark.timeout(30)


def echo(data: bytes) -> bytes:
    return data


async def talk(port: int, data: bytes, expect: int = 0, timeout: float = 5.0) -> bytes:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(data)
    await w.drain()
    got = b""
    try:
        async with asyncio.timeout(timeout):
            while len(got) < expect:
                chunk = await r.read(65536)
                if not chunk:
                    break
                got += chunk
    finally:
        w.close()
    return got


async def read_all(r: asyncio.StreamReader, timeout: float = 5.0) -> bytes:
    async with asyncio.timeout(timeout):
        return await r.read(-1)


def lst(routes, **kw) -> Listener:
    base = dict(name="web", listen=("127.0.0.1", 0), trusted=("127.0.0.1",), routes=tuple(routes))
    base.update(kw)
    return Listener(**base)


async def test_trusted_header_reaches_the_service_as_a_fresh_v2_header_and_bytes_flow_both_ways(backends, ingress):
    svc = await backends(echo)
    ing = await ingress(lst([Route("app", ("127.0.0.1", svc.port), send_proxy="v2")], default_route="app"))
    port = ing.addresses["web"][1]
    payload = b"x" * 300000
    fresh = encode_v2(CLIENT, ("198.51.100.2", 443))
    got = await talk(port, encode_v2(CLIENT, ("198.51.100.2", 443)) + payload, expect=len(fresh) + len(payload))
    assert got == bytes(svc.conns[0])  # the service echoes what it got: our header, then the payload
    dec = Decoder()
    hdr = dec.feed(bytes(svc.conns[0]))
    assert hdr is not None and hdr.source == CLIENT and hdr.destination == ("198.51.100.2", 443)
    assert dec.rest == payload
    st = ing.status()["web"]
    assert st["accepted"] == 1 and st["routes"]["app"]["send_proxy"] == "v2"


async def test_untrusted_peer_with_header_is_refused_and_logged(backends, ingress, caplog):
    svc = await backends(echo)
    ing = await ingress(lst([Route("app", ("127.0.0.1", svc.port))], default_route="app", trusted=("10.0.0.1",)))
    port = ing.addresses["web"][1]
    caplog.set_level(logging.INFO, "wiregate.ingress")
    assert await talk(port, encode_v1(CLIENT, ("127.0.0.1", 1)) + b"hi", expect=1) == b""
    assert "untrusted_header" in caplog.text and "127.0.0.1" in caplog.text
    assert ing.status()["web"]["refused"] == {"untrusted_header": 1}
    assert svc.conns == []  # nothing reached the service
    assert await talk(port, b"hello", expect=5) == b"hello"  # a plain connection from the same peer works


async def test_trusted_source_without_header_is_refused_and_logged(backends, ingress, caplog):
    svc = await backends(echo)
    ing = await ingress(lst([Route("app", ("127.0.0.1", svc.port))], default_route="app"))
    caplog.set_level(logging.WARNING, "wiregate.ingress")
    assert await talk(ing.addresses["web"][1], b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", expect=1) == b""
    assert "missing_header" in caplog.text and "sent no PROXY header" in caplog.text
    assert svc.conns == []


async def test_bad_input_is_refused_with_the_reason_and_other_connections_go_on(backends, ingress, caplog):
    svc = await backends(echo)
    ing = await ingress(lst([Route("app", ("127.0.0.1", svc.port), sni=("app.example.org",))],
                            header_timeout=0.5, max_header_bytes=256))
    port = ing.addresses["web"][1]
    caplog.set_level(logging.WARNING, "wiregate.ingress")
    # a slow-loris header held open, a good connection meanwhile, then garbage and an oversize header
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"PROXY TCP4 203.0.113.7 ")
    hello = records(client_hello(sni_ext(b"app.example.org")))
    good = await talk(port, encode_v1(CLIENT, ("127.0.0.1", port)) + hello, expect=len(hello))
    assert good == hello
    assert await read_all(r) == b""  # closed by the header timeout
    w.close()
    assert await talk(port, b"\x00\x01\x02garbage" * 3, expect=1) == b""
    big = encode_v2(CLIENT, ("127.0.0.1", 1))[:14] + (1000).to_bytes(2, "big") + bytes(1000)
    assert await talk(port, big, expect=1) == b""
    refused = ing.status()["web"]["refused"]
    assert refused == {"header_timeout": 1, "missing_header": 1, "bad_header": 1}
    assert "exceeds the limit of 256" in caplog.text and "within 0.5s" in caplog.text
    assert len(svc.conns) == 1


async def test_connection_limit_refuses_the_extra_connection(backends, ingress, caplog):
    svc = await backends(echo)
    ing = await ingress(lst([Route("app", ("127.0.0.1", svc.port))], default_route="app", max_connections=2,
                            trusted=()))
    port = ing.addresses["web"][1]
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
    for _r, w in held:
        w.write(b"x")
        await w.drain()
    await svc.wait_for(lambda: len(svc.conns) == 2)
    assert await talk(port, b"y", expect=1) == b""
    assert ing.status()["web"]["refused"].get("connection_limit") == 1
    for _r, w in held:
        w.close()


async def test_reload_keeps_open_connections_and_refuses_a_bad_config(backends, ingress, caplog):
    a, b = await backends(echo), await backends(echo)
    listener = lst([Route("app", ("127.0.0.1", a.port))], default_route="app", trusted=())
    ing = await ingress(listener)
    port = ing.addresses["web"][1]
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"one")
    assert await r.readexactly(3) == b"one"
    new = IngressConfig((lst([Route("app", ("127.0.0.1", b.port))], default_route="app", trusted=(),
                             listen=("127.0.0.1", port)),))
    await ing.reload(new)
    w.write(b"two")  # the open connection still goes to the old target
    assert await r.readexactly(3) == b"two"
    assert await talk(port, b"three", expect=5) == b"three"
    assert b.conns and b.conns[0] == bytearray(b"three") and a.conns[0] == bytearray(b"onetwo")
    with pytest.raises(WiregateError, match="cannot listen"):
        busy = IngressConfig((*new.listeners, Listener("dup", ("127.0.0.1", a.port), routes=(
            Route("x", ("127.0.0.1", 1)),), default_route="x")))
        await ing.reload(busy)
    assert set(ing.status()) == {"web"}
    w.close()


async def test_close_drains_then_ends_connections(backends, ingress):
    svc = await backends(echo)
    ing = await ingress(lst([Route("app", ("127.0.0.1", svc.port))], default_route="app", trusted=()))
    port = ing.addresses["web"][1]
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"ping")
    assert await r.readexactly(4) == b"ping"
    await ing.close(drain_timeout=0.2)
    assert await read_all(r) == b""
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_start_names_the_address_it_cannot_bind(backends):
    from wiregate.ingress import Ingress

    svc = await backends(echo)
    ing = Ingress(IngressConfig((lst([Route("a", ("127.0.0.1", 1))], default_route="a",
                                      listen=("127.0.0.1", svc.port)),)))
    with pytest.raises(WiregateError, match=f"cannot listen on tcp 127.0.0.1:{svc.port}"):
        await ing.start()


def test_bad_tls_files_are_a_config_error(tmp_path):
    from wiregate.ingress import Ingress

    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("not a cert")
    key.write_text("not a key")
    key.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by group/others"):
        Route("t", ("127.0.0.1", 1), sni=("a.example",), tls_cert=str(cert), tls_key=str(key))
    key.chmod(0o600)
    route = Route("t", ("127.0.0.1", 1), sni=("a.example",), tls_cert=str(cert), tls_key=str(key))
    with pytest.raises(ConfigError, match="route 't': cannot load"):
        Ingress(IngressConfig((lst([route]),)))


async def test_idle_connection_is_closed_after_idle_timeout(backends, ingress):
    svc = await backends(echo)
    ing = await ingress(lst([Route("app", ("127.0.0.1", svc.port))], default_route="app", trusted=(),
                            idle_timeout=0.4))
    r, w = await asyncio.open_connection("127.0.0.1", ing.addresses["web"][1])
    w.write(b"ping")
    assert await r.readexactly(4) == b"ping"
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert await read_all(r, timeout=3) == b""
    assert 0.3 <= loop.time() - t0 < 2.0
    assert ing.status()["web"]["refused"] == {"idle_timeout": 1}
    w.close()


async def test_proxy_optional_mode_warns_and_takes_trusted_peers_with_or_without_header(backends, ingress, caplog):
    svc = await backends(echo)
    caplog.set_level(logging.WARNING, "wiregate.ingress")
    ing = await ingress(lst([Route("app", ("127.0.0.1", svc.port), send_proxy="v1")], default_route="app",
                            proxy_optional=True))
    assert "proxy_optional is on" in caplog.text
    port = ing.addresses["web"][1]
    # With a header the client it names is passed on; without one the trusted peer itself is the client.
    with_header = encode_v1(CLIENT, ("127.0.0.1", port))
    got = await talk(port, with_header + b"a", expect=len(with_header) + 1)
    assert got == with_header + b"a"
    r, w = await asyncio.open_connection("127.0.0.1", port)
    me = w.get_extra_info("sockname")
    w.write(b"b")
    expected = encode_v1(me, ("127.0.0.1", port)) + b"b"
    async with asyncio.timeout(5):
        assert await r.readexactly(len(expected)) == expected
    w.close()


async def test_a_lone_default_route_with_http_headers_gets_them_and_other_protocols_pass(backends, ingress):
    """A listener whose only route is the default and has http_headers: plain HTTP is still recognised (sniffed)
    so each request gets the client's address; TLS and other bytes go to the same route untouched."""
    svc = await backends()
    ing = await ingress(Listener(name="web", listen=("127.0.0.1", 0), trusted=("127.0.0.1",),
                                 routes=(Route("app", ("127.0.0.1", svc.port), http_headers=True),),
                                 default_route="app"))
    port = ing.addresses["web"][1]
    header = encode_v2(CLIENT, ("127.0.0.1", port))
    request = b"GET / HTTP/1.1\r\nHost: www.example\r\nX-Forwarded-For: 10.6.6.6\r\nConnection: close\r\n\r\n"
    hello = records(client_hello(sni_ext(b"www.example")))
    for data in (request, hello, b"SSH-2.0-OpenSSH_9.2\r\n"):
        await talk(port, header + data)
    await svc.wait_for(lambda: len(svc.conns) == 3 and all(svc.conns))
    got = {bytes(c[:3]): bytes(c) for c in svc.conns}
    assert b"X-Forwarded-For: 203.0.113.7\r\n" in got[b"GET"] and b"10.6.6.6" not in got[b"GET"]
    assert hello in got.values() and b"SSH-2.0-OpenSSH_9.2\r\n" in got.values()

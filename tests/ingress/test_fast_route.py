"""The pump's fast route (wiregate.datapath._pump.Fast, set up by Ingress._configure_fast): a trusted peer's v2
PROXY header checked in C and the connection carried to the default route without a Python call, with the same
outcomes as the Python path: the service gets the bytes (and the same v2 header), the counts and limits hold,
and every case the pump does not take (pieces too late, LOCAL, untrusted, a target that does not answer) ends
as Python decides it. The whole ingress suite also runs on this path (the `ingress` fixture's "c")."""

from __future__ import annotations

import asyncio
import logging
import os
import socket

import pytest

from wiregate.acme.book import Book
from wiregate.datapath import pump as cpump
from wiregate.ingress import Ingress, IngressConfig, Listener, Route
from wiregate.proxyproto import Command, Decoder, encode_v1, encode_v2

CLIENT = ("203.0.113.7", 51234)
CLIENT6 = ("2001:db8::7", 4433)
pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(not cpump.available() and os.environ.get("CI") != "true",
                                 reason="the C pump is not built here (optional extension)"),
              pytest.mark.parametrize("ingress", ["c"], indirect=True)]  # the pump with its fast routes only


def echo(data: bytes) -> bytes:
    return data


def lst(port: int, send_proxy: str = "none", **kw) -> Listener:
    kw.setdefault("trusted", ("127.0.0.1",))
    return Listener(name="web", listen=("127.0.0.1", 0), routes=(Route("app", ("127.0.0.1", port),
                                                                       send_proxy=send_proxy),),
                    default_route="app", **kw)


def fast_of(ing: Ingress):
    (rt,) = ing.runtimes.values()
    return rt.fast


async def until(pred, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.01)


async def test_a_whole_header_is_routed_in_c_with_the_same_v2_header_and_counted(backends, ingress):
    svc = await backends(echo)
    ing = await ingress(lst(svc.port, send_proxy="v2"))
    port = ing.addresses["web"][1]
    fast = fast_of(ing)
    assert fast is not None and fast.enabled
    for client, dest in ((CLIENT, ("127.0.0.1", port)), (CLIENT6, ("2001:db8::1", 443))):
        header = encode_v2(client, dest)
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(header + b"hello")
        got = b""
        async with asyncio.timeout(5):
            while not got.endswith(b"hello"):
                chunk = await r.read(65536)
                assert chunk, got
                got += chunk
        h = Decoder().feed(got)
        assert h is not None and tuple(h.source) == client and got == header + b"hello"  # the same header
        w.close()
    await until(lambda: ing.status()["web"]["open"] == 0)
    st = ing.status()["web"]
    assert fast.accepted == 2 and st["accepted"] == 2 and not st["refused"]


async def test_a_header_in_pieces_waits_in_the_pump_and_a_stalled_one_times_out(backends, ingress):
    svc = await backends(echo)
    ing = await ingress(lst(svc.port, header_timeout=0.5))
    port = ing.addresses["web"][1]
    fast = fast_of(ing)
    header = encode_v2(CLIENT, ("127.0.0.1", port))
    r, w = await asyncio.open_connection("127.0.0.1", port)
    for piece in (header[:1], header[1:13], header[13:20], header[20:] + b"pieces"):
        await asyncio.sleep(0.05)
        w.write(piece)
        await w.drain()
    async with asyncio.timeout(5):
        assert await r.readexactly(6) == b"pieces"
    assert fast.accepted == 1
    w.close()

    loop = asyncio.get_running_loop()
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(header[:20])
    t0 = loop.time()
    await until(lambda: fast.open == 1 and ing.status()["web"]["open"] == 1)  # waiting in the pump
    async with asyncio.timeout(5):
        assert await r.read(-1) == b""  # refused by header_timeout (0.5 s), through Python
    assert 0.3 < loop.time() - t0 < 3
    w.close()
    await until(lambda: ing.status()["web"]["open"] == 0)
    assert ing.status()["web"]["refused"] == {"header_timeout": 1}
    assert len(svc.conns) == 1


async def test_what_the_pump_does_not_take_python_decides(backends, ingress, caplog):
    svc = await backends(echo)
    ing = await ingress(lst(svc.port))
    port = ing.addresses["web"][1]
    fast = fast_of(ing)
    dest = ("127.0.0.1", port)
    # a v1 header: routed by Python, the same outcome
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(encode_v1(CLIENT, dest) + b"v1")
    async with asyncio.timeout(5):
        assert await r.readexactly(2) == b"v1"
    w.close()
    # a LOCAL header then EOF: a health check; bytes that are no header: refused; EOF mid-header: refused
    for data, reason in ((encode_v2(command=Command.LOCAL), "health_check"), (b"GET / HTTP/1.1\r\n\r\n",
                                                                               "missing_header"),
                         (encode_v2(CLIENT, dest)[:20], "closed_early")):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(data)
        await w.drain()
        if reason != "missing_header":
            w.write_eof()
        async with asyncio.timeout(5):
            assert await r.read(-1) == b""
        w.close()
    await until(lambda: ing.status()["web"]["open"] == 0)
    st = ing.status()["web"]
    assert st["refused"] == {"missing_header": 1, "closed_early": 1}, st
    assert st["health_checks"] == 1 and st["accepted"] == 1 and fast.accepted == 0


async def refused(ing: Ingress) -> dict:
    """Send a header and a byte, expect the connection closed; the listener's refusals once it has ended."""
    port = ing.addresses["web"][1]
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(encode_v2(CLIENT, ("127.0.0.1", port)) + b"x")
    async with asyncio.timeout(5):
        assert await r.read(-1) == b""
    w.close()
    await until(lambda: ing.status()["web"]["open"] == 0)
    return ing.status()["web"]["refused"]


async def test_an_untrusted_peer_never_gets_its_header_taken(backends, ingress):
    svc = await backends(echo)
    ing = await ingress(lst(svc.port, trusted=("192.0.2.0/24",)))  # loopback is not trusted
    assert await refused(ing) == {"untrusted_header": 1}
    assert svc.conns == [] and fast_of(ing).accepted == 0


async def test_an_unreachable_target_closes_the_client_and_is_counted_and_logged(ingress, caplog):
    caplog.set_level(logging.WARNING, "wiregate.ingress")
    gone = socket.socket()
    gone.bind(("127.0.0.1", 0))
    dead = gone.getsockname()[1]
    gone.close()
    ing = await ingress(lst(dead))
    assert await refused(ing) == {"backend_unreachable": 1}
    assert "client 203.0.113.7:51234" in caplog.text and "unreachable" in caplog.text


async def test_max_connections_counts_the_pumps_connections_and_close_ends_them(backends, ingress):
    svc = await backends(echo)
    ing = await ingress(lst(svc.port, max_connections=2))
    port = ing.addresses["web"][1]
    header = encode_v2(CLIENT, ("127.0.0.1", port))
    conns = []
    for i in range(2):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(header + b"%d" % i)
        async with asyncio.timeout(5):
            assert await r.readexactly(1) == b"%d" % i
        conns.append((r, w))
    assert fast_of(ing).open == 2 and ing.status()["web"]["open"] == 2
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(header + b"3")
    async with asyncio.timeout(5):
        assert await r.read(-1) == b""
    w.close()
    assert ing.status()["web"]["refused"] == {"connection_limit": 1}
    await ing.close()
    for r, _ in conns:
        async with asyncio.timeout(5):
            assert await r.read(-1) == b""  # closed by close()
    for _, w in conns:
        w.close()


async def echoed(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection whose header and one byte went through and came back."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(encode_v2(CLIENT, ("127.0.0.1", port)) + b"x")
    async with asyncio.timeout(5):
        assert await r.readexactly(1) == b"x"
    return r, w


async def test_idle_connections_on_the_fast_route_are_swept(backends, ingress):
    svc = await backends(echo)
    ing = await ingress(lst(svc.port, idle_timeout=0.4))
    r, w = await echoed(ing.addresses["web"][1])
    async with asyncio.timeout(5):
        assert await r.read(-1) == b""  # then nothing: closed by the sweep
    w.close()
    await until(lambda: ing.status()["web"]["open"] == 0)
    assert ing.status()["web"]["refused"] == {"idle_timeout": 1}


async def test_a_reload_retargets_the_fast_route_and_a_sniffing_config_turns_it_off(backends, ingress):
    a, b = await backends(lambda d: b"A"), await backends(lambda d: b"B")
    ing = await ingress(lst(a.port))
    port = ing.addresses["web"][1]
    header = encode_v2(CLIENT, ("127.0.0.1", port))

    async def ask() -> bytes:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(header + b"?")
        async with asyncio.timeout(5):
            got = await r.readexactly(1)
        w.close()
        return got

    assert await ask() == b"A"
    held_r, held_w = await asyncio.open_connection("127.0.0.1", port)  # open across the reloads
    held_w.write(header + b"?")
    async with asyncio.timeout(5):
        assert await held_r.readexactly(1) == b"A"
    await ing.reload(IngressConfig((lst(b.port),)))
    assert fast_of(ing).enabled and await ask() == b"B"
    sniffing = Listener(name="web", listen=("127.0.0.1", port), trusted=("127.0.0.1",),
                        routes=(Route("app", ("127.0.0.1", a.port), host=("a.example",)),
                                Route("other", ("127.0.0.1", b.port))), default_route="other")
    await ing.reload(IngressConfig((sniffing,)))
    assert not fast_of(ing).enabled
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(header + b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n")
    async with asyncio.timeout(5):
        assert await r.readexactly(1) == b"A"  # routed by Host: Python sniffed it
    w.close()
    held_w.write(b"?")
    async with asyncio.timeout(5):
        assert await held_r.readexactly(1) == b"A"  # the connection from before still works
    held_w.close()
    await until(lambda: ing.status()["web"]["open"] == 0)
    assert ing.status()["web"]["accepted"] == 4


async def test_with_info_logging_each_client_is_named(backends, ingress, caplog):
    caplog.set_level(logging.INFO, "wiregate.ingress")
    svc = await backends(echo)
    ing = await ingress(lst(svc.port))
    _, w = await echoed(ing.addresses["web"][1])
    w.close()
    assert fast_of(ing).accepted == 1
    assert "client 203.0.113.7:51234 via 127.0.0.1:" in caplog.text and "-> route app" in caplog.text


async def test_with_acme_the_fast_route_serves_and_steps_aside_while_an_http01_token_waits(backends, ingress):
    """`wiregate run` at home always gives the ingress an ACME book: the fast route must work with one, and let
    the CA's HTTP-01 request be seen while a token is pending (the listener sniffs then)."""
    svc = await backends(echo)
    book = Book()
    ing = await ingress(lst(svc.port), acme=book)
    port = ing.addresses["web"][1]
    fast = fast_of(ing)
    _, w = await echoed(port)
    w.close()
    assert fast.enabled and fast.accepted == 1
    book.add_http01("tok", "tok.thumb")
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(encode_v2(CLIENT, ("127.0.0.1", port)) + b"GET /.well-known/acme-challenge/tok HTTP/1.1\r\nHost: a\r\n\r\n")
    async with asyncio.timeout(5):
        answer = await r.read(-1)
    w.close()
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"tok.thumb") and fast.accepted == 1
    book.remove_http01("tok")
    _, w = await echoed(port)
    w.close()
    assert fast.accepted == 2 and ing.status()["web"]["fast_route"] == {"enabled": True, "accepted": 2}

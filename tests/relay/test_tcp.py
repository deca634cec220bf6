"""The TCP relay in-process, against small asyncio backends: data path, failover, health, limits, reload, drain."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import struct
import threading
import time

import pytest

from wiregate.errors import ConfigError, WiregateError
from wiregate.proxyproto import PP2_TYPE_CRC32C, PP2_TYPE_UNIQUE_ID, Command
from wiregate.relay import Backend, HealthCheck, RelayConfig

from .conftest import (EchoBackend, eventually, exchange, greeting, local_port, running, sockets_of, tcp_service,
                       unanswering_listener)

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_payload_arrives_after_a_header_naming_the_client(version, splice):
    b = await EchoBackend().start()
    port = local_port()
    cfg = RelayConfig((tcp_service(port, [b.backend], proxy_protocol=version),), splice=splice)
    async with running(cfg):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client_port = writer.get_extra_info("sockname")[1]
        writer.write(b"hello relay")
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(-1), 5) == b"hello relay"
        writer.close()
    h = b.headers[0]
    assert h.version == int(version[1])
    assert h.source == ("127.0.0.1", client_port)
    assert h.destination == ("127.0.0.1", port)
    await b.stop()


async def test_v2_tlvs_unique_id_and_crc32c_are_sent():
    b = await EchoBackend().start()
    port = local_port()
    cfg = RelayConfig((tcp_service(port, [b.backend], proxy_tlvs=("crc32c", "unique-id")),))
    async with running(cfg):
        assert await exchange(port, b"x") == b"x"
        assert await exchange(port, b"y") == b"y"
    ids = [h.tlv(PP2_TYPE_UNIQUE_ID) for h in b.headers]
    assert all(h.tlv(PP2_TYPE_CRC32C) for h in b.headers)  # the decoder verified the checksum
    assert len(ids) == 2 and ids[0] != ids[1] and len(ids[0]) == 32
    await b.stop()


async def test_ipv6_listener_reports_the_ipv6_client():
    b = await EchoBackend().start()
    port = local_port()
    svc = tcp_service(port, [b.backend])
    svc = type(svc)(**{**{f: getattr(svc, f) for f in svc.__slots__}, "listen": (("::1", port), ("127.0.0.1", port))})
    async with running(RelayConfig((svc,))):
        assert await exchange(port, b"six", host="::1") == b"six"
        assert await exchange(port, b"four") == b"four"
    assert b.headers[0].source[0] == "::1" and b.headers[0].destination == ("::1", port)
    assert b.headers[1].source[0] == "127.0.0.1"
    await b.stop()


async def test_half_close_keeps_the_other_direction_open(splice):
    b = await EchoBackend(after_eof=b"|reply sent after your FIN").start()
    port = local_port()
    async with running(RelayConfig((tcp_service(port, [b.backend]),), splice=splice)):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"request")
        writer.write_eof()  # FIN toward the backend...
        # ...and the backend->client direction still delivers everything, then its own FIN
        assert await asyncio.wait_for(reader.read(-1), 5) == b"request|reply sent after your FIN"
        writer.close()
    await b.stop()


async def test_a_backend_reset_is_passed_on_to_the_client(splice):
    async def rst(reader, writer):
        await reader.read(100)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    server = await asyncio.start_server(rst, "127.0.0.1", 0)
    bport = server.sockets[0].getsockname()[1]
    port = local_port()
    cfg = RelayConfig((tcp_service(port, [Backend("127.0.0.1", bport)], proxy_protocol="none"),), splice=splice)
    async with running(cfg):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"trigger")
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(-1), 5)
        writer.close()
    server.close()


async def test_failover_when_a_backend_dies():
    b1 = await EchoBackend("one", greet=True).start()
    b2 = await EchoBackend("two", greet=True).start()
    port = local_port()
    cfg = RelayConfig((tcp_service(port, [b1.backend, b2.backend], retries=2),))
    async with running(cfg) as relay:
        assert {await greeting(port) for _ in range(4)} == {"one", "two"}
        await b1.stop()
        # every new client is served: a refused connect is retried on the other backend
        assert [await greeting(port) for _ in range(6)] == ["two"] * 6
        st = relay.status()["services"]["svc"]["backends"]
        assert st[0]["state"] == "down" and st[0]["failed_connects"] >= 1
    await b2.stop()


async def test_bytes_sent_before_the_accept_reach_the_backend_after_a_retry(splice):
    """A client that has sent its request and half-closed while waiting in the backlog (the C pump reads such bytes
    at accept and sends them with the header): the first backend refuses, the second gets header + request + EOF
    and its answer comes back."""
    good = await EchoBackend("two", after_eof=b"|done").start()
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # bound, never listening: refused
    port = local_port()
    svc = tcp_service(port, [Backend("127.0.0.1", dead.getsockname()[1], name="one"), good.backend], retries=1,
                      balance="roundrobin")
    loop = asyncio.get_running_loop()
    async with running(RelayConfig((svc,), splice=splice)) as relay:
        rt = relay.services["svc"]
        rt.pause_all()  # clients wait in the backlog, with their bytes
        waiting = socket.create_connection(("127.0.0.1", port))
        waiting_addr = waiting.getsockname()
        waiting.sendall(b"request sent early")
        waiting.shutdown(socket.SHUT_WR)
        rt.resume_all()
        waiting.setblocking(False)
        answer = b""
        while True:
            chunk = await asyncio.wait_for(loop.sock_recv(waiting, 4096), 10)
            if not chunk:
                break
            answer += chunk
        assert answer == b"request sent early|done"
        waiting.close()
        assert [h.source for h in good.headers] == [waiting_addr]
        st = relay.status()["services"]["svc"]["backends"]
        assert st[0]["failed_connects"] == 1 and st[1]["total"] == 1
    await good.stop()
    dead.close()


async def test_connect_timeout_retries_on_another_backend():
    made = await unanswering_listener()
    hole = made[0]
    good = await EchoBackend("good", greet=True).start()
    port = local_port()
    cfg = RelayConfig((tcp_service(port, [Backend("127.0.0.1", hole.getsockname()[1], name="hole"), good.backend],
                                   connect_timeout=0.3, retries=1, balance="roundrobin"),))
    async with running(cfg):
        t0 = time.monotonic()
        names = [await greeting(port) for _ in range(2)]
        assert names == ["good", "good"]
        assert time.monotonic() - t0 < 3
    for s in made:
        s.close()
    await good.stop()


def state(relay, i: int, svc: str = "svc") -> str:
    """Health state of backend `i` of a service."""
    return relay.status()["services"][svc]["backends"][i]["state"]


async def test_health_checks_mark_down_and_recovery_brings_it_back():
    b1 = await EchoBackend("one", greet=True).start()
    b2 = await EchoBackend("two", greet=True).start()
    port = local_port()
    hc = HealthCheck(interval=0.1, timeout=0.2, rise=2, fall=2, send_proxy=True)
    cfg = RelayConfig((tcp_service(port, [b1.backend, b2.backend], health=hc),))
    async with running(cfg) as relay:
        one_port = b1.port
        await b1.stop()
        await eventually(lambda: state(relay, 0) == "down", what="backend one marked down")
        assert [await greeting(port) for _ in range(4)] == ["two"] * 4
        assert b1.clients == 0  # the dead backend got no client connection once marked down
        b1 = await EchoBackend("one", greet=True).start(one_port)
        await eventually(lambda: state(relay, 0) == "up", what="backend one back up")
        assert "one" in {await greeting(port) for _ in range(4)}
    # check-send-proxy: checks announced themselves with a LOCAL header
    assert any(h.command is Command.LOCAL for h in b2.headers)
    await b1.stop()
    await b2.stop()


async def test_backup_backend_is_used_only_when_primaries_are_down():
    p1 = await EchoBackend("p1", greet=True).start()
    p2 = await EchoBackend("p2", greet=True).start()
    bk = await EchoBackend("backup", greet=True).start()
    port = local_port()
    backends = [p1.backend, p2.backend, Backend("127.0.0.1", bk.port, backup=True, name="backup")]
    hc = HealthCheck(interval=0.1, timeout=0.2, rise=1, fall=1)
    async with running(RelayConfig((tcp_service(port, backends, health=hc),))) as relay:
        assert {await greeting(port) for _ in range(6)} == {"p1", "p2"}
        assert bk.clients == 0
        await p1.stop()
        await p2.stop()
        await eventually(lambda: state(relay, 0) == state(relay, 1) == "down", what="both primaries down")
        assert {await greeting(port) for _ in range(3)} == {"backup"}
        p1 = await EchoBackend("p1", greet=True).start(p1.port)
        await eventually(lambda: state(relay, 0) == "up", what="p1 back up")
        assert {await greeting(port) for _ in range(3)} == {"p1"}
    await p1.stop()
    await bk.stop()


async def test_per_source_limit_refuses_extra_connections_from_one_address():
    b = await EchoBackend(greet=True).start()
    port = local_port()
    async with running(RelayConfig((tcp_service(port, [b.backend], max_per_source=2),))) as relay:
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        for r, _ in held:
            assert await r.readline() == b"b\n"
        r3, w3 = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(r3.read(-1), 5) == b""  # closed without reaching the backend
        assert relay.status()["services"]["svc"]["totals"]["refused"] == 1
        w3.close()
        held[0][1].close()
        await eventually(lambda: relay.open_connections() == 1, what="the closed connections to end")
        assert await greeting(port) == "b"  # room again
        for _, w in held:
            w.close()
    await b.stop()


async def test_max_connections_makes_new_clients_wait_until_one_ends():
    b = await EchoBackend(greet=True).start()
    port = local_port()
    async with running(RelayConfig((tcp_service(port, [b.backend], max_connections=1),))):
        r1, w1 = await asyncio.open_connection("127.0.0.1", port)
        assert await r1.readline() == b"b\n"
        r2, w2 = await asyncio.open_connection("127.0.0.1", port)  # sits in the kernel backlog
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(r2.readline(), 0.3)
        w1.close()
        assert await asyncio.wait_for(r2.readline(), 5) == b"b\n"
        w2.close()
    await b.stop()


async def test_idle_connections_are_closed_after_the_idle_timeout():
    b = await EchoBackend().start()
    port = local_port()
    # generous margins: a loaded CI machine can stretch a 0.1 s sleep a lot
    async with running(RelayConfig((tcp_service(port, [b.backend], idle_timeout=0.8),))):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        t_start = time.monotonic()
        while time.monotonic() - t_start < 1.6:  # traffic keeps it open past twice the timeout
            writer.write(b"ping")
            assert await reader.readexactly(4) == b"ping"
            await asyncio.sleep(0.1)
        t0 = time.monotonic()
        assert await asyncio.wait_for(reader.read(-1), 6) == b""
        assert 0.6 < time.monotonic() - t0 < 4.0
        writer.close()
    await b.stop()


async def test_a_slow_reader_does_not_stall_others_and_memory_stays_bounded(splice):
    """A client that never reads: the backend soon cannot write more (bounded), others stay fast."""
    stuck = {"sent": 0, "blocked": False}
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen()

    def firehose():  # writes as fast as the relay takes it, for a bounded time and amount
        conn, _ = lsock.accept()
        conn.setblocking(False)
        chunk = b"x" * 65536
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and stuck["sent"] < 256 << 20 and not stuck.get("done"):
            try:
                stuck["sent"] += conn.send(chunk)
            except BlockingIOError:
                stuck["blocked"] = True
                time.sleep(0.01)
        stuck["blocked"] = True
        conn.close()

    thread = threading.Thread(target=firehose, daemon=True)
    thread.start()
    echo = await EchoBackend(proxy=False).start()
    p_hose, p_echo = local_port(), local_port()
    cfg = RelayConfig((tcp_service(p_hose, [Backend("127.0.0.1", lsock.getsockname()[1])],
                                   proxy_protocol="none", name="hose"),
                       tcp_service(p_echo, [echo.backend], proxy_protocol="none", name="echo")), splice=splice)
    async with running(cfg) as relay:
        slow = socket.create_connection(("127.0.0.1", p_hose))
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        await eventually(lambda: stuck["blocked"], what="the firehose to block")
        t0 = time.monotonic()
        for _ in range(20):
            payload = os.urandom(100_000)
            assert await exchange(p_echo, payload) == payload
        assert time.monotonic() - t0 < 5
        # wait until the firehose's count stops growing (nothing more fits anywhere), then check the bound
        last = [-1, 0]

        def settled() -> bool:
            if stuck["sent"] == last[0]:
                last[1] += 1
            else:
                last[:] = [stuck["sent"], 0]
            return last[1] >= 10  # unchanged for 10 polls (>= 0.2 s)
        await eventually(settled, what="the firehose to stall")
        # kernel socket buffers on both legs plus one pipe (or one chunk) at most: far below what was offered
        assert stuck["sent"] < 48 << 20
        if splice:  # the blocked direction parks at most one pipe's worth, and the pool knows it
            assert 0 < relay.pipe_bytes_held <= relay.pipes.size
        stuck["done"] = True
        slow.close()
        thread.join(5)
    assert relay.pipe_bytes_held == 0
    lsock.close()
    await echo.stop()


async def test_reload_keeps_open_connections_and_switches_new_ones():
    b1 = await EchoBackend("one", greet=True).start()
    b2 = await EchoBackend("two", greet=True).start()
    port, port2 = local_port(), local_port()
    async with running(RelayConfig((tcp_service(port, [b1.backend]),))) as relay:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await reader.readline() == b"one\n"
        new = RelayConfig((tcp_service(port, [b2.backend]), tcp_service(port2, [b1.backend], name="extra")))
        await relay.reload(new)
        writer.write(b"still here")  # the connection made before the reload still works
        assert await reader.readexactly(10) == b"still here"
        assert await greeting(port) == "two"
        assert await greeting(port2) == "one"
        # removing a service closes its listener but not its open connections
        r2, w2 = await asyncio.open_connection("127.0.0.1", port2)
        assert await r2.readline() == b"one\n"
        await relay.reload(RelayConfig((tcp_service(port, [b2.backend]),)))
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port2)
        w2.write(b"retired ok")
        assert await r2.readexactly(10) == b"retired ok"
        writer.close()
        w2.close()
    await b1.stop()
    await b2.stop()


async def test_a_bad_reload_is_refused_and_the_running_config_stays():
    b = await EchoBackend("one", greet=True).start()
    port = local_port()
    cfg = RelayConfig((tcp_service(port, [b.backend]),))
    async with running(cfg) as relay:
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        bad = RelayConfig((tcp_service(port, [b.backend]), tcp_service(taken, [b.backend], name="clash")))
        with pytest.raises(ConfigError, match=f"cannot listen on tcp 127.0.0.1:{taken}"):
            await relay.reload(bad)
        with pytest.raises(ConfigError, match="does not resolve"):
            await relay.reload(RelayConfig((tcp_service(port, [Backend("no-such-host.invalid", 80)]),)))
        with pytest.raises(ConfigError):
            await relay.reload("not a config")  # type: ignore[arg-type]
        assert relay.config is cfg
        assert await greeting(port) == "one"
        busy.close()
    await b.stop()


async def test_start_reports_the_address_it_cannot_bind():
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    from wiregate.relay import Relay
    relay = Relay(RelayConfig((tcp_service(port, [Backend("127.0.0.1", 9)]),)))
    with pytest.raises(WiregateError, match=f"127.0.0.1:{port}"):
        await relay.start()
    busy.close()


async def test_graceful_close_drains_open_connections_and_refuses_new_ones():
    b = await EchoBackend().start()
    port = local_port()
    from wiregate.relay import Relay
    relay = Relay(RelayConfig((tcp_service(port, [b.backend]),)))
    await relay.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"a")
    assert await reader.readexactly(1) == b"a"
    closing = asyncio.create_task(relay.close(drain_timeout=5))
    await eventually(lambda: relay.closing and not relay.listeners, what="the listeners to close")
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"during drain")
    assert await reader.readexactly(12) == b"during drain"
    assert not closing.done()
    t0 = time.monotonic()
    writer.write_eof()
    assert await reader.read(-1) == b""
    await asyncio.wait_for(closing, 3)
    assert time.monotonic() - t0 < 2  # ended when the last connection did, not at the deadline
    writer.close()
    await b.stop()


async def test_drain_deadline_closes_connections_that_stay_open():
    b = await EchoBackend().start()
    port = local_port()
    from wiregate.relay import Relay
    relay = Relay(RelayConfig((tcp_service(port, [b.backend]),)))
    await relay.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"a")
    await reader.readexactly(1)
    t0 = time.monotonic()
    await relay.close(drain_timeout=0.3)
    assert 0.25 < time.monotonic() - t0 < 2
    assert await asyncio.wait_for(reader.read(-1), 2) == b""
    writer.close()
    await b.stop()


@pytest.mark.timeout(150)
async def test_2000_concurrent_connections_carry_byte_exact_payloads(many_files, splice):
    b = await EchoBackend(proxy=True).start()
    port = local_port()
    n = 2000
    cfg = RelayConfig((tcp_service(port, [b.backend], max_connections=n + 10, max_per_source=n + 10),),
                      splice=splice)
    async with running(cfg, drain=5) as relay:
        all_open = asyncio.Event()
        peak = 0

        async def one(i: int) -> bool:
            nonlocal peak
            payload = hashlib.sha256(str(i).encode()).digest() * (1 + i % 64)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await asyncio.wait_for(all_open.wait(), 60)  # every connection is open before any sends
            writer.write(payload)
            writer.write_eof()
            got = await reader.read(-1)
            writer.close()
            return got == payload

        async def watch() -> None:
            nonlocal peak
            # the backend holds all n relayed connections; a dropped one would never come, so say why on failure
            await eventually(lambda: b.clients >= n, 100, what=f"all {n} relayed connections (backend has "
                             f"{b.clients}; relay totals {relay.status()['services']['svc']['totals']})")
            peak = relay.open_connections()
            all_open.set()

        t0 = time.monotonic()
        watcher = asyncio.create_task(watch())
        # bounds are generous (a loaded 2-core machine runs client, relay and backend in this one process)
        results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), 120)
        await watcher
        assert peak == n  # they really were open together
        assert all(results)
        assert time.monotonic() - t0 < 120
    assert len(b.headers) == n
    await b.stop()


async def test_server_first_protocols_get_the_header_without_delay(splice):
    """The header is held back (MSG_MORE) to share a segment with the client's first bytes; a silent client must
    not leave it stuck (Linux would release it only after 200 ms)."""
    b = await EchoBackend("smtp", greet=True).start()
    port = local_port()
    async with running(RelayConfig((tcp_service(port, [b.backend]),), splice=splice)):
        for _ in range(3):
            t0 = time.monotonic()
            assert await greeting(port) == "smtp"
            assert time.monotonic() - t0 < 0.15
    await b.stop()


async def test_a_client_reset_is_passed_on_to_the_backend(splice):
    seen: asyncio.Future = asyncio.get_running_loop().create_future()

    async def watch(reader, writer):
        try:
            await reader.read(-1)
            seen.set_result("eof")
        except ConnectionResetError:
            seen.set_result("reset")
        writer.close()

    server = await asyncio.start_server(watch, "127.0.0.1", 0)
    port = local_port()
    cfg = RelayConfig((tcp_service(port, [Backend("127.0.0.1", server.sockets[0].getsockname()[1])],
                                   proxy_protocol="none"),), splice=splice)
    async with running(cfg) as relay:
        c = socket.create_connection(("127.0.0.1", port))
        c.sendall(b"x")
        await eventually(lambda: any(conn.established for conn in relay.services["svc"].connections),
                         what="the relayed connection to be established")
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
        assert await asyncio.wait_for(seen, 5) == "reset"
    server.close()


async def test_ipv6_backend_gets_the_ipv4_client_in_its_header():
    got: asyncio.Future = asyncio.get_running_loop().create_future()

    async def handle(reader, writer):
        from wiregate.proxyproto import Decoder
        dec = Decoder()
        header = None
        while header is None:
            header = dec.feed(await reader.read(4096))
        got.set_result(header)
        writer.write(b"ok")
        writer.write_eof()

    server = await asyncio.start_server(handle, "::1", 0)
    bport = server.sockets[0].getsockname()[1]
    port = local_port()
    async with running(RelayConfig((tcp_service(port, [Backend("::1", bport)]),))):
        assert await exchange(port, b"") == b"ok"
    h = await got
    # the header names the client and the listener; the backend's own family does not matter (as in HAProxy)
    assert h.source[0] == "127.0.0.1" and h.destination == ("127.0.0.1", port)
    server.close()


async def test_a_wildcard_listener_puts_the_address_the_client_reached_in_the_header():
    b = await EchoBackend().start()
    port = local_port()
    svc = tcp_service(port, [b.backend])
    svc = type(svc)(**{**{f: getattr(svc, f) for f in svc.__slots__}, "listen": (("0.0.0.0", port),)})
    async with running(RelayConfig((svc,))):
        assert await exchange(port, b"two", host="127.0.0.2") == b"two"
        assert await exchange(port, b"three", host="127.0.0.3") == b"three"
    assert [h.destination for h in b.headers] == [("127.0.0.2", port), ("127.0.0.3", port)]
    await b.stop()


async def test_closed_connections_are_freed_at_once_without_the_cycle_collector(splice):
    """A finished connection leaves no reference cycle behind: it is freed when it closes, and no pile of
    connection objects waits for a (latency-costly) full garbage collection."""
    import gc

    b = await EchoBackend().start()
    port = local_port()
    async with running(RelayConfig((tcp_service(port, [b.backend]),), splice=splice)) as relay:
        assert await exchange(port, b"warm") == b"warm"
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)  # collected cycles land in gc.garbage instead of being freed
        try:
            for i in range(20):
                assert await exchange(port, b"%d" % i) == b"%d" % i
            await eventually(lambda: relay.open_connections() == 0, what="every connection to end")
            gc.collect()
            leaked = [type(o).__name__ for o in gc.garbage if type(o).__module__.startswith("wiregate.relay")]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
    assert leaked == []
    await b.stop()


async def test_both_sockets_of_a_relayed_connection_have_nodelay(splice):
    """Small writes are passed on at once in both directions (accepted sockets inherit TCP_NODELAY from the
    listener; backend sockets set it themselves)."""
    b = await EchoBackend().start()
    port = local_port()
    async with running(RelayConfig((tcp_service(port, [b.backend]),), splice=splice)) as relay:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"x")
        assert await reader.readexactly(1) == b"x"
        [conn] = relay.services["svc"].connections
        for sock in sockets_of(conn):
            with sock:
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        t0 = time.monotonic()
        for _ in range(20):  # ping-pong of 1-byte writes: Nagle + delayed ACK would cost ~40 ms a round
            writer.write(b"y")
            assert await reader.readexactly(1) == b"y"
        assert time.monotonic() - t0 < 0.5
        writer.close()
    await b.stop()

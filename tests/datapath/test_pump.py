"""The C pump (wiregate.datapath._pump) on its own: accept, connect (at once, later, refused, timed out), the first
bytes, both directions, half-close, resets, back-pressure and pooled pipes, and errors in owners' callbacks.
The relay's and the ingress's suites run on it too (and again on the Python data path)."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import struct
import time

import pytest

from wiregate.datapath import pump as cpump

from tests.relay.conftest import eventually, unanswering_listener

# CI builds the extension (gcc and the Python headers are there): a build that silently failed must fail here
pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(not cpump.available() and os.environ.get("CI") != "true",
                                 reason="the C pump was not built here (optional extension)")]


class Owner:
    """Records what the pump tells it."""

    def __init__(self) -> None:
        self.connected: list[int] = []
        self.closed = 0
        self.link: cpump.Link | None = None

    def _pump_connected(self, err: int) -> None:
        self.connected.append(err)

    def _pump_closed(self) -> None:
        self.closed += 1


def listener(backlog: int = 64) -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(backlog)
    s.setblocking(False)
    return s


async def accept(sock: socket.socket) -> socket.socket:
    loop = asyncio.get_running_loop()
    c, _ = await loop.sock_accept(sock)
    return c


async def recv_all(sock: socket.socket, n: int) -> bytes:
    loop = asyncio.get_running_loop()
    out = b""
    while len(out) < n:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 10)
        if not chunk:
            break
        out += chunk
    return out


async def pumped_pair(pump, front: socket.socket, back: socket.socket, owner: Owner, initial: bytes = b"",
                      **kw):
    """A client connected to `front`, accepted by the pump, linked to a connection accepted from `back`."""
    loop = asyncio.get_running_loop()
    client = socket.socket()
    client.setblocking(False)
    await loop.sock_connect(client, front.getsockname())
    batch: list = []
    await eventually(lambda: batch.extend(pump.accept(front.fileno(), 8)) or batch, what="the pump to accept")
    [(fd, peer, local, first)] = batch
    assert local is None and first is None  # (neither was asked for)
    assert peer == client.getsockname()
    link = pump.connect(fd, socket.AF_INET, back.getsockname(), initial, 5.0, owner, **kw)
    owner.link = link
    if link.connected:
        link.start()
    server = await accept(back)
    server.setblocking(False)
    return client, server, link


async def test_bytes_move_both_ways_half_close_is_passed_on_and_the_owner_hears_once():
    pump = cpump.attach(asyncio.get_running_loop())
    front, back = listener(), listener()
    owner = Owner()
    client, server, link = await pumped_pair(pump, front, back, owner, b"HEADER", first_read=True)
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(client, b"request")
    assert await recv_all(server, 13) == b"HEADERrequest"
    await loop.sock_sendall(server, b"answer")
    assert await recv_all(client, 6) == b"answer"
    assert link.linked and not link.closed
    client.shutdown(socket.SHUT_WR)  # half-close: the server sees EOF, and can still answer
    assert await recv_all(server, 1) == b""
    await loop.sock_sendall(server, b"after eof")
    assert await recv_all(client, 9) == b"after eof"
    server.close()
    assert await recv_all(client, 1) == b""
    await eventually(lambda: owner.closed == 1, what="the owner to hear the close")
    # a connect that completed at once has no callback; one that did not, one with 0
    assert link.closed and link.error == 0 and owner.connected in ([], [0])
    link.close()  # idempotent
    assert owner.closed == 1
    assert pump.stats["links"] == 0 and pump.stats["held"] == 0
    client.close()
    cpump.detach(asyncio.get_running_loop(), pump)
    front.close()
    back.close()


async def test_a_refused_connect_raises_and_leaves_the_client_to_the_caller():
    pump = cpump.attach(asyncio.get_running_loop())
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))  # bound, not listening: refused
    a, b = socket.socketpair()
    owner = Owner()
    try:
        link = pump.connect(a.fileno(), socket.AF_INET, probe.getsockname(), b"x", 5.0, owner)
    except ConnectionRefusedError:
        pass
    else:  # the refusal may come later, by the callback
        await eventually(lambda: owner.connected, what="the connect to end")
        assert owner.connected[0] != 0 and link.closed
    a.send(b"still mine")  # the client's socket was not closed
    assert b.recv(64) == b"still mine"
    assert pump.stats["links"] == 0
    cpump.detach(asyncio.get_running_loop(), pump)
    for s in (a, b, probe):
        s.close()


async def test_a_connect_that_gets_no_answer_times_out_on_the_pumps_timer():
    made = await unanswering_listener()
    hole = made[0]
    pump = cpump.attach(asyncio.get_running_loop())
    a, b = socket.socketpair()
    owners = [Owner(), Owner()]
    t0 = time.monotonic()
    # the later deadline first: the timer must be re-armed for the earlier one
    links = [pump.connect(a.fileno(), socket.AF_INET, hole.getsockname(), b"", t, o)
             for t, o in ((0.6, owners[0]), (0.2, owners[1]))]
    await eventually(lambda: owners[1].connected, what="the short connect to time out")
    short = time.monotonic() - t0
    assert owners[1].connected == [cpump.TIMED_OUT] and links[1].closed and not owners[0].connected
    await eventually(lambda: owners[0].connected, what="the long connect to time out")
    assert owners[0].connected == [cpump.TIMED_OUT]
    assert 0.15 < short < 0.55 <= time.monotonic() - t0
    assert owners[0].closed == owners[1].closed == 0  # a failed connect is not a close
    a.send(b"x")
    assert b.recv(1) == b"x"
    cpump.detach(asyncio.get_running_loop(), pump)
    for s in (*made, a, b):
        s.close()


async def test_first_bytes_sent_at_once_find_a_loopback_connect_done_and_need_no_callback():
    """On loopback the handshake completes inside connect(): the pump's first send finds it done, so the link is
    connected on return (no readiness round trip, no `_pump_connected`) and the header leaves once, before the
    client's bytes."""
    loop = asyncio.get_running_loop()
    pump = cpump.attach(loop)
    front, back = listener(), listener()
    at_once = 0
    for i in range(20):  # (a machine busy enough to defer loopback's softirq work can make one connect wait)
        owner = Owner()
        client, server, link = await pumped_pair(pump, front, back, owner, b"HEAD%02d" % i, first_read=True)
        await loop.sock_sendall(client, b"request")
        assert await recv_all(server, 13) == b"HEAD%02drequest" % i
        assert owner.connected in ([], [0])
        at_once += owner.connected == []
        client.close()
        server.close()
        await eventually(lambda o=owner: o.closed == 1, what="the close")
    assert at_once >= 1 and pump.stats["connected_at_once"] == at_once
    cpump.detach(loop, pump)
    front.close()
    back.close()


async def test_a_connect_still_going_gets_its_first_bytes_once_and_misses_in_a_row_stop_the_early_send():
    """Where the first send finds the connect still going (EAGAIN) the bytes wait for the connect as before,
    and go exactly once; after 8 such misses in a row the pump stops trying it for a while."""
    made = await unanswering_listener()
    hole = made[0]
    loop = asyncio.get_running_loop()
    pump = cpump.attach(loop)
    back = listener()
    pairs = [socket.socketpair() for _ in range(8)]
    owners = [Owner() for _ in pairs]
    hanging = [pump.connect(a.detach(), socket.AF_INET, hole.getsockname(), b"HEADER", 30.0, o)
               for (a, _), o in zip(pairs, owners, strict=True)]  # (the links own the client descriptors)
    assert not any(link.connected for link in hanging) and pump.stats["connected_at_once"] == 0
    # the next connect would complete at once on loopback, but is not tried early: it waits for readiness
    a, b = socket.socketpair()
    owner = Owner()
    link = pump.connect(a.detach(), socket.AF_INET, back.getsockname(), b"HEADER", 5.0, owner)
    assert not link.connected
    await eventually(lambda: owner.connected == [0], what="the connect's callback")
    server = await accept(back)
    server.setblocking(False)
    assert await recv_all(server, 6) == b"HEADER"
    b.send(b"+more")
    assert await recv_all(server, 5) == b"+more"
    assert pump.stats["connected_at_once"] == 0
    link.close()
    server.close()
    for h in hanging:
        h.close()
    cpump.detach(loop, pump)
    for s in (*made, back, b, *(y for _, y in pairs)):
        s.close()


TCP_CLOSE_WAIT = 8  # tcpi_state (linux/tcp_states.h): the peer's FIN has arrived


def tcp_info(sock: socket.socket) -> tuple[int, int]:
    """(unacked, segs_in) from the kernel's struct tcp_info (linux/tcp.h: 8 bytes of u8 fields, then u32s from
    tcpi_rto; tcpi_segs_in after the four u64 rates and byte counts)."""
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return struct.unpack_from("I", raw, 24)[0], struct.unpack_from("I", raw, 140)[0]


async def test_a_backends_last_bytes_and_its_fin_reach_the_client_in_one_segment():
    """When the backend's FIN is already there as its last bytes are read (EPOLLRDHUP), the pump reads the EOF in
    the same round and the FIN leaves with those bytes: one segment for the client instead of two."""
    loop = asyncio.get_running_loop()
    pump = cpump.attach(loop)
    front, back = listener(), listener()
    owner = Owner()
    client, server, link = await pumped_pair(pump, front, back, owner, b"", first_read=True)
    await loop.sock_sendall(client, b"request")
    assert await recv_all(server, 7) == b"request"
    await eventually(lambda: tcp_info(client)[0] == 0, what="the client's request to be acknowledged")
    before = tcp_info(client)[1]
    server.sendall(b"answer")
    server.close()
    # the pump runs on this loop: hold it until the FIN (after the answer) has reached the pump's backend socket,
    # which a busy machine may leave to ksoftirqd for a while
    back_end = socket.socket(fileno=os.dup(link.backend_fileno))
    deadline = time.monotonic() + 10
    while back_end.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] != TCP_CLOSE_WAIT:
        assert time.monotonic() < deadline, "the backend's FIN did not arrive"
        time.sleep(0.001)
    back_end.close()
    assert await recv_all(client, 7) == b"answer"  # and then EOF
    assert tcp_info(client)[1] - before == 1
    client.close()
    await eventually(lambda: owner.closed == 1, what="the close")
    cpump.detach(loop, pump)
    front.close()
    back.close()


async def test_a_client_reset_is_passed_on_as_a_reset_when_asked():
    pump = cpump.attach(asyncio.get_running_loop())
    front, back = listener(), listener()
    owner = Owner()
    client, server, link = await pumped_pair(pump, front, back, owner, pass_resets=True)
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(client, b"x")
    assert await recv_all(server, 1) == b"x"
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
    with pytest.raises(ConnectionResetError):
        await recv_all(server, 1)
    await eventually(lambda: owner.closed == 1, what="the close")
    assert link.error != 0
    server.close()
    cpump.detach(loop, pump)
    front.close()
    back.close()


async def test_a_slow_reader_holds_one_pipe_at_most_and_large_first_bytes_arrive_whole():
    pump = cpump.attach(asyncio.get_running_loop())
    front, back = listener(), listener()
    owner = Owner()
    first = os.urandom(3 << 20)  # larger than a socket buffer: the rest is sent as the backend drains
    client, server, link = await pumped_pair(pump, front, back, owner, first)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    loop = asyncio.get_running_loop()
    body = os.urandom(8 << 20)
    sender = asyncio.ensure_future(loop.sock_sendall(client, body))
    await eventually(lambda: pump.stats["held"] > 0, what="a pipe to hold bytes for the slow reader")
    assert pump.stats["held"] <= 1 << 20
    got = await recv_all(server, len(first) + len(body))
    assert got == first + body
    await asyncio.wait_for(sender, 10)
    assert pump.stats["held"] == 0
    link.close()
    assert owner.closed == 1
    client.close()
    server.close()
    cpump.detach(loop, pump)
    front.close()
    back.close()


async def test_an_error_in_an_owner_goes_to_the_loops_handler_and_the_pump_goes_on():
    loop = asyncio.get_running_loop()
    seen: list = []
    loop.set_exception_handler(lambda _loop, ctx: seen.append(ctx.get("exception")))
    pump = cpump.attach(loop)
    front, back = listener(), listener()

    class Broken(Owner):
        def _pump_closed(self) -> None:
            super()._pump_closed()
            raise RuntimeError("owner bug")

    owner = Broken()
    client, server, link = await pumped_pair(pump, front, back, owner)
    server.close()
    client.close()
    await eventually(lambda: seen, what="the handler to be called")
    assert isinstance(seen[0], RuntimeError) and owner.closed == 1
    other = Owner()  # the pump still serves
    c2, s2, _ = await pumped_pair(pump, front, back, other)
    await loop.sock_sendall(c2, b"ok")
    assert await recv_all(s2, 2) == b"ok"
    c2.close()
    s2.close()
    await eventually(lambda: other.closed == 1, what="the second close")
    cpump.detach(loop, pump)
    front.close()
    back.close()


async def test_accept_takes_at_most_max_and_reports_running_out_of_descriptors():
    import resource

    pump = cpump.attach(asyncio.get_running_loop())
    front = listener()
    clients = [socket.create_connection(front.getsockname()) for _ in range(5)]
    got: list = []
    await eventually(lambda: got.extend(pump.accept(front.fileno(), 3)) or len(got) >= 3, what="three accepts")
    assert len(got) == 3  # never more than asked: the rest wait in the backlog
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    spare: list[int] = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 1, hard))
    try:
        for _ in range(highest + 1):  # take every free number under the limit: then accept has none
            try:
                spare.append(os.dup(0))
            except OSError:
                break
        with pytest.raises(OSError) as err:
            pump.accept(front.fileno(), 2)
        assert err.value.errno == errno.EMFILE
    finally:
        for fd in spare:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    rest = pump.accept(front.fileno(), 8)
    assert len(rest) == 2
    for fd, *_ in got + rest:
        os.close(fd)
    for c in clients:
        c.close()
    cpump.detach(asyncio.get_running_loop(), pump)
    front.close()

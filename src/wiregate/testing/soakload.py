"""The two ends of the soak (`wiregate bench soak`): services behind the home, and a bounded mixed load.

    python -m wiregate.testing.soakload serve --http [fd00:5::2]:8080 --echo [fd00:5::2]:7007 --udp [fd00:5::2]:5353
    python -m wiregate.testing.soakload load 203.0.113.1 --seconds 400 [--http-port 80 --echo-port 7000 ...]

serve (the home network's services; each says which client address it was told):
- http: HTTP/1.1 with keep-alive; the client is the last `X-Forwarded-For` entry. The body is
  "PATH client IP\n" followed by 2,048 bytes derived from PATH (so the client can check every byte).
- echo: a PROXY header (v1 or v2), then "client IP\n", then an echo of every byte; EOF answered with EOF.
- udp: a PROXY v2 header on each datagram; the answer is b"client IP " + the payload.

load (run in the client's namespace) prints one JSON object per line, times from time.monotonic() (one clock for
every process of the machine):
- {"k": "req", "kind": "http_short"|"http_keep"|"udp", "t0", "t1", "ok", "err", "corrupt", "wrong_client"}
- {"k": "conn", "kind": "http_keep"|"stream", "t0", "t1", "lost", "err", "bytes", "corrupt", "wrong_client"}:
  a connection that was established (it carried an answer), "lost" when it ended with an error before the client
  closed it. A stream sends pseudo-random bytes for STREAM_LIFETIME seconds, checks each echoed byte and the
  SHA-256 of the whole, then half-closes and waits for the echo's EOF.
- {"k": "done"} last. A line "stop" on stdin (or EOF, or --seconds) ends the load: nothing new starts, streams
  half-close, every wait is bounded.
Every loop is bounded in count and time; every read in size and time.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import socket
import sys
import time

from wiregate import hostport
from wiregate.proxyproto import ProxyError
from wiregate.testing.samples import echo_back, read_datagram_proxy, read_proxy

MAX_HEAD = 16384
PAYLOAD_REPEAT = 64  # body = path line + sha256(path) * 64 = 2,048 bytes after the line
SHORT_EVERY = 0.2  # a new short HTTP request every 0.2 s, whatever the others are doing
SHORT_MAX_INFLIGHT = 16
SHORT_TIMEOUT = 10.0  # a short request may fail in a fault window: it is counted, not retried
KEEP_WORKERS, KEEP_EVERY, KEEP_LIFETIME = 2, 0.2, 30.0
STREAM_WORKERS, STREAM_LIFETIME, STREAM_CHUNK, STREAM_WINDOW = 3, 40.0, 8192, 131072
STREAM_EVERY = 0.05  # one chunk per 50 ms per stream: ~160 KB/s each way per stream
STREAM_MAX_BYTES = 64 * 1024 * 1024
UDP_WORKERS, UDP_EVERY, UDP_WAIT = 4, 0.2, 2.0
# an established connection must outlive any fault of the schedule (link down, loss): waiting on it is bounded by
# this, and only this long a silence counts as losing it (slowness is not loss)
STALL_TIMEOUT = 30.0
CONNECT_TIMEOUT = 10.0
MAX_REQUESTS = 1_000_000  # count bound of every loop (time bounds them long before)


def client_ip(text: str) -> str:
    """An address as the client would write it: IPv4-mapped IPv6 (mixed-family PROXY headers) back to IPv4."""
    return hostport.unmap_host(text)


def http_body(path: str, client: str) -> bytes:
    return f"{path} client {client}\n".encode() + hashlib.sha256(path.encode()).digest() * PAYLOAD_REPEAT


def mismatched(got: bytes, want: bytes) -> int:
    """Bytes of `got` that differ from `want` position by position, plus any length difference."""
    if got == want:
        return 0
    return sum(a != b for a, b in zip(got, want, strict=False)) + abs(len(got) - len(want))  # lengths may differ


# -- services -----------------------------------------------------------------------------------------------------
async def _read_head(reader: asyncio.StreamReader, buf: bytearray, timeout: float) -> bytes | None:
    """One request/response head from `buf` + reader (bounded); None on a clean EOF before any byte."""
    while b"\r\n\r\n" not in buf:
        if len(buf) > MAX_HEAD:
            raise ConnectionError("head too large")
        chunk = await asyncio.wait_for(reader.read(65536), timeout)
        if not chunk:
            if buf:
                raise ConnectionError("EOF inside a head")
            return None
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    buf[:] = rest
    return head


def _headers(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    hdrs: dict[str, str] = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return lines[0], hdrs


async def serve_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    buf = bytearray()
    try:
        for _ in range(MAX_REQUESTS):
            head = await _read_head(reader, buf, 120.0)
            if head is None:
                break
            first, hdrs = _headers(head)
            parts = first.split(" ")
            path = parts[1] if len(parts) == 3 else "?"
            xff = hdrs.get("x-forwarded-for", "")
            client = client_ip(xff.split(",")[-1].strip()) if xff else "none"
            body = http_body(path, client)
            close = hdrs.get("connection", "").lower() == "close"
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: "
                         + str(len(body)).encode() + (b"\r\nConnection: close" if close else b"") + b"\r\n\r\n"
                         + body)
            await writer.drain()
            if close:
                break
    except (TimeoutError, ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def serve_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        src, rest = await read_proxy(reader)
        writer.write(f"client {client_ip(src[0]) if src else 'local'}\n".encode() + rest)
        await writer.drain()
        await echo_back(reader, writer, idle=300.0)
    except (TimeoutError, ConnectionError, ProxyError, OSError):
        pass
    finally:
        writer.close()


class UdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        got = read_datagram_proxy(data)
        if got is None:
            return  # a datagram with a bad header is dropped, nothing else
        src, rest = got
        client = client_ip(src[0]) if src is not None else "local"
        self.transport.sendto(f"client {client} ".encode() + rest[:2048], addr)


def _addr(text: str) -> tuple[str, int]:
    return hostport.parse(text, names=False, what="address")


async def serve(args: argparse.Namespace) -> None:
    servers = [await asyncio.start_server(serve_http, *_addr(args.http)),
               await asyncio.start_server(serve_echo, *_addr(args.echo))]
    host, port = _addr(args.udp)
    await asyncio.get_running_loop().create_datagram_endpoint(
        UdpEcho, local_addr=(host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    print("ready", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        for s in servers:
            s.close()


# -- load ---------------------------------------------------------------------------------------------------------
def _emit(ev: dict) -> None:
    sys.stdout.write(json.dumps(ev, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def _response(reader: asyncio.StreamReader, buf: bytearray, timeout: float) -> tuple[str, bytes]:
    head = await _read_head(reader, buf, timeout)
    if head is None:
        raise ConnectionError("closed before the response")
    first, hdrs = _headers(head)
    n = int(hdrs.get("content-length", "-1"))
    if not 0 <= n <= 1 << 20:
        raise ConnectionError(f"bad Content-Length in {first!r}")
    while len(buf) < n:
        chunk = await asyncio.wait_for(reader.read(65536), timeout)
        if not chunk:
            raise ConnectionError("closed inside the body")
        buf += chunk
    body = bytes(buf[:n])
    del buf[:n]
    return first, body


def _check_body(path: str, body: bytes, want_client: str) -> tuple[int, bool]:
    """(corrupted bytes, wrong client) of one answer of the http service."""
    line, _, _ = body.partition(b"\n")
    words = line.decode("latin-1").split()
    client = words[2] if len(words) == 3 else ""
    return mismatched(body, http_body(path, client)), client != want_client


def _why(first: str, corrupt: int, wrong: bool) -> str | None:
    """Why an answer is not the right one (None when it is): its status line names a refusal."""
    if not corrupt and not wrong:
        return None
    return f"answer {first[:60]!r}" if " 200 " not in first + " " else ("wrong client" if wrong else "bad body")


class Load:
    def __init__(self, args: argparse.Namespace) -> None:
        self.host, self.args = args.host, args
        self.deadline = time.monotonic() + args.seconds
        self.stop = asyncio.Event()
        self.seed = args.seed

    def running(self) -> bool:
        return not self.stop.is_set() and time.monotonic() < self.deadline

    async def pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.stop.wait(), seconds)
        except TimeoutError:
            pass

    def req(self, kind: str, t0: float, ok: bool, err: str | None = None, corrupt: int = 0,
            wrong_client: bool = False) -> None:
        _emit({"k": "req", "kind": kind, "t0": t0, "t1": time.monotonic(), "ok": ok, "err": err,
               "corrupt": corrupt, "wrong_client": wrong_client})

    def conn(self, kind: str, t0: float, lost: bool, err: str | None, nbytes: int, corrupt: int = 0,
             wrong_client: bool = False) -> None:
        _emit({"k": "conn", "kind": kind, "t0": t0, "t1": time.monotonic(), "lost": lost, "err": err,
               "bytes": nbytes, "corrupt": corrupt, "wrong_client": wrong_client})

    # short HTTP: a new connection per request, started on a fixed beat
    async def http_short(self, n: int) -> None:
        t0, path = time.monotonic(), f"/short/{n}"
        writer = None
        try:
            async with asyncio.timeout(SHORT_TIMEOUT):
                reader, writer = await asyncio.open_connection(self.host, self.args.http_port)
                writer.write(f"GET {path} HTTP/1.1\r\nHost: www.example\r\nConnection: close\r\n\r\n".encode())
                first, body = await _response(reader, bytearray(), SHORT_TIMEOUT)
            corrupt, wrong = _check_body(path, body, self.args.client)
            self.req("http_short", t0, not corrupt and not wrong, _why(first, corrupt, wrong), corrupt, wrong)
        except (TimeoutError, OSError, ConnectionError, ValueError) as exc:
            self.req("http_short", t0, False, type(exc).__name__)
        finally:
            if writer is not None:
                writer.close()

    async def http_short_beat(self) -> None:
        tasks: set[asyncio.Task] = set()
        for n in range(MAX_REQUESTS):
            if not self.running():
                break
            if len(tasks) < SHORT_MAX_INFLIGHT:
                t = asyncio.create_task(self.http_short(n))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
            await self.pause(SHORT_EVERY)
        if tasks:
            await asyncio.gather(*tasks)

    # keep-alive HTTP: requests on one connection for KEEP_LIFETIME seconds, then a new connection
    async def http_keep(self, wid: int) -> None:
        for c in range(MAX_REQUESTS):
            if not self.running():
                return
            t_open, writer, served, nbytes, corrupt_total, wrong_any = time.monotonic(), None, 0, 0, 0, False
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    reader, writer = await asyncio.open_connection(self.host, self.args.http_port)
            except (TimeoutError, OSError) as exc:
                self.req("http_keep", t_open, False, f"connect: {type(exc).__name__}")
                await self.pause(0.5)
                continue
            buf, err = bytearray(), None
            for n in range(MAX_REQUESTS):
                if not self.running() or time.monotonic() - t_open > KEEP_LIFETIME:
                    break
                t0, path = time.monotonic(), f"/keep/{wid}/{c}/{n}"
                try:
                    writer.write(f"GET {path} HTTP/1.1\r\nHost: www.example\r\n\r\n".encode())
                    first, body = await _response(reader, buf, STALL_TIMEOUT)
                except (TimeoutError, OSError, ConnectionError, ValueError) as exc:
                    err = type(exc).__name__
                    self.req("http_keep", t0, False, err)
                    break
                corrupt, wrong = _check_body(path, body, self.args.client)
                served, nbytes = served + 1, nbytes + len(body)
                corrupt_total, wrong_any = corrupt_total + corrupt, wrong_any or wrong
                self.req("http_keep", t0, not corrupt and not wrong, _why(first, corrupt, wrong), corrupt, wrong)
                await self.pause(KEEP_EVERY)
            writer.close()
            if served:  # established: it carried at least one answer
                self.conn("http_keep", t_open, err is not None, err, nbytes, corrupt_total, wrong_any)
            if err is not None:
                await self.pause(0.5)

    # long TCP streams with checksums
    async def stream(self, wid: int) -> None:
        for c in range(MAX_REQUESTS):
            if not self.running():
                return
            t_open, writer = time.monotonic(), None
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    reader, writer = await asyncio.open_connection(self.host, self.args.echo_port)
                    greeting = await reader.readline()
                if not greeting.startswith(b"client "):
                    raise ConnectionError(f"greeting {greeting[:80]!r}")
            except (TimeoutError, OSError, ConnectionError, ValueError) as exc:
                if writer is not None:
                    writer.close()
                self.req("stream_open", t_open, False, type(exc).__name__)
                await self.pause(0.5)
                continue
            wrong = greeting.decode("latin-1").split()[1:] != [self.args.client]
            self.req("stream_open", t_open, not wrong, None, 0, wrong)
            err, _sent, received, corrupt = await self._carry(reader, writer, self.seed * 1000 + wid * 100 + c)
            writer.close()
            self.conn("stream", t_open, err is not None, err, received, corrupt, wrong)
            if err is not None:
                await self.pause(0.5)

    async def _carry(self, reader, writer, seed: int) -> tuple[str | None, int, int, int]:
        """Send pseudo-random bytes and check the echo; (error or None, sent, received, corrupted bytes)."""
        rng = random.Random(seed)
        pending = bytearray()
        sent = received = corrupt = 0
        h_sent, h_recv = hashlib.sha256(), hashlib.sha256()
        space = asyncio.Event()
        space.set()
        t_open = time.monotonic()

        async def send() -> None:
            nonlocal sent
            for _ in range(MAX_REQUESTS):
                if not self.running() or time.monotonic() - t_open > STREAM_LIFETIME or sent >= STREAM_MAX_BYTES:
                    break
                if sent - received >= STREAM_WINDOW:
                    space.clear()
                    await asyncio.wait_for(space.wait(), STALL_TIMEOUT)
                    continue
                chunk = rng.randbytes(STREAM_CHUNK)
                pending.extend(chunk)
                h_sent.update(chunk)
                writer.write(chunk)
                sent += len(chunk)
                await asyncio.wait_for(writer.drain(), STALL_TIMEOUT)
                await self.pause(STREAM_EVERY)
            writer.write_eof()

        sender = asyncio.create_task(send())
        err = None
        try:
            while True:  # bounded: by STALL_TIMEOUT per read, and by what was sent (more is corruption)
                data = await asyncio.wait_for(reader.read(65536), STALL_TIMEOUT)
                if not data:
                    break
                if received + len(data) > sent:
                    corrupt += received + len(data) - sent
                    err = "more bytes echoed than sent"
                    break
                want = bytes(pending[:len(data)])
                corrupt += mismatched(data, want)
                del pending[:len(data)]
                h_recv.update(data)
                received += len(data)
                space.set()
            if err is None:
                if sender.done() and sender.exception() is not None:
                    err = f"send: {type(sender.exception()).__name__}"
                elif not sender.done():
                    err = "EOF before the stream ended"
                elif received != sent:
                    err = f"truncated: {received} of {sent} bytes"
                elif h_recv.digest() != h_sent.digest():
                    err = "checksum mismatch"
                    corrupt = max(corrupt, 1)
        except TimeoutError:
            err = "stalled"
        except (OSError, ConnectionError) as exc:
            err = type(exc).__name__
        finally:
            if not sender.done():
                sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        return err, sent, received, corrupt

    # UDP request/response: one socket per worker (a client that keeps its port), one request in flight
    async def udp(self, wid: int) -> None:
        loop = asyncio.get_running_loop()
        rng = random.Random(self.seed * 7 + wid)
        recent: dict[bytes, bytes] = {}
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.connect((self.host, self.args.udp_port))
            for n in range(MAX_REQUESTS):
                if not self.running():
                    return
                ident = f"{wid}:{n}".encode()
                payload = ident + b" " + rng.randbytes(rng.randrange(16, 512))
                recent[ident] = payload
                if len(recent) > 1024:  # far more than can be in flight: a late answer is still checked
                    recent.pop(next(iter(recent)))
                t0, ok, corrupt, wrong = time.monotonic(), False, 0, False
                err: str | None = "no answer"
                try:
                    await loop.sock_sendall(sock, payload)
                    async with asyncio.timeout(UDP_WAIT):
                        while True:
                            reply = await loop.sock_recv(sock, 4096)
                            parts = reply.split(b" ", 2)
                            if len(parts) < 3 or parts[0] != b"client":
                                corrupt += len(reply)
                                continue
                            got_id = parts[2].split(b" ", 1)[0]
                            corrupt += mismatched(parts[2], recent.get(got_id, b""))
                            wrong = wrong or parts[1].decode("latin-1") != self.args.client
                            if got_id == ident:
                                ok, err = not corrupt and not wrong, None
                                break
                except TimeoutError:
                    pass
                except OSError as exc:  # e.g. ECONNREFUSED from an ICMP port unreachable while the gateway is down
                    err = type(exc).__name__
                self.req("udp", t0, ok, err, corrupt, wrong)
                await self.pause(UDP_EVERY if ok or err == "no answer" else 0.5)

    async def watch_stdin(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        for _ in range(MAX_REQUESTS):
            line = await reader.readline()
            if not line or line.strip() == b"stop":
                break
        self.stop.set()

    async def run(self) -> None:
        watcher = asyncio.create_task(self.watch_stdin())
        jobs = [self.http_short_beat()] + [self.http_keep(i) for i in range(KEEP_WORKERS)]
        jobs += [self.stream(i) for i in range(STREAM_WORKERS)] + [self.udp(i) for i in range(UDP_WORKERS)]
        _emit({"k": "start", "t": time.monotonic()})
        await asyncio.gather(*jobs)
        watcher.cancel()
        _emit({"k": "done", "t": time.monotonic()})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--http", required=True)
    s.add_argument("--echo", required=True)
    s.add_argument("--udp", required=True)
    ld = sub.add_parser("load")
    ld.add_argument("host")
    ld.add_argument("--client", required=True, help="the address the services must report (the client's own)")
    ld.add_argument("--seconds", type=float, required=True, help="hard bound on the whole load")
    ld.add_argument("--http-port", type=int, default=80)
    ld.add_argument("--echo-port", type=int, default=7000)
    ld.add_argument("--udp-port", type=int, default=5300)
    ld.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    try:
        asyncio.run(serve(args) if args.cmd == "serve" else Load(args).run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

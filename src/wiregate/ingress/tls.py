"""TLS termination for a route that has tls_cert/tls_key: the ClientHello was already read (to route by SNI), so
the handshake runs on an in-memory BIO pair fed those bytes first, then the socket. Plaintext goes to the target
(through the HTTP forwarder when the route adds client-address headers)."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from typing import TYPE_CHECKING

from wiregate.ingress.http_forward import HttpForwarder

if TYPE_CHECKING:
    from wiregate.ingress.policy import Accepted
    from wiregate.ingress.server import Runtime

log = logging.getLogger("wiregate.ingress")
RECV = 65536


async def terminate(sock: socket.socket, back: socket.socket, ctx: ssl.SSLContext, ev: Accepted, prefix: bytes,
                    rt: Runtime) -> None:
    """Run one TLS-terminated connection to its end (both sockets are closed by the caller)."""
    loop = asyncio.get_running_loop()
    lst = rt.listener
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(inc, out, server_side=True)
    inc.write(ev.data)
    lock = asyncio.Lock()

    async def flush() -> None:
        async with lock:  # records leave in the order the TLS object made them
            data = out.read()
            if data:
                await loop.sock_sendall(sock, data)

    try:
        async with asyncio.timeout(lst.sniff_timeout):
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    await flush()
                    data = await loop.sock_recv(sock, RECV)
                    if not data:
                        raise ConnectionError("closed during the TLS handshake") from None
                    inc.write(data)
            await flush()
    except (ssl.SSLError, OSError, TimeoutError) as exc:
        rt.refused["tls_handshake"] += 1
        log.warning("listener %s: client %s: route %s: TLS handshake failed: %s", lst.name,
                    f"{ev.client[0]}:{ev.client[1]}", ev.route.name, exc or "timeout")
        try:
            await asyncio.wait_for(flush(), 1.0)  # the alert, if any
        except (OSError, TimeoutError):
            pass
        return
    fwd = HttpForwarder(ev.client, "https", ev.client_trusted, accepts=_same_sni_route(rt, ev.route),
                        max_head=lst.max_sniff_bytes, check_first=True) if ev.route.http_headers else None
    if prefix:
        await loop.sock_sendall(back, prefix)

    decided = asyncio.Event()  # set by down() when the backend answered the Upgrade request the forwarder holds

    async def forward(o) -> None:
        if o.refuse is not None:
            rt.refused[o.refuse[0]] += 1
            log.warning("listener %s: client %s: refused request: %s: %s", lst.name, ev.client[0],
                        o.refuse[0], o.refuse[1])
            if o.to_backend:
                await loop.sock_sendall(back, o.to_backend)
            tls.write(o.refuse[2])
            await flush()
            raise ConnectionAbortedError
        if o.to_backend:
            await loop.sock_sendall(back, o.to_backend)

    async def up() -> None:
        while True:
            if fwd is not None and fwd.waiting:  # hold the client until the Upgrade's answer (read no more)
                await decided.wait()
                await forward(fwd.feed(b""))
                continue
            try:
                data = tls.read(RECV)
            except ssl.SSLWantReadError:
                await flush()  # post-handshake messages (tickets, key updates)
                async with asyncio.timeout(lst.idle_timeout):
                    raw = await loop.sock_recv(sock, RECV)
                if not raw:
                    inc.write_eof()
                else:
                    inc.write(raw)
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                data = b""
            if not data:
                back.shutdown(socket.SHUT_WR)
                return
            if fwd is not None:
                await forward(fwd.feed(data))
            else:
                await loop.sock_sendall(back, data)

    async def down() -> None:
        while True:
            async with asyncio.timeout(lst.idle_timeout):
                data = await loop.sock_recv(back, RECV)
            if not data:
                if fwd is not None and fwd.waiting:  # closed before answering the Upgrade: nothing will release
                    raise ConnectionAbortedError      # what the client half holds
                try:
                    tls.unwrap()
                except ssl.SSLError:
                    pass
                await flush()
                return
            if fwd is not None and fwd.watching:
                bad = fwd.feed_response(data)
                if bad is not None:
                    rt.refused["bad_response"] += 1
                    log.warning("listener %s: client %s: backend answer refused: %s", lst.name, ev.client[0], bad)
                    raise ConnectionAbortedError
                if not fwd.waiting:
                    decided.set()
            tls.write(data)
            await flush()

    tasks = [asyncio.ensure_future(up()), asyncio.ensure_future(down())]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for t in done:
            if t.exception() is not None:
                for p in pending:
                    p.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for t in tasks:
            t.cancel()


def _same_sni_route(rt: Runtime, route):
    """Every request on a terminated connection names a host this route serves by SNI (else 421, RFC 9110
    15.5.20): the server name chose the route, so a Host for another route (domain fronting, a forged request
    after an Upgrade that was not answered 101) must not reach this route's service."""

    def accepts(head) -> bool:
        return head.host is None or rt.rules.router.for_sni(head.host) == route

    return accepts

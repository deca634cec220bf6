"""TLS termination for a route that has tls_cert/tls_key: the ClientHello was already read (to route by SNI), so
the handshake runs on an in-memory BIO pair fed those bytes first, then the socket. Plaintext goes to the target
(through the HTTP forwarder when the route adds client-address headers).

Both sockets are read and written through the data path's watcher (`io`, the ingress's Poller: `wiregate.datapath
.waits`), never through the event loop's own sock_recv/sock_sendall, so a service that resets while a read waits
ends the connection under uvloop too."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from typing import TYPE_CHECKING

from wiregate.datapath import waits
from wiregate.ingress.http_forward import HttpForwarder

if TYPE_CHECKING:
    from wiregate.ingress.policy import Accepted
    from wiregate.ingress.runtime import Runtime

log = logging.getLogger("wiregate.ingress")
RECV = 65536


# a fatal handshake_failure alert (RFC 8446 section 6): the answer to a hello for an ACME route with no
# certificate yet (plain bytes on purpose: there is no key to make a TLS context with)
ALERT_HANDSHAKE_FAILURE = bytes([21, 3, 1, 0, 2, 2, 40])
ALERT_UNRECOGNIZED_NAME = bytes([21, 3, 1, 0, 2, 2, 112])


async def acme_decision(io: waits.IO, sock: socket.socket, ev: Accepted, rt: Runtime, book) -> bool:
    """The ACME part of a TLS connection's route decision; True when it handled the connection:
    - a ClientHello whose ALPN is exactly `acme-tls/1` for a name with a pending authorization gets the RFC 8737
      challenge certificate (whatever the route: passthrough routes too), then the connection ends;
    - a hello for an ACME route that has no certificate yet is refused with an alert and a log line."""
    assert ev.hello is not None
    ctx = book.alpn_context(ev.name, ev.hello.alpn)
    lst = rt.listener
    if ctx is not None:
        rt.refused["acme_tls_alpn01"] += 1  # counted with refusals: it reaches no service
        ok = await _handshake(io, sock, ctx, ev, rt, quiet=True)
        log.info("listener %s: client %s: ACME TLS-ALPN-01 validation for %r %s", lst.name,
                 f"{ev.client[0]}:{ev.client[1]}", ev.name, "answered" if ok else "failed in the handshake")
        return True
    if ev.route.acme and book.context(f"{lst.name}/{ev.route.name}") is None:  # acme.book.route_key
        rt.refused["acme_no_certificate"] += 1
        log.warning("listener %s: client %s: route %s: no ACME certificate for %r yet (see the acme log lines); "
                    "TLS refused", lst.name, f"{ev.client[0]}:{ev.client[1]}", ev.route.name, ev.name)
        try:
            sock.send(ALERT_UNRECOGNIZED_NAME)
        except OSError:
            pass
        return True
    return False


async def _handshake(io: waits.IO, sock: socket.socket, ctx: ssl.SSLContext, ev: Accepted, rt: Runtime,
                     quiet: bool = False) -> bool:
    """A whole server handshake on `sock` (the ClientHello already read is in ev.data), then close_notify."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(inc, out, server_side=True)
    inc.write(ev.data)
    done = False
    try:
        async with asyncio.timeout(rt.listener.sniff_timeout):
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    data = out.read()
                    if data:
                        await waits.sendall(io, sock, data)
                    raw = await waits.recv(io, sock, RECV)
                    if not raw:
                        raise ConnectionError("closed during the TLS handshake") from None
                    inc.write(raw)
            done = True
            try:
                tls.unwrap()
            except ssl.SSLError:
                pass
            data = out.read()
            if data:
                await waits.sendall(io, sock, data)
    except (ssl.SSLError, OSError, TimeoutError) as exc:
        if done:  # the validator closed first: the handshake it came for is complete
            return True
        if not quiet:
            log.warning("listener %s: client %s: TLS handshake failed: %s", rt.listener.name, ev.client[0], exc)
        return False
    return True


async def terminate(io: waits.IO, sock: socket.socket, back: socket.socket, ctx: ssl.SSLContext, ev: Accepted,
                    prefix: bytes, rt: Runtime) -> None:
    """Run one TLS-terminated connection to its end (both sockets are closed by the caller)."""
    lst = rt.listener
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(inc, out, server_side=True)
    inc.write(ev.data)
    lock = asyncio.Lock()

    async def flush() -> None:
        async with lock:  # records leave in the order the TLS object made them
            data = out.read()
            if data:
                await waits.sendall(io, sock, data)

    handshaken = False
    try:
        async with asyncio.timeout(lst.sniff_timeout):
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    await flush()
                    data = await waits.recv(io, sock, RECV)
                    if not data:
                        raise ConnectionError("closed during the TLS handshake") from None
                    inc.write(data)
            handshaken = True
            await flush()
    except (ssl.SSLError, OSError, TimeoutError) as exc:
        if handshaken:  # the client left right after a complete handshake (a probe, a checker): not a failure
            return
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
        await waits.sendall(io, back, prefix)

    decided = asyncio.Event()  # set by down() when the backend answered the Upgrade request the forwarder holds

    async def forward(o) -> None:
        if o.refuse is not None:
            rt.refused[o.refuse[0]] += 1
            log.warning("listener %s: client %s: refused request: %s: %s", lst.name, ev.client[0],
                        o.refuse[0], o.refuse[1])
            if o.to_backend:
                await waits.sendall(io, back, o.to_backend)
            tls.write(o.refuse[2])
            await flush()
            raise ConnectionAbortedError
        if o.to_backend:
            await waits.sendall(io, back, o.to_backend)

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
                    raw = await waits.recv(io, sock, RECV)
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
                await waits.sendall(io, back, data)

    async def down() -> None:
        while True:
            async with asyncio.timeout(lst.idle_timeout):
                data = await waits.recv(io, back, RECV)
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

"""Sample home services for the demo and the end-to-end tests; each tells the client which address it saw.

    python -m wiregate.demo.samples --tls 192.0.2.2:8443 --certdir DIR --names a.example,b.example \
        --http 192.0.2.2:8080 --echo 192.0.2.2:7000 --udp 192.0.2.2:5300 --proxy

- tls:  PROXY header (when --proxy), then TLS with a certificate chosen by SNI (one self-signed cert per name);
        answers "tls NAME client IP:PORT\n".
- http: plain HTTP/1.1; the client address is the last X-Forwarded-For entry (set by the ingress), else the
        PROXY header, else the peer; answers "http HOST client IP\n" (--show-headers: then " x-real-ip=IP
        x-forwarded-proto=SCHEME" for those it got, before the newline).
- echo: PROXY header (when --proxy), then "echo client IP:PORT\n" followed by an echo of everything sent.
- udp:  each datagram may start with a PROXY v2 header (when --proxy); answers "udp client IP:PORT " + payload.

Every header read is bounded in size and time; a bad header closes that connection only.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import ssl
from pathlib import Path

from wiregate import hostport
from wiregate.datapath.loop import run as run_loop
from wiregate.proxyproto import Decoder, ProxyError

HEADER_TIMEOUT = 5.0
MAX_HEAD = 8192


def make_cert(name: str, certdir: Path) -> tuple[Path, Path]:
    """A self-signed certificate and key for `name` (cryptography), written to certdir; key mode 0600."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256()))
    certdir.mkdir(parents=True, exist_ok=True)
    cpath, kpath = certdir / f"{name}.crt", certdir / f"{name}.key"
    cpath.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    import os
    fd = os.open(kpath, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cpath, kpath


async def read_proxy(reader: asyncio.StreamReader) -> tuple[tuple[str, int] | None, bytes]:
    """Read a PROXY header (bounded); returns (client address or None for LOCAL, bytes after the header)."""
    dec = Decoder()
    while True:
        chunk = await asyncio.wait_for(reader.read(max(1, dec.want())), HEADER_TIMEOUT)
        if not chunk:
            raise ConnectionError("closed before the PROXY header")
        hdr = dec.feed(chunk)
        if hdr is not None:
            src = hdr.source if isinstance(hdr.source, tuple) else None
            return src, dec.rest


def read_datagram_proxy(data: bytes) -> tuple[tuple[str, int] | None, bytes] | None:
    """A datagram's PROXY v2 header: (client address or None for LOCAL, payload after it), or None when the header
    is bad or cut (the datagram is dropped)."""
    dec = Decoder(allow_v1=False)
    try:
        hdr = dec.feed(data)
    except ProxyError:
        return None
    if hdr is None:
        return None
    return (hdr.source if isinstance(hdr.source, tuple) else None), dec.rest


async def echo_back(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, idle: float | None = None) -> None:
    """Write back what `reader` gives until its EOF, then half-close; `idle` bounds each read (None: unbounded)."""
    while True:
        data = await asyncio.wait_for(reader.read(65536), idle)
        if not data:
            break
        writer.write(data)
        await writer.drain()
    writer.write_eof()


class _Prefixed:
    """A reader that first returns bytes already read (after a PROXY header)."""

    def __init__(self, rest: bytes, reader: asyncio.StreamReader) -> None:
        self.rest, self.reader = rest, reader

    async def read(self, n: int) -> bytes:
        if self.rest:
            out, self.rest = self.rest[:n], self.rest[n:]
            return out
        return await self.reader.read(n)


class Samples:
    def __init__(self, proxy: bool, certs: dict[str, tuple[Path, Path]], show_headers: bool = False) -> None:
        self.proxy = proxy
        self.certs = certs
        self.show_headers = show_headers

    async def _client_addr(self, reader, writer) -> tuple[str, bytes]:
        if self.proxy:
            src, rest = await read_proxy(reader)
            return (hostport.format(src) if src else "local"), rest
        return hostport.format(writer.get_extra_info("peername")), b""

    # -- TLS by SNI: the PROXY header comes in clear first, then the handshake on the same socket --------------
    def ssl_context(self, seen: list[str]) -> ssl.SSLContext:
        """A server context that picks the certificate by SNI and records the name asked for in `seen`."""
        first = next(iter(self.certs.values()))
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(*first)
        per_name = {}
        for name, (c, k) in self.certs.items():
            sub = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            sub.load_cert_chain(c, k)
            per_name[name] = sub

        def pick(sock, server_name, _ctx):
            seen.append(server_name or "")
            if server_name in per_name:
                sock.context = per_name[server_name]
        ctx.sni_callback = pick
        return ctx

    async def tls(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """TLS over memory BIOs, so bytes that came in the same segment as the PROXY header are not lost."""
        try:
            client, rest = await self._client_addr(reader, writer)
            inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
            seen: list[str] = []
            obj = self.ssl_context(seen).wrap_bio(inc, out, server_side=True)
            inc.write(rest)

            async def pump() -> None:
                if out.pending:
                    writer.write(out.read())
                    await writer.drain()
                data = await asyncio.wait_for(reader.read(65536), HEADER_TIMEOUT)
                if not data:
                    raise ConnectionError("closed during TLS")
                inc.write(data)

            while True:
                try:
                    obj.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    await pump()
            line = b""
            while not line.endswith(b"\n") and len(line) < MAX_HEAD:
                try:
                    line += obj.read(4096)
                except ssl.SSLWantReadError:
                    await pump()
            obj.write(f"tls {seen[0] if seen else '-'} client {client}\n".encode())
            writer.write(out.read())
            await writer.drain()
        except (TimeoutError, ConnectionError, ProxyError, ssl.SSLError, OSError):
            pass
        finally:
            writer.close()

    async def http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            peer = hostport.format(writer.get_extra_info("peername"))
            src, head = None, b""
            if self.proxy:
                src, head = await read_proxy(reader)
            while b"\r\n\r\n" not in head:
                chunk = await asyncio.wait_for(reader.read(4096), HEADER_TIMEOUT)
                if not chunk or len(head) > MAX_HEAD:
                    return
                head += chunk
            lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            xff = headers.get("x-forwarded-for")
            client = xff.split(",")[-1].strip() if xff else (src[0] if src else peer)
            extra = ""
            if self.show_headers:  # what an HTTP proxy in front said besides X-Forwarded-For
                extra = "".join(f" {k}={headers[k]}" for k in ("x-real-ip", "x-forwarded-proto") if k in headers)
            body = f"http {headers.get('host', '?')} client {client}{extra}\n".encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " + str(len(body)).encode()
                         + b"\r\nConnection: close\r\n\r\n" + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, ProxyError, OSError):
            pass
        finally:
            writer.close()

    async def echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            client, rest = await self._client_addr(reader, writer)
            writer.write(f"echo client {client}\n".encode() + rest)
            await writer.drain()
            await echo_back(reader, writer)
        except (TimeoutError, ConnectionError, ProxyError, OSError):
            pass
        finally:
            writer.close()


class UdpEcho(asyncio.DatagramProtocol):
    def __init__(self, proxy: bool) -> None:
        self.proxy = proxy

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        client = hostport.format(addr)
        if self.proxy:
            got = read_datagram_proxy(data)
            if got is None:
                return  # a datagram with a bad header is dropped, nothing else
            src, data = got
            if src is not None:
                client = hostport.format(src)
        self.transport.sendto(f"udp client {client} ".encode() + data[:1024], addr)


def _addr(text: str) -> tuple[str, int]:
    return hostport.parse(text, names=False, what="address")


async def serve(args: argparse.Namespace) -> None:
    certs = {}
    if args.tls:
        for name in args.names.split(","):
            certs[name] = make_cert(name, Path(args.certdir))
    s = Samples(args.proxy, certs)
    servers = []
    if args.tls:
        servers.append(await asyncio.start_server(s.tls, *_addr(args.tls)))
    if args.http:
        # HTTP gets the client from X-Forwarded-For (the ingress adds it), so it takes no PROXY header
        http = Samples(args.http_proxy, {}, args.show_headers)
        servers.append(await asyncio.start_server(http.http, *_addr(args.http)))
    if args.echo:
        servers.append(await asyncio.start_server(s.echo, *_addr(args.echo)))
    if args.udp:
        await asyncio.get_running_loop().create_datagram_endpoint(lambda: UdpEcho(args.proxy),
                                                                  local_addr=_addr(args.udp))
    print("ready", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tls")
    p.add_argument("--names", default="a.example,b.example")
    p.add_argument("--certdir", default=".")
    p.add_argument("--http")
    p.add_argument("--http-proxy", action="store_true", help="the HTTP server also expects a PROXY header")
    p.add_argument("--show-headers", action="store_true",
                   help="the HTTP answer adds the X-Real-IP and X-Forwarded-Proto it got (as x-real-ip=...)")
    p.add_argument("--echo")
    p.add_argument("--udp")
    p.add_argument("--proxy", action="store_true", help="tls/echo/udp expect a PROXY header")
    args = p.parse_args()
    try:
        run_loop(serve(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

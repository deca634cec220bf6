"""`wiregate proxy-demo`: the PROXY protocol round trip against a real HAProxy, both ways, on loopback.

1. HAProxy -> wiregate: a TLS client connects to HAProxy, which relays to our listener with `send-proxy-v2` and
   TLVs (CRC32C, ALPN, AUTHORITY, UNIQUE_ID, SSL); our decoder prints what it got and we check the bytes are
   exactly what our encoder writes for the same addresses and TLVs. The same with `send-proxy` (v1).
2. wiregate -> HAProxy: we write v1 and v2 headers (IPv4 and IPv6 client addresses from the documentation
   ranges) in front of an HTTP request to an `accept-proxy` frontend that answers `%[src]:%[src_port]`.
"""

from __future__ import annotations

import argparse
import socket
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from wiregate import hostport

if TYPE_CHECKING:
    from wiregate.proxyproto import Address, ProxyHeader

# every TLV HAProxy 2.6 can add to send-proxy-v2 over a TLS frontend
V2_OPTIONS = "crc32c,authority,unique-id,ssl,cert-cn,ssl-cipher,cert-sig,cert-key"
HELP = "show the PROXY protocol round trip with a real HAProxy (HAProxy -> us, us -> HAProxy), on loopback"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--haproxy", metavar="PATH", default=None,
                   help="the haproxy program to use (default: the one on this system, installed when root)")


def _addr(a: Address | None) -> str:
    if a is None:  # a PROXY header without addresses (family UNSPEC)
        return "unknown"
    if isinstance(a, bytes):
        return a.decode(errors="replace")
    return hostport.format(a)


def describe(header: ProxyHeader) -> list[str]:
    """Human lines for a decoded header: command, family, addresses, then one line per TLV."""
    from wiregate.proxyproto import (
        PP2_TYPE_ALPN,
        PP2_TYPE_AUTHORITY,
        PP2_TYPE_CRC32C,
        PP2_TYPE_NETNS,
        PP2_TYPE_NOOP,
        PP2_TYPE_SSL,
        PP2_TYPE_UNIQUE_ID,
    )

    if header.is_local:
        first = f"PROXY v{header.version} {header.command.name} (use the real connection's addresses)"
    else:
        first = (f"PROXY v{header.version} {header.command.name} {header.family.name}/{header.protocol.name} "
                 f"client {_addr(header.source)} -> {_addr(header.destination)}")
    lines = [f"{first}, {header.length} bytes"]
    names = {PP2_TYPE_ALPN: "ALPN", PP2_TYPE_AUTHORITY: "AUTHORITY", PP2_TYPE_CRC32C: "CRC32C",
             PP2_TYPE_NOOP: "NOOP", PP2_TYPE_UNIQUE_ID: "UNIQUE_ID", PP2_TYPE_SSL: "SSL", PP2_TYPE_NETNS: "NETNS"}
    for t in header.tlvs:
        name = names.get(t.type, f"type 0x{t.type:02x}")
        if t.type == PP2_TYPE_CRC32C:
            value = f"0x{t.value.hex()} (verified)"
        elif t.type == PP2_TYPE_SSL:
            s = header.ssl
            assert s is not None  # this header has an SSL TLV
            cert = f", client certificate CN={s.cn} {'verified' if s.verify == 0 else f'verify={s.verify}'}" \
                if s.cert_conn else ""
            value = f"{s.version} {s.cipher}{cert} (key {s.key_alg}, signed {s.sig_alg})"
        else:
            value = t.value.decode("utf-8", "replace") if t.value.isascii() else t.value.hex()
        lines.append(f"  {name:<10} {value}")
    return lines


def run(args: argparse.Namespace) -> int:
    """Run both round trips; 0 when every check held, 1 when one failed (each failure is named)."""
    from wiregate.errors import WiregateError
    from wiregate.demo.haproxy import find_haproxy

    # HAProxyMissing is a WiregateError: the CLI prints one clean line, no traceback. `wiregate demo` passes its
    # own namespace, which has no --haproxy.
    exe = find_haproxy(getattr(args, "haproxy", None))
    try:
        return _round_trips(exe)
    except OSError as exc:  # a port taken between free_port() and bind, a peer that did not answer in time
        raise WiregateError(f"proxy-demo: {exc}") from None


def _round_trips(exe: str) -> int:
    from wiregate.proxyproto import (
        PP2_CLIENT_CERT_CONN,
        PP2_CLIENT_CERT_SESS,
        PP2_CLIENT_SSL,
        PP2_SUBTYPE_SSL_CIPHER,
        PP2_SUBTYPE_SSL_CN,
        PP2_SUBTYPE_SSL_KEY_ALG,
        PP2_SUBTYPE_SSL_SIG_ALG,
        PP2_SUBTYPE_SSL_VERSION,
        PP2_TYPE_ALPN,
        PP2_TYPE_AUTHORITY,
        PP2_TYPE_SSL,
        PP2_TYPE_UNIQUE_ID,
        TLV,
        SSLInfo,
        encode_ssl,
        encode_v1,
        encode_v2,
    )
    from wiregate.demo.haproxy import Catcher, HAProxy, haproxy_version, http_get, make_test_pki, tls_client
    from wiregate.demo.procs import free_port

    failures: list[str] = []

    def check(ok: bool, what: str) -> str:
        if not ok:
            failures.append(what)
        return "yes" if ok else "NO"

    with tempfile.TemporaryDirectory(prefix="wgt-proxy-demo-") as tmp, \
            Catcher(payload_len=5) as v2_catcher, Catcher(payload_len=5) as v1_catcher:
        pki = make_test_pki(Path(tmp))
        tls_port, tcp_port = free_port(), free_port()
        web4, web6 = free_port("127.0.0.1"), free_port("::1")
        cfg = f"""
frontend tls_in
    mode tcp
    bind 127.0.0.1:{tls_port} ssl crt {pki.server} ca-file {pki.ca} verify optional alpn h2,http/1.1
    unique-id-format %ci:%cp
    default_backend to_wiregate_v2
backend to_wiregate_v2
    mode tcp
    server wiregate 127.0.0.1:{v2_catcher.port} send-proxy-v2 proxy-v2-options {V2_OPTIONS}
frontend tcp_in
    mode tcp
    bind 127.0.0.1:{tcp_port}
    default_backend to_wiregate_v1
backend to_wiregate_v1
    mode tcp
    server wiregate 127.0.0.1:{v1_catcher.port} send-proxy
frontend web
    mode http
    bind 127.0.0.1:{web4} accept-proxy
    bind [::1]:{web6} accept-proxy
    http-request return status 200 content-type text/plain lf-string "%[src]:%[src_port]"
"""
        with HAProxy(cfg, [("127.0.0.1", tls_port), ("127.0.0.1", tcp_port), ("127.0.0.1", web4), ("::1", web6)],
                     exe=exe) as hap:
            proc = hap.proc
            assert proc is not None  # started by __enter__
            print(f"wiregate proxy-demo: HAProxy {haproxy_version(exe)} (pid {proc.pid}) on loopback")
            print()
            print("1) HAProxy -> wiregate: HAProxy relays a client to our listener; our decoder reads the header")
            me, facts = tls_client("127.0.0.1", tls_port, pki, alpn=["h2"], payload=b"hello")
            got = v2_catcher.next(timeout=5)
            print(f"   TLS client {_addr(me)} -> HAProxy 127.0.0.1:{tls_port} (SNI {pki.server_name}, ALPN h2, "
                  f"client certificate), HAProxy `send-proxy-v2` to us:")
            if got.header is None:
                failures.append(f"v2 from HAProxy: {got.error}")
                print(f"   decoder refused it: {got.error}")
            else:
                for line in describe(got.header):
                    print(f"   {line}")
                print(f"   payload after the header: {got.payload!r} "
                      f"(untouched: {check(got.payload == b'hello', 'v2 payload')})")
                ssl_value = encode_ssl(SSLInfo(PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS, 0, (
                    TLV(PP2_SUBTYPE_SSL_VERSION, facts["version"].encode()),
                    TLV(PP2_SUBTYPE_SSL_CN, pki.client_cn.encode()), TLV(PP2_SUBTYPE_SSL_KEY_ALG, b"EC256"),
                    TLV(PP2_SUBTYPE_SSL_SIG_ALG, b"ecdsa-with-SHA256"),
                    TLV(PP2_SUBTYPE_SSL_CIPHER, facts["cipher"].encode()))))
                ours = encode_v2(me, ("127.0.0.1", tls_port), crc32c=True, tlvs=[
                    TLV(PP2_TYPE_ALPN, b"h2"), TLV(PP2_TYPE_AUTHORITY, pki.server_name.encode()),
                    TLV(PP2_TYPE_UNIQUE_ID, f"{me[0]}:{me[1]}".encode()), TLV(PP2_TYPE_SSL, ssl_value)])
                print(f"   client address is the TLS client's: {check(got.header.source == me, 'v2 source')}")
                print(f"   byte for byte what our encoder writes for the same addresses and TLVs: "
                      f"{check(got.raw == ours, 'v2 bytes equal our encoder')}")
            with socket.create_connection(("127.0.0.1", tcp_port), timeout=5) as c:
                me1 = c.getsockname()[:2]
                c.sendall(b"hello")
                got1 = v1_catcher.next(timeout=5)
            print(f"   TCP client {_addr(me1)} -> HAProxy 127.0.0.1:{tcp_port}, HAProxy `send-proxy` to us:")
            print(f"   {got1.raw!r}")
            print(f"   client address {_addr(got1.header.source) if got1.header else got1.error}; same bytes as "
                  f"our encode_v1: {check(got1.raw == encode_v1(me1, ('127.0.0.1', tcp_port)), 'v1 bytes')}")
            print()
            print("2) wiregate -> HAProxy: our header in front of an HTTP request to an `accept-proxy` frontend")
            print('   that answers "%[src]:%[src_port]", the client address HAProxy believes in')
            cases = [
                ("v1", "127.0.0.1", encode_v1(("203.0.113.7", 40001), ("198.51.100.2", 443)), "203.0.113.7:40001"),
                ("v1", "::1", encode_v1(("2001:db8::7", 40002), ("2001:db8::2", 443)), "2001:db8::7:40002"),
                ("v2", "127.0.0.1", encode_v2(("203.0.113.7", 40003), ("198.51.100.2", 443), crc32c=True,
                                               tlvs=[TLV(PP2_TYPE_AUTHORITY, b"app.example.org")]),
                 "203.0.113.7:40003"),
                ("v2", "::1", encode_v2(("2001:db8::7", 40004), ("2001:db8::2", 443)), "2001:db8::7:40004"),
            ]
            for version, via, header, expect in cases:
                try:
                    status, body = http_get(via, web4 if via == "127.0.0.1" else web6, header)
                    said = f"{status} {body.decode(errors='replace')}"
                except OSError as exc:
                    status, said = 0, f"no answer ({exc})"
                ok = status == 200 and said.endswith(expect)
                print(f"   {version} header for client {expect:<18} over {via:<9} -> HAProxy answered {said:<22} "
                      f"{check(ok, f'{version} {expect} via {via}')}")
    rc = proc.returncode
    print()
    print(f"HAProxy stopped by its PID {proc.pid} ({f'signal {-rc}' if rc < 0 else f'exit status {rc}'}); "
          "listeners closed, temporary certificates removed.")
    print()
    if failures:
        print("NOT proven; these checks failed: " + "; ".join(failures))
        return 1
    print("Proven: our decoder reads HAProxy's send-proxy (v1) and send-proxy-v2 headers, TLVs included (CRC32C "
          "verified), and hands over the payload untouched; our encoder writes the same bytes HAProxy does; HAProxy "
          "reads the client addresses we write, v1 and v2, IPv4 and IPv6.")
    return 0

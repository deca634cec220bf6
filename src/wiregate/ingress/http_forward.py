"""Client-address headers on every request of an HTTP/1.x connection, sans-I/O.

    fwd = HttpForwarder(client=("203.0.113.7", 51234), scheme="http", keep_existing=False, accepts=check)
    out = fwd.feed(data)      # out.to_backend: bytes to send on; out.refuse: reply to the client, then close
    fwd.tunnel                # True after an Upgrade/CONNECT request: the rest is opaque, pass it through

Request framing follows RFC 9112 section 6: Content-Length bodies are counted, chunked bodies are walked chunk by
chunk (trailers included), a request with neither has no body. Only request heads are rewritten: the body bytes
pass unchanged, and the response direction is never parsed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from wiregate.sniff import RequestHead, SniffError, parse_request_head

# headers that carry a client address or what it asked for; from an untrusted client they are lies, so dropped
FORWARDING_HEADERS = (b"x-forwarded-for", b"x-real-ip", b"forwarded", b"x-forwarded-proto", b"x-forwarded-host")
MAX_CHUNK_LINE = 1024  # a chunk-size line with extensions; longer is refused
MAX_TRAILERS = 8192


@dataclass(frozen=True, slots=True)
class Output:
    """What one feed() produced: bytes for the backend, and possibly a refusal (reply, then close)."""

    to_backend: bytes
    refuse: tuple[str, str, bytes] | None = None  # (reason, detail, reply to the client)


def forwarded_node(ip: str) -> str:
    """An address as a Forwarded `for=` value (RFC 7239 6): IPv6 quoted in brackets."""
    try:
        if isinstance(ipaddress.ip_address(ip), ipaddress.IPv6Address):
            return f'"[{ip}]"'
    except ValueError:
        return '"' + ip.replace('"', "") + '"'
    return ip


class HttpForwarder:
    """Rewrites each request head of one connection; body bytes pass through as they come."""

    __slots__ = ("client", "scheme", "keep_existing", "accepts", "max_head", "tunnel", "requests", "_buf",
                 "_state", "_left", "_add_xff", "_add")

    def __init__(self, client: tuple[str, int], scheme: str, keep_existing: bool,
                 accepts: Callable[[RequestHead], bool] | None = None, max_head: int = 16384) -> None:
        self.client, self.scheme, self.keep_existing = client, scheme, keep_existing
        self.accepts = accepts
        self.max_head = max_head
        self.tunnel = False
        self.requests = 0
        self._buf = bytearray()
        self._state = "head"
        self._left = 0
        ip = client[0]
        self._add_xff = ip.encode()
        self._add = forwarded_node(ip).encode()

    def feed(self, data: bytes) -> Output:
        """Client bytes in; bytes for the backend out (possibly nothing yet: a head is still incomplete)."""
        if self.tunnel:
            return Output(bytes(data))
        self._buf += data
        out = bytearray()
        try:
            while self._buf and not self.tunnel:
                if not self._step(out):
                    break
        except SniffError as exc:
            return Output(bytes(out), ("bad_request", str(exc), _error(400, "Bad Request")))
        except _Misdirected as exc:
            return Output(bytes(out), ("misdirected", str(exc), _error(421, "Misdirected Request")))
        if self.tunnel and self._buf:
            out += self._buf
            self._buf = bytearray()
        return Output(bytes(out))

    def _step(self, out: bytearray) -> bool:
        buf = self._buf
        st = self._state
        if st == "head":
            head = parse_request_head(buf, self.max_head)
            if head is None:
                return False
            if self.accepts is not None and self.requests and not self.accepts(head):
                raise _Misdirected(f"request {self.requests + 1} on this connection is for {head.host!r}, "
                                   "which another route serves")
            out += self.rewrite(head, bytes(buf[: head.length]))
            del buf[: head.length]
            self.requests += 1
            if head.upgrade:
                self.tunnel = True
            elif head.chunked:
                self._state = "size"
            elif head.content_length:
                self._state, self._left = "body", head.content_length
            return True
        if st == "body" or st == "chunk":
            k = min(self._left, len(buf))
            out += buf[:k]
            del buf[:k]
            self._left -= k
            if self._left == 0:
                self._state = "head" if st == "body" else "chunk_end"
            return True
        if st == "size":
            end = buf.find(b"\r\n", 0, MAX_CHUNK_LINE)
            if end == -1:
                if len(buf) >= MAX_CHUNK_LINE:
                    raise SniffError(f"HTTP chunked body: chunk-size line longer than {MAX_CHUNK_LINE} bytes")
                return False
            size_txt = bytes(buf[:end]).split(b";", 1)[0].strip(b" \t")
            if not size_txt or len(size_txt) > 15 or any(c not in b"0123456789abcdefABCDEF" for c in size_txt):
                raise SniffError(f"HTTP chunked body: bad chunk size {size_txt[:20]!r}")
            out += buf[: end + 2]
            del buf[: end + 2]
            n = int(size_txt, 16)
            self._state, self._left = ("chunk", n) if n else ("trailers", 0)
            return True
        if st == "chunk_end":
            if len(buf) < 2:
                return False
            if buf[:2] != b"\r\n":
                raise SniffError("HTTP chunked body: chunk data not followed by CRLF")
            out += b"\r\n"
            del buf[:2]
            self._state = "size"
            return True
        # trailers: header lines until an empty line
        end = buf.find(b"\r\n")
        if end == -1:
            if len(buf) > MAX_TRAILERS:
                raise SniffError(f"HTTP chunked body: trailer line longer than {MAX_TRAILERS} bytes")
            return False
        out += buf[: end + 2]
        del buf[: end + 2]
        if end == 0:
            self._state = "head"
        return True

    def rewrite(self, head: RequestHead, raw: bytes) -> bytes:
        """The head with forwarding headers set for this client (old copies kept only when trusted)."""
        lines = raw[:-4].split(b"\r\n")
        out = [lines[0]]
        xff: list[bytes] = []
        fwd: list[bytes] = []
        real_ip: bytes | None = None
        for line, (name, value) in zip(lines[1:], head.headers, strict=True):
            low = name.lower()
            if low in FORWARDING_HEADERS:
                if self.keep_existing:
                    if low == b"x-forwarded-for":
                        xff.append(value)
                        continue
                    if low == b"forwarded":
                        fwd.append(value)
                        continue
                    if low == b"x-real-ip":
                        real_ip = value
                        continue
                    out.append(line)
                continue
            out.append(line)
        out.append(b"X-Forwarded-For: " + b", ".join([*xff, self._add_xff]))
        out.append(b"X-Real-IP: " + (real_ip if real_ip is not None else self._add_xff))
        node = b"for=" + self._add + b";proto=" + self.scheme.encode()
        if head.host is not None:
            node += b';host="' + next(v for k, v in head.headers if k.lower() == b"host").replace(b'"', b"") + b'"'
        out.append(b"Forwarded: " + b", ".join([*fwd, node]))
        if not self.keep_existing or not head.get(b"x-forwarded-proto"):
            out.append(b"X-Forwarded-Proto: " + self.scheme.encode())
        return b"\r\n".join(out) + b"\r\n\r\n"


class _Misdirected(Exception):
    pass


def _error(status: int, reason: str) -> bytes:
    body = f"{status} {reason}\n".encode()
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode() + body

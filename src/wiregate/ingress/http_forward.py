"""Client-address headers on every request of an HTTP/1.x connection, sans-I/O.

    fwd = HttpForwarder(client=("203.0.113.7", 51234), scheme="http", keep_existing=False, accepts=check)
    out = fwd.feed(data)      # out.to_backend: bytes to send on; out.refuse: reply to the client, then close
    fwd.watching              # True: pass the backend's bytes through feed_response() too (an Upgrade is pending)
    bad = fwd.feed_response(data)   # None, or why the answer is not HTTP/1 (close the connection)
    fwd.waiting               # True: stop reading the client; call feed(b"") once it turns False
    fwd.tunnel                # True once the backend answered 101 Switching Protocols: the rest is opaque

Request framing follows RFC 9112 section 6: Content-Length bodies are counted, chunked bodies are walked chunk by
chunk (trailers included), a request with neither has no body. Only request heads are rewritten: the body bytes
pass unchanged.

Upgrade (RFC 9110 7.8) without request smuggling: a connection becomes opaque only when the backend answers 101
to an Upgrade request, never on the request alone. Only the first request of a connection may upgrade (as browsers
and WebSocket clients send it: the first response on the backend connection is then its answer, so only that
response head is read and later responses are never parsed); its bytes after it are held, unparsed, until that
answer: 101 makes them opaque, any other final status lets them be parsed as the next requests, with their
forwarding headers replaced and their Host checked, as every request is. A later request, or an HTTP/1.0 one, loses
its `Upgrade` header (an intermediary may decline an upgrade; the server then answers plain HTTP). CONNECT is
refused with 405: an ingress route is a service, never a proxy to elsewhere.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass

from wiregate.sniff import HeadReader, RequestHead, SniffError, parse_request_head

# headers that carry a client address or what it asked for; from an untrusted client they are lies, so dropped
FORWARDING_HEADERS = (b"x-forwarded-for", b"x-real-ip", b"forwarded", b"x-forwarded-proto", b"x-forwarded-host")
MAX_CHUNK_LINE = 1024  # a chunk-size line with extensions; longer is refused
MAX_TRAILERS = 8192
MAX_HELD = 1 << 17  # bytes a client may send after an Upgrade request before its answer (the reader pauses first)
MAX_RESPONSE_HEAD = 65536  # the backend's answer to an Upgrade request: its head must end within this
# RFC 9112 7.1.1: chunk-size [ chunk-ext ] with chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS value ] )
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,15})((?:[ \t]*;[ \t]*" + _TOKEN + rb"(?:[ \t]*=[ \t]*(?:" + _TOKEN + rb"|"
                         + _QUOTED + rb"))?)*)\Z")
_TRAILER_LINE = re.compile(_TOKEN + rb":[\t -~\x80-\xff]*\Z")
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_STATUS = re.compile(rb"HTTP/1\.[01] ([1-5][0-9][0-9])(?:[ \r\n]|\Z)")


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

    __slots__ = ("_add", "_add_xff", "_buf", "_head", "_left", "_rbuf", "_rscan", "_state", "_upgrade", "accepts",
                 "check_first", "client", "keep_existing", "max_head", "requests", "scheme", "tunnel", "watching")

    def __init__(self, client: tuple[str, int], scheme: str, keep_existing: bool,
                 accepts: Callable[[RequestHead], bool] | None = None, max_head: int = 16384,
                 check_first: bool = False) -> None:
        self.client, self.scheme, self.keep_existing = client, scheme, keep_existing
        self.accepts = accepts  # False for a request another route serves: 421 (the first one only if check_first)
        self.check_first = check_first
        self.max_head = max_head
        self.tunnel = False
        self.requests = 0
        self._buf = bytearray()
        self._head = HeadReader(max_head)
        self._state = "head"
        self._left = 0
        ip = client[0]
        self._add_xff = ip.encode()
        self._add = forwarded_node(ip).encode()
        self._upgrade = False  # the first request asked for an Upgrade and its answer has not come yet
        self.watching = False  # feed_response() must see the backend's bytes (to find that answer)
        self._rbuf = bytearray()
        self._rscan = 0  # bytes of _rbuf already searched for the end of the answer's head

    @property
    def between_messages(self) -> bool:
        """Every byte fed so far was a whole request (head and body): nothing is held, no answer is awaited."""
        return (self._state == "head" and not self._buf and not self._head.buf and not self.watching
                and not self.tunnel)

    @property
    def waiting(self) -> bool:
        """The Upgrade request was sent whole and its answer has not come: client bytes are held, unparsed."""
        return self._state == "await"

    def feed(self, data: bytes) -> Output:
        """Client bytes in; bytes for the backend out (possibly nothing yet: a head is still incomplete)."""
        if self.tunnel:
            if self._buf:
                data, self._buf = bytes(self._buf) + data, bytearray()
            return Output(bytes(data))
        self._buf += data
        if self._state == "await":
            if len(self._buf) > MAX_HELD:
                why = f"more than {MAX_HELD} bytes sent before the answer to an Upgrade request"
                return Output(b"", ("bad_request", why, _error(400, "Bad Request")))
            return Output(b"")
        out = bytearray()
        try:
            while self._buf and not self.tunnel and self._state != "await":
                if not self._step(out):
                    break
        except SniffError as exc:
            return Output(bytes(out), ("bad_request", str(exc), _error(400, "Bad Request")))
        except _Misdirected as exc:
            return Output(bytes(out), ("misdirected", str(exc), _error(421, "Misdirected Request")))
        except _NotAllowed as exc:
            return Output(bytes(out), ("method_not_allowed", str(exc), _error(405, "Method Not Allowed")))
        if self.tunnel and self._buf:
            out += self._buf
            self._buf = bytearray()
        return Output(bytes(out))

    def feed_response(self, data: bytes) -> str | None:
        """Backend bytes (while `watching`), passed on unchanged by the caller. Reads the answer to the Upgrade
        request: 101 makes the connection a tunnel, another final status resumes parsing the held client bytes.
        Returns why the bytes are no HTTP/1 answer (the caller closes the connection), else None."""
        if not self.watching:
            return None
        self._rbuf += data
        while True:
            m = _HEAD_END.search(self._rbuf, max(0, self._rscan - 3), MAX_RESPONSE_HEAD)  # resumes: linear work
            if m is None:
                self._rscan = min(len(self._rbuf), MAX_RESPONSE_HEAD)
                if len(self._rbuf) >= MAX_RESPONSE_HEAD:
                    return f"the answer to an Upgrade request has a head longer than {MAX_RESPONSE_HEAD} bytes"
                if len(self._rbuf) >= 12 and not _STATUS.match(self._rbuf):
                    return f"the answer to an Upgrade request is not HTTP/1: {bytes(self._rbuf[:40])!r}"
                return None
            st = _STATUS.match(self._rbuf)
            if st is None:
                return f"the answer to an Upgrade request is not HTTP/1: {bytes(self._rbuf[:40])!r}"
            status = int(st.group(1))
            del self._rbuf[: m.end()]
            self._rscan = 0
            if 100 <= status < 200 and status != 101:  # interim (100 Continue, 103 Early Hints): the answer follows
                continue
            self.watching, self._upgrade, self._rbuf = False, False, bytearray()
            self.tunnel = status == 101
            if self._state == "await":
                self._state = "head"  # not upgraded: what the client sent next is parsed as requests
            return None

    def _message_done(self) -> None:
        self._state = "await" if self._upgrade else "head"

    def _step(self, out: bytearray) -> bool:
        buf = self._buf
        st = self._state
        if st == "head":
            reader = self._head
            head = None
            if not reader.buf:  # usual case, a whole head buffered: parse it in place (pipelined heads stay linear)
                end = buf.find(b"\r\n\r\n", 0, self.max_head + 4)
                if end != -1:
                    head = parse_request_head(buf[: end + 4], self.max_head)
            if head is not None:
                raw = bytes(buf[: head.length])
                del buf[: head.length]
            else:  # a partial head: the head reader keeps it, and searches each byte once however it is cut
                head = reader.feed(buf)
                buf.clear()
                if head is None:
                    return False
                buf += memoryview(reader.buf)[head.length:]
                raw = bytes(memoryview(reader.buf)[: head.length])
                self._head = HeadReader(self.max_head)
            if head.method == "CONNECT":
                raise _NotAllowed(f"CONNECT {head.target[:80]!r}: an ingress route is no proxy")
            if self.accepts is not None and (self.requests or self.check_first) and not self.accepts(head):
                raise _Misdirected(f"request {self.requests + 1} on this connection is for {head.host!r}, "
                                   "which another route serves")
            upgrade = head.upgrade and self.requests == 0 and head.version == "1.1"
            out += self.rewrite(head, raw, keep_upgrade=upgrade)
            self.requests += 1
            if upgrade:
                self._upgrade = self.watching = True
            if head.chunked:
                self._state = "size"
            elif head.content_length:
                self._state, self._left = "body", head.content_length
            else:
                self._message_done()
            return True
        if st == "body" or st == "chunk":
            k = min(self._left, len(buf))
            out += buf[:k]
            del buf[:k]
            self._left -= k
            if self._left == 0:
                if st == "body":
                    self._message_done()
                else:
                    self._state = "chunk_end"
            return True
        if st == "size":
            end = buf.find(b"\r\n", 0, MAX_CHUNK_LINE)
            if end == -1:
                if len(buf) >= MAX_CHUNK_LINE:
                    raise SniffError(f"HTTP chunked body: chunk-size line longer than {MAX_CHUNK_LINE} bytes")
                return False
            m = _CHUNK_LINE.match(bytes(buf[:end]))
            if m is None:  # includes a bare CR or LF inside the line, which two parsers may split differently
                raise SniffError(f"HTTP chunked body: bad chunk-size line {bytes(buf[:min(end, 40)])!r}")
            out += buf[: end + 2]
            del buf[: end + 2]
            n = int(m.group(1), 16)
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
        end = buf.find(b"\r\n", 0, MAX_TRAILERS + 2)
        if end == -1:
            if len(buf) > MAX_TRAILERS:
                raise SniffError(f"HTTP chunked body: trailer line longer than {MAX_TRAILERS} bytes")
            return False
        if end and not _TRAILER_LINE.match(bytes(buf[:end])):
            raise SniffError(f"HTTP chunked body: bad trailer line {bytes(buf[:min(end, 40)])!r}")
        out += buf[: end + 2]
        del buf[: end + 2]
        if end == 0:
            self._message_done()
        return True

    def rewrite(self, head: RequestHead, raw: bytes, keep_upgrade: bool = True) -> bytes:
        """The head with forwarding headers set for this client (old copies kept only when trusted).

        Header names with an underscore are dropped, as nginx does (`underscores_in_headers off`): CGI and WSGI
        servers map `X_Forwarded_For` and `X-Forwarded-For` to the same variable, so one would smuggle a forged
        value next to ours. `Connection` loses tokens that name a forwarding header (a hop-by-hop list would make
        the next hop delete ours) and, when the upgrade is declined, `upgrade` (with the `Upgrade` header)."""
        lines = raw[:-4].split(b"\r\n")
        out = [lines[0]]
        xff: list[bytes] = []
        fwd: list[bytes] = []
        real_ip: bytes | None = None
        for line, (name, value) in zip(lines[1:], head.headers, strict=True):
            low = name.lower()
            if b"_" in low:
                continue
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
            if low == b"upgrade" and not keep_upgrade:
                continue
            if low == b"connection":
                tokens = [t.strip() for t in value.split(b",")]
                kept = [t for t in tokens if t and t.lower() not in FORWARDING_HEADERS
                        and (keep_upgrade or t.lower() != b"upgrade")]
                if len(kept) != len([t for t in tokens if t]):
                    if kept:
                        out.append(name + b": " + b", ".join(kept))
                    continue
            out.append(line)
        out.append(b"X-Forwarded-For: " + b", ".join([*xff, self._add_xff]))
        out.append(b"X-Real-IP: " + (real_ip if real_ip is not None else self._add_xff))
        node = b"for=" + self._add + b";proto=" + self.scheme.encode()
        if head.host_value is not None:
            node += b';host="' + head.host_value.replace(b'"', b"") + b'"'
        out.append(b"Forwarded: " + b", ".join([*fwd, node]))
        if not self.keep_existing or not head.get(b"x-forwarded-proto"):
            out.append(b"X-Forwarded-Proto: " + self.scheme.encode())
        return b"\r\n".join(out) + b"\r\n\r\n"


class _Misdirected(Exception):
    pass


class _NotAllowed(Exception):
    pass


def _error(status: int, reason: str) -> bytes:
    body = f"{status} {reason}\n".encode()
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode() + body

"""HTTP/1.x request head parsing (RFC 9112 sections 2-3, 5-7), sans-I/O.

    head = parse_request_head(buffered_bytes)    # None: need more bytes; SniffError: not a sane request head

Strict where leniency lets two parsers disagree (request smuggling): CRLF line ends only, no whitespace before a
header's colon, no obsolete line folding, one Host, Content-Length and Transfer-Encoding never together, no
Transfer-Encoding in HTTP/1.0 (RFC 9112 6.1), a request target in one of the four forms of RFC 9112 3.2 (an
absolute-form target names the host: a Host header that disagrees is refused, 3.2.2).

`HeadReader` is the incremental form for a head that arrives a few bytes at a time: each byte is examined a bounded
number of times however the bytes are cut (re-parsing the whole buffer on every read would cost quadratic CPU).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from wiregate.sniff.tls import SniffError, normalize_hostname

DEFAULT_MAX_HEAD = 8192
# RFC 9110 5.6.2 token characters
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_REQUEST_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) HTTP/1\.([01])\Z")
_FIELD_VALUE_BAD = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_METHOD_START = re.compile(rb"[A-Z-]{1,16}")  # every registered method is upper-case letters (and '-')
# RFC 9112 3.2.2 absolute-form, http(s) only: scheme "://" authority [path-abempty] ["?" query]; no userinfo
_ABSOLUTE = re.compile(rb"(?i:https?)://([^/?#@]*)([/?][^#]*)?\Z")
_ORIGIN = re.compile(rb"/[^#]*\Z")


@dataclass(frozen=True, slots=True)
class RequestHead:
    """One parsed request head. `headers` keeps names and values as sent (bytes), in order."""

    method: str
    target: str
    version: str  # "1.0" or "1.1"
    headers: tuple[tuple[bytes, bytes], ...]
    length: int  # bytes of the head including the final CRLF CRLF
    host: str | None  # normalized Host (no port), None when absent
    content_length: int | None = None
    chunked: bool = False
    upgrade: bool = False  # an Upgrade header, or CONNECT: maybe no HTTP/1 after this request (if the server agrees)
    path: str = "/"  # the path (and query) to route by: from an origin-form or absolute-form target, else "/"
    host_value: bytes | None = None  # the Host as sent (the target's authority for an absolute-form target)

    def get(self, name: bytes) -> list[bytes]:
        """Every value of the header `name` (case-insensitive), in order."""
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    @property
    def keep_alive(self) -> bool:
        """Whether the client may send another request on this connection after this one (RFC 9112 9.3)."""
        tokens = {t.strip().lower() for v in self.get(b"connection") for t in v.split(b",")}
        if b"close" in tokens:
            return False
        return self.version == "1.1" or b"keep-alive" in tokens


def looks_like_http(prefix: bytes) -> bool | None:
    """True if `prefix` starts like an HTTP/1 request line, False if not, None when more bytes are needed."""
    m = _METHOD_START.match(prefix)
    if m is None:
        return None if not prefix else False
    if m.end() < len(prefix):
        return prefix[m.end()] == 0x20
    return None if m.end() < 16 else False


def parse_host(value: bytes) -> str:
    """The host part of a Host header value (RFC 9110 7.2): name or IP literal, port dropped, lower case."""
    v = value.strip()
    if v.startswith(b"["):
        end = v.find(b"]")
        if end == -1:
            raise SniffError(f"HTTP Host: unterminated IPv6 literal {v[:60]!r}")
        host, rest = v[1:end].decode("ascii", "replace").lower(), v[end + 1 :]
        if rest and not (rest.startswith(b":") and rest[1:].isdigit()):
            raise SniffError(f"HTTP Host: bad port in {v[:60]!r}")
        try:
            if "%" in host:  # a zone id means nothing beyond the sender's own link
                raise ValueError(host)
            ipaddress.IPv6Address(host)
        except ValueError:
            raise SniffError(f"HTTP Host: {v[:60]!r} is not an IPv6 literal") from None
        return host
    host_b, _, port = v.partition(b":")
    if port and not port.isdigit():
        raise SniffError(f"HTTP Host: bad port in {v[:60]!r}")
    return normalize_hostname(host_b, "HTTP Host")


def parse_request_head(buf: bytes | bytearray | memoryview, max_head: int = DEFAULT_MAX_HEAD) -> RequestHead | None:
    """The request head at the start of `buf`, None while incomplete, SniffError when malformed or too long."""
    data = bytes(buf[: max_head + 4])
    end = data.find(b"\r\n\r\n")
    if end == -1:
        if len(data) > max_head:
            raise SniffError(f"HTTP: request head longer than {max_head} bytes")
        first = data.split(b"\r\n", 1)[0]
        if b"\n" in first and b"\r\n" not in data[: len(first) + 2]:
            raise SniffError("HTTP: bare LF in the request line (CRLF required)")
        return None
    if end + 4 > max_head:
        raise SniffError(f"HTTP: request head of {end + 4} bytes exceeds the limit of {max_head}")
    lines = data[:end].split(b"\r\n")
    m = _REQUEST_LINE.match(lines[0])
    if not m:
        raise SniffError(f"HTTP: malformed request line {lines[0][:80]!r}")
    method, target, minor = m.group(1).decode(), m.group(2).decode(), m.group(3).decode()
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        if b"\n" in line or b"\r" in line:
            raise SniffError("HTTP: bare CR or LF inside the head (CRLF required)")
        if line[:1] in (b" ", b"\t"):
            raise SniffError("HTTP: obsolete line folding is not accepted")
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.match(name):
            raise SniffError(f"HTTP: malformed header line {line[:80]!r}")
        value = value.strip(b" \t")
        if _FIELD_VALUE_BAD.search(value):
            raise SniffError(f"HTTP: control character in header {name.decode()!r}")
        headers.append((name, value))
    lower = [(k.lower(), v) for k, v in headers]
    hosts = [v for k, v in lower if k == b"host"]
    if len(hosts) > 1:
        raise SniffError("HTTP: more than one Host header")
    if not hosts and minor == "1":
        raise SniffError("HTTP/1.1: no Host header")
    host = parse_host(hosts[0]) if hosts else None
    host_value = hosts[0] if hosts else None
    path = _check_target(method, m.group(2))
    if path is None:  # absolute-form: the authority is the host (RFC 9112 3.2.2)
        absolute = _ABSOLUTE.match(m.group(2))
        assert absolute is not None  # _check_target returns None only for a target that matches
        authority = absolute.group(1)
        a_host = parse_host(authority)
        if host is not None and host != a_host:
            raise SniffError(f"HTTP: Host {host!r} disagrees with the request target's authority {a_host!r}")
        host, host_value = a_host, authority
        path = (absolute.group(2) or b"/").decode()
        if path.startswith("?"):
            path = "/" + path
    te = [t.strip().lower() for k, v in lower if k == b"transfer-encoding" for t in v.split(b",")]
    cls = {v.strip() for k, v in lower if k == b"content-length"}
    content_length = None
    if te and minor == "0":
        raise SniffError("HTTP/1.0 request with Transfer-Encoding (RFC 9112 6.1: faulty framing)")
    if te and cls:
        raise SniffError("HTTP: both Transfer-Encoding and Content-Length (RFC 9112 6.3)")
    if te and te[-1] != b"chunked":
        raise SniffError("HTTP: request Transfer-Encoding must end with chunked (RFC 9112 6.3)")
    if te.count(b"chunked") > 1:
        raise SniffError("HTTP: chunked applied more than once (RFC 9112 7)")
    if cls:
        if len(cls) > 1 or not all(c.isdigit() for c in cls) or len(next(iter(cls))) > 18:
            raise SniffError(f"HTTP: bad Content-Length {sorted(cls)!r}")
        content_length = int(next(iter(cls)))
    upgrade = method == "CONNECT" or any(k == b"upgrade" for k, _ in lower)
    return RequestHead(method, target, "1." + minor, tuple(headers), end + 4, host, content_length,
                       bool(te), upgrade, path, host_value)


def _check_target(method: str, target: bytes) -> str | None:
    """The routing path of a request target (RFC 9112 3.2); None for absolute-form (the caller reads its
    authority); SniffError for a target in none of the four forms, or in a form the method may not use."""
    if target.startswith(b"/"):
        if not _ORIGIN.match(target):
            raise SniffError(f"HTTP: bad origin-form target {target[:80]!r}")
        return target.decode()
    if target == b"*":
        if method != "OPTIONS":
            raise SniffError(f"HTTP: asterisk-form target with {method} (only OPTIONS, RFC 9112 3.2.4)")
        return "/"
    if method == "CONNECT":  # authority-form: host:port (RFC 9112 3.2.3)
        _, colon, port = target.rpartition(b":")
        if not colon or not port.isdigit():
            raise SniffError(f"HTTP: CONNECT target {target[:80]!r} is not host:port")
        parse_host(target)
        return "/"
    if not _ABSOLUTE.match(target):
        raise SniffError(f"HTTP: request target {target[:80]!r} is neither a path nor an http(s) URL")
    return None


class HeadReader:
    """Incremental `parse_request_head` for one head: feed bytes as they come, get the head once complete.

    The search for the blank line resumes where it stopped, so a head cut into n pieces costs O(n + length), not
    O(n * length). The bytes are kept (`buffered`); the caller forwards them unchanged."""

    __slots__ = ("_line_done", "_scanned", "buf", "examined", "max_head")

    def __init__(self, max_head: int = DEFAULT_MAX_HEAD) -> None:
        self.max_head = max_head
        self.buf = bytearray()
        self._scanned = 0  # bytes before this offset hold no blank line (and, once _line_done, no bare LF check)
        self._line_done = False
        self.examined = 0  # bytes searched so far (a work counter for tests)

    def feed(self, data: bytes | bytearray | memoryview) -> RequestHead | None:
        """Add bytes; the head once the blank line after it arrived, None before, SniffError when malformed."""
        buf = self.buf
        buf += data
        stop = min(len(buf), self.max_head + 4)
        if not self._line_done:
            nl = buf.find(b"\n", self._scanned, stop)
            self.examined += stop - self._scanned
            if nl != -1:
                if nl == 0 or buf[nl - 1] != 0x0D:
                    raise SniffError("HTTP: bare LF in the request line (CRLF required)")
                self._line_done = True
        start = max(0, self._scanned - 3)
        self.examined += stop - start
        end = buf.find(b"\r\n\r\n", start, stop)
        if end == -1:
            self._scanned = stop
            if len(buf) > self.max_head:
                raise SniffError(f"HTTP: request head longer than {self.max_head} bytes")
            return None
        return parse_request_head(buf[: end + 4], self.max_head)

"""HTTP/1.x request head parsing (RFC 9112 sections 2-3, 5-7), sans-I/O.

    head = parse_request_head(buffered_bytes)    # None: need more bytes; SniffError: not a sane request head

Strict where leniency lets two parsers disagree (request smuggling): CRLF line ends only, no whitespace before a
header's colon, no obsolete line folding, one Host, Content-Length and Transfer-Encoding never together.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from wiregate.sniff.tls import SniffError, normalize_hostname

DEFAULT_MAX_HEAD = 8192
# RFC 9110 5.6.2 token characters
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_REQUEST_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) HTTP/1\.([01])\Z")
_FIELD_VALUE_BAD = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_METHOD_START = re.compile(rb"[A-Z-]{1,16}")  # every registered method is upper-case letters (and '-')


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
    upgrade: bool = False  # Upgrade requested, or CONNECT: after this request the bytes are not HTTP/1

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
    te = [t.strip().lower() for k, v in lower if k == b"transfer-encoding" for t in v.split(b",")]
    cls = {v.strip() for k, v in lower if k == b"content-length"}
    content_length = None
    if te and cls:
        raise SniffError("HTTP: both Transfer-Encoding and Content-Length (RFC 9112 6.3)")
    if te and te[-1] != b"chunked":
        raise SniffError("HTTP: request Transfer-Encoding must end with chunked (RFC 9112 6.3)")
    if cls:
        if len(cls) > 1 or not all(c.isdigit() for c in cls) or len(next(iter(cls))) > 18:
            raise SniffError(f"HTTP: bad Content-Length {sorted(cls)!r}")
        content_length = int(next(iter(cls)))
    upgrade = method == "CONNECT" or any(k == b"upgrade" for k, _ in lower)
    return RequestHead(method, target, "1." + minor, tuple(headers), end + 4, host, content_length,
                       bool(te), upgrade)

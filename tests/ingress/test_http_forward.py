"""Client-address headers on every request of a keep-alive connection, with bodies walked, sans-I/O."""

from __future__ import annotations

from wiregate.ingress.http_forward import HttpForwarder
from wiregate.sniff import parse_request_head

CLIENT = ("203.0.113.7", 51234)


def heads(stream: bytes) -> list:
    """Parse a backend-side byte stream back into request heads (bodies skipped by their framing)."""
    out = []
    while stream:
        h = parse_request_head(stream)
        assert h is not None, stream[:80]
        out.append(h)
        stream = stream[h.length:]
        if h.content_length:
            stream = stream[h.content_length:]
        elif h.chunked:
            last = stream.find(b"\r\n0\r\n")
            end = stream.find(b"\r\n\r\n", last + 2)  # after the trailers
            stream = stream[end + 4:]
    return out


def run(fwd: HttpForwarder, data: bytes, step: int) -> bytes:
    out = b""
    for i in range(0, len(data), step):
        o = fwd.feed(data[i:i + step])
        assert o.refuse is None
        out += o.to_backend
    return out


REQS = (b"GET /1 HTTP/1.1\r\nHost: web.example.org\r\nX-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\n"
        b"Forwarded: for=6.6.6.6\r\n\r\n"
        b"POST /2 HTTP/1.1\r\nHost: web.example.org\r\nContent-Length: 29\r\n\r\n"
        b"GET /fake HTTP/1.1\r\nHost: x\r\n"  # a body that looks like a request must not be rewritten
        b"POST /3 HTTP/1.1\r\nHost: web.example.org\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n0\r\nTrailer: x\r\n\r\n"
        b"GET /4 HTTP/1.1\r\nHost: web.example.org\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n")


def test_every_request_gets_the_headers_and_untrusted_copies_are_removed():
    for step in (1, 7, len(REQS)):
        out = run(HttpForwarder(CLIENT, "http", keep_existing=False), REQS, step)
        hs = heads(out)
        assert [h.target for h in hs] == ["/1", "/2", "/3", "/4"]
        for h in hs:
            assert h.get(b"x-forwarded-for") == [b"203.0.113.7"]
            assert h.get(b"x-real-ip") == [b"203.0.113.7"]
            assert h.get(b"forwarded") == [b'for=203.0.113.7;proto=http;host="web.example.org"']
            assert h.get(b"x-forwarded-proto") == [b"http"]
        assert b"GET /fake HTTP/1.1\r\nHost: x\r\n" in out  # body bytes unchanged
        assert b"5;ext=1\r\nhello\r\n0\r\nTrailer: x\r\n\r\n" in out
        assert b"6.6.6.6" not in out


def test_trusted_client_copies_are_kept_and_appended_to():
    out = run(HttpForwarder(("10.0.0.5", 1), "https", keep_existing=True), REQS, 13)
    first = heads(out)[0]
    assert first.get(b"x-forwarded-for") == [b"6.6.6.6, 10.0.0.5"]
    assert first.get(b"x-real-ip") == [b"6.6.6.6"]
    assert first.get(b"forwarded") == [b'for=6.6.6.6, for=10.0.0.5;proto=https;host="web.example.org"']


def test_ipv6_client_is_quoted_in_forwarded():
    out = run(HttpForwarder(("2001:db8::7", 1), "http", False), b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n", 100)
    assert heads(out)[0].get(b"forwarded") == [b'for="[2001:db8::7]";proto=http;host="a.example"']


def test_request_for_another_route_gets_421():
    fwd = HttpForwarder(CLIENT, "http", False, accepts=lambda h: h.host == "a.example")
    o = fwd.feed(b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\nGET / HTTP/1.1\r\nHost: b.example\r\n\r\n")
    assert o.refuse is not None and o.refuse[0] == "misdirected" and o.refuse[2].startswith(b"HTTP/1.1 421 ")
    assert heads(o.to_backend)[0].host == "a.example" and b"b.example" not in o.to_backend


def test_upgrade_switches_to_pass_through():
    fwd = HttpForwarder(CLIENT, "http", False)
    o = fwd.feed(b"GET /ws HTTP/1.1\r\nHost: a.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05")
    assert fwd.tunnel and o.to_backend.endswith(b"\r\n\r\n\x81\x05")
    assert fwd.feed(b"GET / HTTP/1.1\r\n").to_backend == b"GET / HTTP/1.1\r\n"


def test_malformed_later_request_and_bad_chunk_get_400():
    fwd = HttpForwarder(CLIENT, "http", False)
    o = fwd.feed(b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    assert o.refuse is not None and o.refuse[0] == "bad_request" and o.refuse[2].startswith(b"HTTP/1.1 400 ")
    fwd = HttpForwarder(CLIENT, "http", False)
    o = fwd.feed(b"POST / HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
    assert o.refuse is not None and "chunk size" in o.refuse[1]

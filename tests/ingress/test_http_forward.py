"""Client-address headers on every request of a keep-alive connection, with bodies walked, sans-I/O."""

from __future__ import annotations

import pytest

from wiregate.ingress.http_forward import MAX_HELD, HttpForwarder
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


UPGRADE = b"GET /ws HTTP/1.1\r\nHost: a.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
FORGED = b"GET /admin HTTP/1.1\r\nHost: a.example\r\nX-Forwarded-For: 10.0.0.1\r\nX-Real-IP: 10.0.0.1\r\n\r\n"


def test_upgrade_becomes_a_tunnel_only_after_101_from_the_backend():
    fwd = HttpForwarder(CLIENT, "http", False)
    o = fwd.feed(UPGRADE + b"\x81\x05")
    assert not fwd.tunnel and fwd.waiting and fwd.watching
    assert heads(o.to_backend)[0].get(b"upgrade") == [b"websocket"] and not o.to_backend.endswith(b"\x81\x05")
    assert fwd.feed(b"hello").to_backend == b""  # held, unparsed, until the answer
    assert fwd.feed_response(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n") is None
    assert fwd.waiting  # the answer's head is not complete yet
    assert fwd.feed_response(b"Connection: Upgrade\r\n\r\n\x81\x02hi") is None
    assert fwd.tunnel and not fwd.waiting and not fwd.watching
    assert fwd.feed(b"").to_backend == b"\x81\x05hello"  # released as they came
    assert fwd.feed(b"GET / HTTP/1.1\r\n").to_backend == b"GET / HTTP/1.1\r\n"  # opaque from now on


@pytest.mark.parametrize("upgrade", [UPGRADE, b"GET / HTTP/1.1\r\nHost: a.example\r\nUpgrade: h2c\r\n\r\n"])
def test_upgrade_answered_without_101_keeps_parsing_so_forged_headers_are_replaced(upgrade):
    fwd = HttpForwarder(CLIENT, "http", False, accepts=lambda h: h.host == "a.example")
    assert heads(fwd.feed(upgrade + FORGED).to_backend)[0].target in ("/ws", "/")
    assert fwd.feed_response(b"HTTP/1.1 100 Continue\r\n\r\n") is None and fwd.waiting  # interim: not yet
    assert fwd.feed_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok") is None
    assert not fwd.tunnel and not fwd.waiting and not fwd.watching
    second = heads(fwd.feed(b"").to_backend)
    assert [h.target for h in second] == ["/admin"]
    assert second[0].get(b"x-forwarded-for") == [b"203.0.113.7"] and second[0].get(b"x-real-ip") == [b"203.0.113.7"]
    # and a smuggled request for another route's Host is refused as on any keep-alive connection
    o = fwd.feed(b"GET /admin HTTP/1.1\r\nHost: internal.example\r\n\r\n")
    assert o.refuse is not None and o.refuse[0] == "misdirected" and o.to_backend == b""


def test_upgrade_on_a_later_request_or_in_http10_is_declined_by_removing_the_header():
    fwd = HttpForwarder(CLIENT, "http", False)
    out = fwd.feed(b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n" + UPGRADE + FORGED).to_backend
    hs = heads(out)
    assert [h.target for h in hs] == ["/", "/ws", "/admin"] and not fwd.waiting and not fwd.tunnel
    assert hs[1].get(b"upgrade") == [] and hs[1].get(b"connection") == []
    assert hs[2].get(b"x-forwarded-for") == [b"203.0.113.7"]
    fwd = HttpForwarder(CLIENT, "http", False)
    out = fwd.feed(b"GET / HTTP/1.0\r\nUpgrade: websocket\r\nConnection: upgrade, keep-alive\r\n\r\n").to_backend
    assert heads(out)[0].get(b"upgrade") == [] and heads(out)[0].get(b"connection") == [b"keep-alive"]
    assert not fwd.watching


def test_connect_is_refused_with_405():
    fwd = HttpForwarder(CLIENT, "http", False)
    o = fwd.feed(b"CONNECT internal.example:22 HTTP/1.1\r\nHost: internal.example:22\r\n\r\nSSH-2.0-x\r\n")
    assert o.refuse is not None and o.refuse[0] == "method_not_allowed" and o.refuse[2].startswith(b"HTTP/1.1 405 ")
    assert o.to_backend == b"" and not fwd.tunnel


def test_a_backend_answer_that_is_not_http_closes_and_held_bytes_are_bounded():
    fwd = HttpForwarder(CLIENT, "http", False)
    fwd.feed(UPGRADE)
    assert "not HTTP/1" in (fwd.feed_response(b"SSH-2.0-OpenSSH_9.6\r\n") or "")
    fwd = HttpForwarder(CLIENT, "http", False)
    fwd.feed(UPGRADE)
    o = fwd.feed(b"x" * (MAX_HELD + 1))
    assert o.refuse is not None and o.refuse[0] == "bad_request" and o.to_backend == b""


def test_an_upgrade_request_with_a_body_waits_after_the_body():
    fwd = HttpForwarder(CLIENT, "http", False)
    out = fwd.feed(b"POST / HTTP/1.1\r\nHost: a.example\r\nUpgrade: h2c\r\nContent-Length: 3\r\n\r\nab").to_backend
    assert out.endswith(b"\r\n\r\nab") and not fwd.waiting
    assert fwd.feed(b"c" + FORGED).to_backend == b"c" and fwd.waiting


def test_forwarding_header_names_with_underscores_and_hop_by_hop_tricks_are_dropped():
    fwd = HttpForwarder(CLIENT, "http", False)
    out = fwd.feed(b"GET / HTTP/1.1\r\nHost: a.example\r\nX_Forwarded_For: 10.0.0.1\r\nX_Real_IP: 10.0.0.1\r\n"
                   b"Connection: keep-alive, X-Forwarded-For\r\nAccept: */*\r\n\r\n").to_backend
    h = heads(out)[0]
    assert b"10.0.0.1" not in out and b"_" not in out
    assert h.get(b"x-forwarded-for") == [b"203.0.113.7"] and h.get(b"connection") == [b"keep-alive"]
    assert h.get(b"accept") == [b"*/*"]


@pytest.mark.parametrize(("raw", "msg"), [
    (b"POST / HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n5;ext\nX\r\nhello\r\n0\r\n\r\n",
     "chunk-size line"),
    (b"POST / HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
     "chunk-size line"),
    (b"POST / HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: a\nGET / x\r\n\r\n",
     "trailer line"),
    (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "HTTP/1.0 request with Transfer"),
    (b"POST / HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
     "both"),
    (b"GET http://a.example/ HTTP/1.1\r\nHost: internal.example\r\n\r\n", "disagrees"),
    (b"GET http://[abc/ HTTP/1.1\r\nHost: a.example\r\n\r\n", "IPv6"),
])
def test_framing_and_target_rules_of_rfc9112_refuse_with_400_even_on_a_later_request(raw, msg):
    fwd = HttpForwarder(CLIENT, "http", False)
    o = fwd.feed(b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n" + raw)
    assert o.refuse is not None and o.refuse[0] == "bad_request" and msg in o.refuse[1], o.refuse
    assert o.refuse[2].startswith(b"HTTP/1.1 400 ") and o.to_backend.count(b" HTTP/1.") <= 2
    assert not o.to_backend.endswith(raw[-12:])  # nothing from the faulty line on reached the backend


def test_chunk_extensions_as_rfc9112_writes_them_pass():
    body = b'5 ; name="q\\"x" ;b=tok\r\nhello\r\n0\r\nX-T: 1\r\n\r\n'
    out = run(HttpForwarder(CLIENT, "http", False),
              b"POST / HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n" + body, 3)
    assert out.endswith(body)


def test_absolute_form_target_is_routed_by_its_authority():
    fwd = HttpForwarder(CLIENT, "http", False, accepts=lambda h: h.host == "a.example")
    out = fwd.feed(b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n"
                   b"GET http://a.example/x?y HTTP/1.1\r\nHost: a.example\r\n\r\n").to_backend
    assert [h.path for h in heads(out)] == ["/", "/x?y"]
    o = fwd.feed(b"GET http://internal.example/admin HTTP/1.0\r\n\r\n")  # no Host: the authority decides
    assert o.refuse is not None and o.refuse[0] == "misdirected"


def test_malformed_later_request_and_bad_chunk_get_400():
    fwd = HttpForwarder(CLIENT, "http", False)
    o = fwd.feed(b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    assert o.refuse is not None and o.refuse[0] == "bad_request" and o.refuse[2].startswith(b"HTTP/1.1 400 ")
    fwd = HttpForwarder(CLIENT, "http", False)
    o = fwd.feed(b"POST / HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
    assert o.refuse is not None and "chunk-size line" in o.refuse[1]


def test_the_upgrade_answer_cut_anywhere_is_read_the_same():
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x00"
    for step in (1, 2, 3, 5, len(answer)):
        fwd = HttpForwarder(CLIENT, "http", False)
        fwd.feed(UPGRADE)
        for i in range(0, len(answer), step):
            assert fwd.feed_response(answer[i:i + step]) is None
        assert fwd.tunnel and not fwd.watching

"""Fuzz the parsers that read bytes from the network: PROXY v1/v2, TLS ClientHello sniffing, HTTP/1 heads, the
HTTP forwarder (both directions) and the ingress's whole head phase. Only a result, None or a WiregateError may
come out, and cutting the same bytes differently never changes the result."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.common import cut, fuzz, mutated
from wiregate.errors import WiregateError
from wiregate.ingress import Listener, Route
from wiregate.ingress.http_forward import HttpForwarder, Output
from wiregate.ingress.policy import Accepted, HeadPhase, Refused, Rules
from wiregate.proxyproto import TLV, Decoder, decode, detect, encode_v1, encode_v2
from wiregate.sniff import (HeadReader, HelloReader, RequestHead, classify, parse_client_hello,
                            parse_request_head)
from wiregate.testing.tls_hello import alpn_ext, client_hello, ext, records, sni_ext

PROXY_SEEDS = [
    encode_v1(("203.0.113.7", 51234), ("198.51.100.2", 443)),
    encode_v1(("2001:db8::7", 1), ("2001:db8::1", 443)),
    encode_v1(None, None),
    encode_v2(("203.0.113.7", 51234), ("198.51.100.2", 443)),
    encode_v2(("2001:db8::7", 1), ("2001:db8::1", 443), tlvs=[TLV(0x02, b"a.example"), TLV(0x01, b"h2")]),
    encode_v2(None, None),
]
HELLO_SEEDS = [
    records(client_hello(sni_ext(b"app.example.org"), alpn_ext(b"h2", b"http/1.1"))),
    records(client_hello(sni_ext(b"app.example.org"), ext(0xFE0D, b"\x00" * 40)), size=64),
    records(client_hello(), size=7),
    records(client_hello(sni_ext(b"a.example"), pad=600), size=300),
]
HTTP_SEEDS = [
    b"GET / HTTP/1.1\r\nHost: web.example.org\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n",
    (b"POST /api/x?q=1 HTTP/1.1\r\nHost: web.example.org:80\r\nContent-Length: 5\r\n\r\nhello"
     b"GET http://web.example.org/ HTTP/1.1\r\nHost: web.example.org\r\n\r\n"),
    (b"POST / HTTP/1.1\r\nHost: [2001:db8::1]\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
     b"5;a=b\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"),
    b"GET /ws HTTP/1.1\r\nHost: web.example.org\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05",
    b"OPTIONS * HTTP/1.0\r\n\r\nCONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n",
    (b"GET / HTTP/1.1\r\nHost: web.example.org\r\nUpgrade: h2c\r\n\r\n"
     b"GET /admin HTTP/1.1\r\nHost: internal.example\r\nX-Forwarded-For: 6.6.6.6\r\nX_Real_IP: 6.6.6.6\r\n\r\n"),
]
RESPONSE_SEEDS = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x02hi",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.0 404 Not Found\n\nnope",
]


def outcome(fn, *args):
    """fn's result, or ("error", type) for a WiregateError; any other exception propagates (a fuzz failure)."""
    try:
        return fn(*args)
    except WiregateError as exc:
        assert str(exc), f"{type(exc).__name__} without a message"
        return ("error", type(exc).__name__)


@fuzz
@given(st.data(), st.one_of(mutated(PROXY_SEEDS), st.binary(max_size=300)), st.binary(max_size=20))
def test_proxy_decoder_any_bytes_any_cuts(data, header, rest):
    wire = header + rest
    whole = outcome(lambda: Decoder().feed(wire))
    dec = Decoder()
    got = None
    for piece in data.draw(cut(wire)):
        got = outcome(dec.feed, piece)
        if got is not None:
            break
    assert got == whole
    assert detect(wire[:16]) in (None, "v1", "v2", "none")
    outcome(decode, wire)


def hello_outcome(wire: bytes):
    return outcome(parse_client_hello, wire)


@fuzz
@given(st.data(), st.one_of(mutated(HELLO_SEEDS, max_edits=4), st.binary(max_size=400)))
def test_client_hello_any_bytes_any_cuts_same_answer_as_one_shot(data, wire):
    whole = hello_outcome(wire)
    r = HelloReader()
    got = None
    for piece in data.draw(cut(wire)):
        got = outcome(r.feed, piece)
        if got is not None:
            break
    assert got == whole
    assert classify(wire[:17]) in (None, "tls", "http", "other")


def head_outcome(wire: bytes):
    head = outcome(parse_request_head, wire)
    if isinstance(head, RequestHead):
        assert head.path.startswith("/") and (head.host is None or head.host == head.host.lower())
    return head


@fuzz
@given(st.data(), st.one_of(mutated(HTTP_SEEDS), st.binary(max_size=300)))
def test_http_head_any_bytes_any_cuts_same_answer(data, wire):
    whole = head_outcome(wire)
    r = HeadReader()
    got = None
    for piece in data.draw(cut(wire)):
        got = outcome(r.feed, piece)
        if got is not None:
            break
    if whole is None or got is None:  # the incremental reader may refuse a bare-LF request line sooner
        assert got in (whole, ("error", "SniffError")) or whole == ("error", "SniffError")
    else:
        assert got == whole


def backend_heads(stream: bytes) -> list[RequestHead]:
    """The request heads a backend reads from `stream` (bodies skipped by their framing), up to where it ends."""
    heads = []
    while stream:
        h = parse_request_head(stream, 16384)
        if h is None:
            break
        heads.append(h)
        stream = stream[h.length:]
        if h.content_length:
            stream = stream[h.content_length:]
        elif h.chunked:
            while True:  # chunks, then trailers up to an empty line
                end = stream.find(b"\r\n")
                if end == -1:
                    return heads
                n = int(stream[:end].split(b";")[0].strip(b" \t"), 16)
                stream = stream[end + 2 + (n + 2 if n else 0):]
                if n == 0:
                    end = stream.find(b"\r\n\r\n") if not stream.startswith(b"\r\n") else -2
                    if end == -1:
                        return heads
                    stream = stream[end + 4:]
                    break
    return heads


@fuzz
@given(st.data(), mutated(HTTP_SEEDS, max_edits=8), st.one_of(mutated(RESPONSE_SEEDS), st.binary(max_size=100)))
def test_http_forwarder_every_request_the_backend_reads_carries_only_our_address(data, stream, response):
    fwd = HttpForwarder(("203.0.113.7", 1), "http", keep_existing=False,
                        accepts=lambda h: h.host in (None, "web.example.org", "a.example"))
    sent = b""  # what the backend reads as HTTP (up to a 101, after which the bytes are another protocol)
    for piece in data.draw(cut(stream)):
        o = fwd.feed(piece)
        assert isinstance(o, Output)
        if not fwd.tunnel:
            sent += o.to_backend
        if o.refuse is not None:
            assert o.refuse[2].startswith(b"HTTP/1.1 4")
            break
        if fwd.watching:
            bad = fwd.feed_response(response)
            assert bad is None or isinstance(bad, str)
            if bad is not None:
                break
            if not fwd.waiting and not fwd.tunnel:
                sent += fwd.feed(b"").to_backend
    for i, h in enumerate(backend_heads(sent)):  # (the first request chose the route: only later ones are checked)
        assert h.get(b"x-forwarded-for") == [b"203.0.113.7"] and h.get(b"x-real-ip") == [b"203.0.113.7"]
        assert (i == 0 or h.host in (None, "web.example.org", "a.example")) and not any(b"_" in k for k, _ in h.headers)


LISTENER = Listener(name="l", listen=("127.0.0.1", 0), trusted=("10.8.0.0/24",), routes=(
    Route("app", ("127.0.0.1", 9001), sni=("app.example.org",)),
    Route("web", ("127.0.0.1", 9003), host=("web.example.org",), http_headers=True),
    Route("api", ("127.0.0.1", 9004), host=("web.example.org",), path_prefix="/api")))
RULES = Rules.from_listener(LISTENER)


@fuzz
@given(st.data(), st.one_of(st.just(b""), mutated(PROXY_SEEDS, max_edits=2)),
       st.one_of(mutated(HELLO_SEEDS + HTTP_SEEDS), st.binary(max_size=200)), st.booleans())
def test_head_phase_any_bytes_ends_in_a_decision_or_waits(data, header, body, trusted):
    peer = ("10.8.0.1", 40000) if trusted else ("192.168.1.20", 50000)
    p = HeadPhase(RULES, peer, ("10.8.0.2", 443), 0.0)
    ev = None
    for piece in data.draw(cut(header + body)):
        ev = p.receive_data(piece, 1.0)
        if ev is not None:
            break
    if ev is None:
        ev = p.receive_eof(2.0)
    assert isinstance(ev, (Accepted, Refused))
    if isinstance(ev, Accepted):
        assert ev.route.name in ("app", "web", "api")

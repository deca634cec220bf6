"""HTTP/1 request head parsing: Host, framing, the strictness that prevents request smuggling."""

from __future__ import annotations

import pytest

from wiregate.sniff import SniffError, parse_request_head


def test_head_gives_method_target_host_and_length():
    raw = b"GET /a/b?c HTTP/1.1\r\nHost: Web.Example.org:8080\r\nAccept: */*\r\n\r\nBODY"
    head = parse_request_head(raw)
    assert head is not None
    assert (head.method, head.target, head.version, head.host) == ("GET", "/a/b?c", "1.1", "web.example.org")
    assert head.length == len(raw) - 4
    assert head.keep_alive and head.content_length is None and not head.chunked


def test_incomplete_head_needs_more_at_every_cut():
    raw = b"POST /x HTTP/1.1\r\nHost: a.example\r\nContent-Length: 3\r\n\r\n"
    for cut in range(len(raw)):
        assert parse_request_head(raw[:cut]) is None
    head = parse_request_head(raw)
    assert head is not None and head.content_length == 3


def test_ipv6_literal_host_and_http10_without_host():
    head = parse_request_head(b"GET / HTTP/1.1\r\nHost: [2001:DB8::1]:80\r\n\r\n")
    assert head is not None and head.host == "2001:db8::1"
    head = parse_request_head(b"GET / HTTP/1.0\r\n\r\n")
    assert head is not None and head.host is None and not head.keep_alive


def test_upgrade_and_chunked_are_reported():
    head = parse_request_head(b"GET /ws HTTP/1.1\r\nHost: a.example\r\nUpgrade: websocket\r\n"
                              b"Connection: Upgrade\r\n\r\n")
    assert head is not None and head.upgrade
    head = parse_request_head(b"POST / HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert head is not None and head.chunked


@pytest.mark.parametrize(("raw", "msg"), [
    (b"GET / HTTP/1.1\r\n\r\n", "no Host"),
    (b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n", "more than one Host"),
    (b"GET / HTTP/1.1\r\nHost : a.example\r\n\r\n", "malformed header"),
    (b"GET / HTTP/1.1\r\nHost: a.example\r\n folded\r\n\r\n", "folding"),
    (b"GET / HTTP/1.1\r\nHost: a.example\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", "both"),
    (b"GET / HTTP/1.1\r\nHost: a.example\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "Content-Length"),
    (b"GET / HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: gzip\r\n\r\n", "must end with chunked"),
    (b"GET / HTTP/2.0\r\nHost: a.example\r\n\r\n", "request line"),
    (b"GET  / HTTP/1.1\r\nHost: a.example\r\n\r\n", "request line"),
    (b"GET / HTTP/1.1\r\nHost: a.example\r\nX: a\nY: b\r\n\r\n", "bare CR or LF"),
    (b"GET / HTTP/1.1\r\nHost: exa mple\r\n\r\n", "not a host name"),
    (b"GET / HTTP/1.1\nHost: a\n\n", "bare LF"),
    (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", "HTTP/1.0 request with Transfer-Encoding"),
    (b"POST / HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", "more than once"),
    (b"GET http://b.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n", "disagrees"),
    (b"GET http://[abc/ HTTP/1.1\r\nHost: a.example\r\n\r\n", "IPv6 literal"),
    (b"GET http://[abc]/ HTTP/1.1\r\nHost: a.example\r\n\r\n", "not an IPv6 literal"),
    (b"GET / HTTP/1.1\r\nHost: [fe80::1%eth0]\r\n\r\n", "not an IPv6 literal"),
    (b"GET http://u:p@a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n", "neither a path"),
    (b"GET ftp://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n", "neither a path"),
    (b"GET a.example HTTP/1.1\r\nHost: a.example\r\n\r\n", "neither a path"),
    (b"GET * HTTP/1.1\r\nHost: a.example\r\n\r\n", "asterisk-form"),
    (b"CONNECT a.example HTTP/1.1\r\nHost: a.example\r\n\r\n", "host:port"),
    (b"GET /#frag HTTP/1.1\r\nHost: a.example\r\n\r\n", "origin-form"),
])
def test_malformed_heads_are_refused_with_the_reason(raw, msg):
    with pytest.raises(SniffError, match=msg):
        parse_request_head(raw)


def test_oversize_head_is_refused_before_it_ends():
    raw = b"GET / HTTP/1.1\r\nHost: a.example\r\nX-Pad: " + b"a" * 10000
    with pytest.raises(SniffError, match="longer than 8192"):
        parse_request_head(raw)


def test_absolute_form_gives_the_host_and_path_from_the_target():
    head = parse_request_head(b"GET HTTP://A.example:8080/x/y?q HTTP/1.1\r\nHost: a.example:8080\r\n\r\n")
    assert head is not None and (head.host, head.path, head.host_value) == ("a.example", "/x/y?q", b"A.example:8080")
    head = parse_request_head(b"GET http://a.example?q HTTP/1.0\r\n\r\n")  # HTTP/1.0 without Host
    assert head is not None and (head.host, head.path, head.host_value) == ("a.example", "/?q", b"a.example")
    head = parse_request_head(b"OPTIONS * HTTP/1.1\r\nHost: a.example\r\n\r\n")
    assert head is not None and head.path == "/"

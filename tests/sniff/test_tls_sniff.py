"""TLS ClientHello sniffing from hand-built bytes: split records and segments, no SNI, ECH, malformed input."""

from __future__ import annotations

import ssl

import pytest

from wiregate.sniff import SniffError, classify, parse_client_hello
from wiregate.testing.tls_hello import alpn_ext, client_hello, ext, records, sni_ext


def test_sni_and_alpn_are_read_from_one_record():
    wire = records(client_hello(sni_ext(b"App.Example.ORG."), alpn_ext(b"h2", b"http/1.1")))
    hello = parse_client_hello(wire)
    assert hello is not None
    assert hello.sni == "app.example.org"
    assert hello.alpn == ("h2", "http/1.1")
    assert not hello.ech
    assert hello.record_bytes == len(wire)


def test_hello_split_across_records_and_segments_gives_the_same_answer():
    msg = client_hello(alpn_ext(b"h2"), sni_ext(b"split.example.org"), pad=600)
    wire = records(msg, size=97)  # many records, each handshake fragment cut mid-field
    assert wire.count(b"\x16\x03\x01") >= len(msg) // 97
    for cut in range(0, len(wire)):  # every prefix before the end is "need more", never an error
        if cut < len(wire):
            assert parse_client_hello(wire[:cut]) is None
    hello = parse_client_hello(wire + b"trailing bytes of the next record are ignored")
    assert hello is not None and hello.sni == "split.example.org"


def test_missing_sni_gives_none():
    hello = parse_client_hello(records(client_hello(alpn_ext(b"h2"))))
    assert hello is not None and hello.sni is None


def test_ech_extension_hides_the_sni_and_is_reported():
    wire = records(client_hello(sni_ext(b"public.example.net"), ext(0xFE0D, b"\x00" * 40)))
    hello = parse_client_hello(wire)
    assert hello is not None
    assert hello.ech and hello.sni is None and hello.outer_sni == "public.example.net"


def test_hello_without_extensions_has_no_sni():
    body = b"\x03\x01" + bytes(32) + b"\x00" + b"\x00\x02\x00\x2f" + b"\x01\x00"
    hello = parse_client_hello(records(b"\x01" + len(body).to_bytes(3, "big") + body))
    assert hello is not None and hello.sni is None


@pytest.mark.parametrize(("wire", "msg"), [
    (b"\x17\x03\x03\x00\x05hello", "record type 23"),
    (b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00", "want ClientHello"),
    (b"\x16\x03\x01\x00\x00", "record length 0"),
    (b"\x16\x02\x00\x00\x05", "version major 2"),
    (records(client_hello(sni_ext(b"bad name!.example"))), "not a host name"),
    (records(client_hello(sni_ext(b"a.example", b"b.example"))), "two host_name"),
    (records(client_hello(sni_ext(b"a.example"), sni_ext(b"b.example"))), "appears twice"),
])
def test_malformed_hello_is_refused_with_the_reason(wire, msg):
    with pytest.raises(SniffError, match=msg):
        parse_client_hello(wire)


def test_inner_lengths_that_overrun_are_refused():
    msg = bytearray(client_hello(sni_ext(b"a.example")))
    msg[4 + 2 + 32] = 200  # session id length past the message end
    with pytest.raises(SniffError, match="runs past"):
        parse_client_hello(records(bytes(msg)))


def test_oversize_hello_is_refused_from_its_length_field():
    wire = records(client_hello(sni_ext(b"a.example"), pad=5000))
    with pytest.raises(SniffError, match="exceeds the limit of 4096"):
        parse_client_hello(wire[:9], max_hello=4096)  # refused before the body arrives


def test_a_real_python_ssl_client_hello_is_understood():
    ctx = ssl.create_default_context()
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="real.example.org")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = parse_client_hello(out.read())
    assert hello is not None and hello.sni == "real.example.org" and hello.alpn == ("h2", "http/1.1")


@pytest.mark.parametrize(("prefix", "kind"), [
    (b"", None), (b"\x16", None), (b"\x16\x03", "tls"), (b"GE", None), (b"GET ", "http"),
    (b"SSH-2.0-OpenSSH", "other"), (b"\x00\x01", "other"), (b"get /", "other"), (b"M-SEARCH ", "http"),
])
def test_classify_first_bytes(prefix, kind):
    assert classify(prefix) == kind

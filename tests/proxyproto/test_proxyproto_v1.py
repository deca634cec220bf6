"""PROXY protocol v1 (haproxy doc/proxy-protocol.txt section 2.1): vectors written by hand from the spec."""

import pytest

from wiregate.proxyproto import (
    Command,
    Decoder,
    Family,
    Protocol,
    ProxyError,
    decode,
    encode,
    encode_v1,
    parse_v1_line,
)

# --- valid lines ------------------------------------------------------------------------------------------------

def test_tcp4_line_from_the_spec_example_decodes_and_leaves_the_http_request():
    data = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n"
    h, rest = decode(data)
    assert (h.version, h.command, h.family, h.protocol) == (1, Command.PROXY, Family.INET, Protocol.STREAM)
    assert h.source == ("192.168.0.1", 56324)
    assert h.destination == ("192.168.0.11", 443)
    assert h.length == 47
    assert rest == b"GET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n"


def test_tcp6_line_decodes_with_compressed_and_full_forms():
    h, rest = decode(b"PROXY TCP6 2001:db8::1 2001:0DB8:0000:0000:0000:0000:0000:0002 65535 0\r\n")
    assert h.family is Family.INET6
    assert h.source == ("2001:db8::1", 65535)
    assert h.destination == ("2001:db8::2", 0)  # normalised; upper-case hex and full groups are legal input
    assert rest == b""


def test_tcp6_line_with_ipv4_mapped_addresses_as_haproxy_writes_them():
    h, _ = decode(b"PROXY TCP6 2001:db8::7 ::ffff:127.0.0.1 50022 42733\r\n")
    assert h.source == ("2001:db8::7", 50022)
    assert h.destination == ("::ffff:127.0.0.1", 42733)


def test_longest_tcp4_and_tcp6_lines_from_the_spec_are_accepted():
    v4 = b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n"
    assert len(v4) == 56
    assert decode(v4)[0].source == ("255.255.255.255", 65535)
    f = "ffff:" * 7 + "ffff"
    v6 = f"PROXY TCP6 {f} {f} 65535 65535\r\n".encode()
    assert len(v6) == 104
    assert decode(v6)[0].destination == (f, 65535)


def test_unknown_short_form_means_use_the_real_connection():
    h, rest = decode(b"PROXY UNKNOWN\r\npayload")
    assert h.family is Family.UNSPEC and h.source is None and h.destination is None
    assert h.is_local
    assert h.length == 15
    assert rest == b"payload"


def test_unknown_with_trailing_fields_is_accepted_per_spec_up_to_107_bytes():
    f = "ffff:" * 7 + "ffff"
    worst = f"PROXY UNKNOWN {f} {f} 65535 65535\r\n".encode()
    assert len(worst) == 107
    h, rest = decode(worst + b"x")
    assert h.is_local and h.length == 107 and rest == b"x"
    assert decode(b"PROXY UNKNOWN anything at all\r\n")[0].family is Family.UNSPEC


def test_zero_address_and_port_zero_are_valid():
    h, _ = decode(b"PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n")
    assert h.source == ("0.0.0.0", 0)


# --- encoder ------------------------------------------------------------------------------------------------------

def test_encoder_writes_the_spec_example():
    assert encode_v1(("192.168.0.1", 56324), ("192.168.0.11", 443)) == \
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"


def test_encoder_writes_tcp6_compressed_lower_case():
    assert encode_v1(("2001:DB8:0:0:0:0:0:1", 1), ("::1", 2)) == b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n"


def test_encoder_maps_ipv4_into_ipv6_when_families_differ():
    assert encode_v1(("2001:db8::7", 50022), ("127.0.0.1", 42733)) == \
        b"PROXY TCP6 2001:db8::7 ::ffff:127.0.0.1 50022 42733\r\n"
    assert encode_v1(("192.0.2.1", 1), ("2001:db8::2", 2)) == b"PROXY TCP6 ::ffff:192.0.2.1 2001:db8::2 1 2\r\n"


def test_encoder_writes_unknown_without_addresses_or_for_unix_paths():
    assert encode_v1(None, None) == b"PROXY UNKNOWN\r\n"
    assert encode_v1(b"/run/a.sock", b"/run/b.sock") == b"PROXY UNKNOWN\r\n"


@pytest.mark.parametrize("src,dst,msg", [
    (("example.com", 1), ("192.0.2.1", 2), "not an IPv4 or IPv6 address"),
    (("192.0.2.1", 65536), ("192.0.2.1", 2), "out of range"),
    (("192.0.2.1", -1), ("192.0.2.1", 2), "out of range"),
    (("192.0.2.1", "80"), ("192.0.2.1", 2), "out of range"),
    (("192.0.2.1",), ("192.0.2.1", 2), "must be \\(host, port\\) pairs"),
    ((b"/a.sock", 1), ("192.0.2.1", 2), "not an IPv4 or IPv6 address"),
])
def test_encoder_refuses_what_it_cannot_write(src, dst, msg):
    with pytest.raises(ProxyError, match=msg):
        encode_v1(src, dst)


def test_encoder_takes_socket_addresses_as_python_gives_them():
    # getpeername() on IPv6 gives (host, port, flowinfo, scope_id), with a zone for link-local peers
    assert encode_v1(("fe80::1%eth0", 1, 0, 2), ("::1", 2, 0, 0)) == b"PROXY TCP6 fe80::1 ::1 1 2\r\n"


def test_encode_of_a_decoded_v1_header_gives_the_same_line():
    for line in (b"PROXY TCP4 192.0.2.1 198.51.100.2 1 65535\r\n", b"PROXY TCP6 2001:db8::1 ::1 80 443\r\n",
                 b"PROXY UNKNOWN\r\n"):
        assert encode(decode(line)[0]) == line


# --- malformed lines ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("line,msg", [
    (b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\n", "bare LF"),
    (b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\rX", "CR not followed by LF"),
    (b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\r\n", "not printable"),
    (b"PROXY TCP4 192.0.2.1  192.0.2.2 1 2\r\n", "single spaces"),
    (b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2 \r\n", "single spaces"),
    (b"PROXY TCP4 192.0.2.1 192.0.2.2 1\r\n", "single spaces"),
    (b"PROXY  TCP4 192.0.2.1 192.0.2.2 1 2\r\n", "unknown protocol ''"),
    (b"PROXY TCP5 192.0.2.1 192.0.2.2 1 2\r\n", "unknown protocol 'TCP5'"),
    (b"PROXY tcp4 192.0.2.1 192.0.2.2 1 2\r\n", "unknown protocol 'tcp4'"),
    (b"PROXY UNKNOWNX\r\n", "unknown protocol 'UNKNOWNX'"),
    (b"PROXY TCP4 192.0.2.1 192.0.2.2 01 2\r\n", "bad source port '01'"),
    (b"PROXY TCP4 192.0.2.1 192.0.2.2 1 65536\r\n", "bad destination port '65536'"),
    (b"PROXY TCP4 192.0.2.1 192.0.2.2 -1 2\r\n", "bad source port '-1'"),
    (b"PROXY TCP4 192.0.2.1 192.0.2.2 +1 2\r\n", "bad source port"),
    (b"PROXY TCP4 192.0.2.1 192.0.2.2 0x1 2\r\n", "bad source port"),
    (b"PROXY TCP4 192.0.2.1 192.0.2.2 123456 2\r\n", "bad source port"),
    (b"PROXY TCP4 192.0.2.01 192.0.2.2 1 2\r\n", "bad IPv4 source address '192.0.2.01'"),
    (b"PROXY TCP4 192.0.2.1 192.0.2.256 1 2\r\n", "bad IPv4 destination address"),
    (b"PROXY TCP4 192.0.2 192.0.2.2 1 2\r\n", "bad IPv4 source address"),
    (b"PROXY TCP4 ::1 192.0.2.2 1 2\r\n", "bad IPv4 source address"),
    (b"PROXY TCP6 192.0.2.1 ::1 1 2\r\n", "bad IPv6 source address"),
    (b"PROXY TCP6 ::1 fe80::1%eth0 1 2\r\n", "bad IPv6 destination address"),
    (b"PROXY TCP6 1::2::3 ::1 1 2\r\n", "bad IPv6 source address"),
    (b"PROXY TCP6 12345::1 ::1 1 2\r\n", "bad IPv6 source address"),
    (b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\x00\r\n", "byte 0x00 at offset"),
    (b"PROXY UNKNOWN \xff\r\n", "byte 0xff"),
])
def test_malformed_v1_line_is_refused_with_a_precise_message(line, msg):
    with pytest.raises(ProxyError, match=msg):
        decode(line)


def test_missing_crlf_within_107_bytes_is_refused():
    line = b"PROXY UNKNOWN " + b"a" * 92  # 106 bytes, still no CRLF
    dec = Decoder()
    assert dec.feed(line) is None
    with pytest.raises(ProxyError, match="no CRLF within 107 bytes"):
        dec.feed(b"b")


def test_crlf_at_bytes_108_is_too_late():
    line = b"PROXY UNKNOWN " + b"a" * 92 + b"\r\n"  # 108 bytes
    with pytest.raises(ProxyError, match="no CRLF within 107 bytes"):
        decode(line)


def test_truncated_v1_line_is_a_truncation_error_in_one_shot_decode():
    with pytest.raises(ProxyError, match="v1 header: truncated"):
        decode(b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r")


def test_garbage_after_proxy_prefix_is_refused_before_107_bytes():
    dec = Decoder()
    with pytest.raises(ProxyError, match="not printable"):
        dec.feed(b"PROXY \x16\x03\x01")  # a TLS ClientHello after the prefix: refused at once, no waiting


def test_parse_v1_line_takes_the_line_without_crlf():
    h = parse_v1_line(b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2")
    assert h.length == 36 and h.source == ("192.0.2.1", 1)

"""The incremental decoder: slices, payload hand-off, want(), detection, v1/v2 selection, failed state."""

import pytest

from wiregate.proxyproto import (
    PP2_TYPE_AUTHORITY,
    TLV,
    Decoder,
    ProxyError,
    decode,
    detect,
    encode_v1,
    encode_v2,
)

V2 = encode_v2(("192.0.2.1", 1234), ("198.51.100.2", 443), tlvs=[TLV(PP2_TYPE_AUTHORITY, b"example.com")],
               crc32c=True)
V1 = encode_v1(("2001:db8::1", 1234), ("2001:db8::2", 443))
PAYLOAD = b"\x16\x03\x01\x02\x00" + bytes(range(256)) * 4


@pytest.mark.parametrize("header", [V1, V2], ids=["v1", "v2"])
def test_header_split_into_single_bytes_then_payload_in_the_same_segment(header):
    dec = Decoder()
    for b in header[:-1]:
        assert dec.feed(bytes([b])) is None
    got = dec.feed(header[-1:] + PAYLOAD)
    assert got is not None and got.length == len(header)
    assert dec.rest == PAYLOAD
    assert dec.buffered == 0


@pytest.mark.parametrize("header", [V1, V2], ids=["v1", "v2"])
def test_header_and_payload_in_one_segment_leave_the_payload_untouched(header):
    dec = Decoder()
    got = dec.feed(memoryview(header + PAYLOAD))
    assert got == decode(header)[0]
    assert dec.rest == PAYLOAD and type(dec.rest) is bytes


def test_want_never_asks_past_a_v2_header():
    dec = Decoder(allow_v1=False)
    assert dec.want() == 16
    dec.feed(V2[:5])
    assert dec.want() == 11
    dec.feed(V2[5:16])
    assert dec.want() == len(V2) - 16
    dec.feed(V2[16:])
    assert dec.want() == 0 and dec.rest == b""


def test_want_starts_with_the_shortest_v1_line_then_reads_one_byte_at_a_time():
    dec = Decoder()
    assert dec.want() == 15  # b"PROXY UNKNOWN\r\n"
    dec.feed(V1[:8])
    assert dec.want() == 7
    dec.feed(V1[8:15])
    assert dec.want() == 1


def test_feeding_after_the_header_is_an_error_that_points_at_rest():
    dec = Decoder()
    dec.feed(V2)
    with pytest.raises(ProxyError, match=r"already decoded.*\.rest"):
        dec.feed(b"more")


def test_a_failed_decoder_stays_failed():
    dec = Decoder()
    with pytest.raises(ProxyError, match="no PROXY header") as first:
        dec.feed(b"GET / HTTP/1.1\r\n")
    with pytest.raises(ProxyError) as again:
        dec.feed(V2)
    assert again.value is first.value


def test_plain_http_is_refused_on_the_first_bytes():
    with pytest.raises(ProxyError, match=r"no PROXY header: the connection starts with b'GET / HT'"):
        Decoder().feed(b"GET / HTTP/1.1\r\n")


def test_a_bad_signature_is_refused_at_the_first_wrong_byte():
    dec = Decoder()
    assert dec.feed(b"\r\n\r\n") is None
    with pytest.raises(ProxyError, match="v2 header: bad signature"):
        dec.feed(b"\x01")


def test_a_bad_version_is_refused_at_byte_13():
    dec = Decoder()
    with pytest.raises(ProxyError, match="unsupported version 1"):
        dec.feed(V2[:12] + b"\x11")


@pytest.mark.parametrize("allow_v1,allow_v2,header,msg", [
    (False, True, V1, "v1 header: not accepted here"),
    (True, False, V2, "v2 header: not accepted here"),
])
def test_a_listener_can_accept_only_one_version(allow_v1, allow_v2, header, msg):
    with pytest.raises(ProxyError, match=msg):
        Decoder(allow_v1=allow_v1, allow_v2=allow_v2).feed(header)
    assert Decoder(allow_v1=allow_v2, allow_v2=allow_v1).feed(header) is not None


def test_decoder_settings_are_checked():
    with pytest.raises(ValueError):
        Decoder(max_v2_length=15)
    with pytest.raises(ValueError):
        Decoder(allow_v1=False, allow_v2=False)


@pytest.mark.parametrize("prefix,kind", [
    (b"", None), (b"\r\n\r\n\x00", None), (V2[:12], "v2"), (b"PROX", None), (b"PROXY ", "v1"),
    (b"PROXY\r", "none"), (b"GET", "none"), (b"\x16\x03\x01", "none"), (b"\r\n\r\n\x01", "none"),
])
def test_detect_tells_v1_v2_none_or_needs_more(prefix, kind):
    assert detect(prefix) == kind


def test_the_buffer_never_holds_more_than_a_header():
    dec = Decoder(max_v2_length=64)
    dec.feed(V2[:16])
    assert dec.buffered == 16
    with pytest.raises(ProxyError):
        Decoder(max_v2_length=64).feed(encode_v2(("192.0.2.1", 1), ("192.0.2.2", 2), tlvs=[TLV(4, bytes(60))]))

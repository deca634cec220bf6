"""PROXY protocol v2 (haproxy doc/proxy-protocol.txt section 2.2): vectors written byte by byte from the spec."""

import struct

import pytest

from wiregate.proxyproto import (
    PP2_CLIENT_CERT_CONN,
    PP2_CLIENT_CERT_SESS,
    PP2_CLIENT_SSL,
    PP2_SUBTYPE_SSL_CIPHER,
    PP2_SUBTYPE_SSL_CN,
    PP2_SUBTYPE_SSL_KEY_ALG,
    PP2_SUBTYPE_SSL_SIG_ALG,
    PP2_SUBTYPE_SSL_VERSION,
    PP2_TYPE_ALPN,
    PP2_TYPE_AUTHORITY,
    PP2_TYPE_CRC32C,
    PP2_TYPE_NETNS,
    PP2_TYPE_NOOP,
    PP2_TYPE_SSL,
    PP2_TYPE_UNIQUE_ID,
    TLV,
    Command,
    Decoder,
    Family,
    Protocol,
    ProxyError,
    SSLInfo,
    decode,
    encode,
    encode_ssl,
    encode_v2,
    parse_v2,
)

SIG = bytes.fromhex("0D0A0D0A000D0A515549540A")  # 2.2, written out from the spec's byte list
V4_BLOCK = bytes.fromhex("C0000201" "C6336402" "3039" "01BB")  # 192.0.2.1 -> 198.51.100.2, 12345 -> 443
V6_BLOCK = (bytes.fromhex("20010DB8000000000000000000000001") + bytes.fromhex("20010DB8000000000000000000000002")
            + bytes.fromhex("FFFF" "0050"))  # 2001:db8::1 -> 2001:db8::2, 65535 -> 80
UNIX_BLOCK = b"/run/src.sock".ljust(108, b"\0") + b"/run/dst.sock".ljust(108, b"\0")


def hdr(ver_cmd: int, fam: int, body: bytes) -> bytes:
    return SIG + bytes([ver_cmd, fam]) + struct.pack("!H", len(body)) + body


def tlv(t: int, v: bytes) -> bytes:
    return bytes([t]) + struct.pack("!H", len(v)) + v


# Captured from a real HAProxy 2.6.12 (Debian 12): `send-proxy-v2 proxy-v2-options crc32c,unique-id` with
# `unique-id-format %ci:%cp`, and a `check-send-proxy` health check with crc32c. Their CRCs were computed by HAProxy.
HAPROXY_CRC_UNIQUE_ID = (b"\r\n\r\n\x00\r\nQUIT\n!\x11\x00%\x7f\x00\x00\x01\x7f\x00\x00\x01\x9d\x18\xb4\x97"
                         b"\x03\x00\x04X\xb8\xc05\x05\x00\x0f127.0.0.1:40216")
HAPROXY_LOCAL_CRC = b"\r\n\r\n\x00\r\nQUIT\n \x00\x00\x07\x03\x00\x04\xa9\xb8~\x8f"


# --- every family, transport and command ------------------------------------------------------------------------

@pytest.mark.parametrize("fam,proto", [(0x11, Protocol.STREAM), (0x12, Protocol.DGRAM)])
def test_inet_stream_and_dgram_decode(fam, proto):
    h, rest = decode(hdr(0x21, fam, V4_BLOCK) + b"DATA")
    assert (h.version, h.command, h.family, h.protocol) == (2, Command.PROXY, Family.INET, proto)
    assert h.source == ("192.0.2.1", 12345) and h.destination == ("198.51.100.2", 443)
    assert h.length == 28 and rest == b"DATA"


@pytest.mark.parametrize("fam,proto", [(0x21, Protocol.STREAM), (0x22, Protocol.DGRAM)])
def test_inet6_stream_and_dgram_decode(fam, proto):
    h, rest = decode(hdr(0x21, fam, V6_BLOCK))
    assert (h.family, h.protocol) == (Family.INET6, proto)
    assert h.source == ("2001:db8::1", 65535) and h.destination == ("2001:db8::2", 80)
    assert h.length == 52 and rest == b""


@pytest.mark.parametrize("fam,proto", [(0x31, Protocol.STREAM), (0x32, Protocol.DGRAM)])
def test_unix_stream_and_dgram_decode(fam, proto):
    h, _ = decode(hdr(0x21, fam, UNIX_BLOCK))
    assert (h.family, h.protocol) == (Family.UNIX, proto)
    assert h.source == b"/run/src.sock" and h.destination == b"/run/dst.sock"
    assert h.length == 16 + 216


def test_unix_abstract_name_keeps_its_leading_nul():
    block = b"\0abstract".ljust(108, b"\0") + b"/x".ljust(108, b"\0")
    assert decode(hdr(0x21, 0x31, block))[0].source == b"\0abstract"


def test_unspec_with_proxy_command_carries_no_address():
    h, _ = decode(hdr(0x21, 0x00, b""))
    assert h.command is Command.PROXY and h.family is Family.UNSPEC and h.source is None and h.is_local


def test_local_command_uses_the_real_connection_and_skips_len_bytes():
    # 2.2: receivers must skip `len` bytes even for LOCAL, and ignore the address block
    h, rest = decode(hdr(0x20, 0x11, V4_BLOCK) + b"after")
    assert h.command is Command.LOCAL and h.is_local and h.source is None and h.destination is None
    assert h.length == 28 and rest == b"after"


def test_local_with_an_unknown_family_byte_is_accepted_and_its_block_skipped():
    h, rest = decode(hdr(0x20, 0x45, b"\x01\x02\x03") + b"x")  # 2.2: for LOCAL the family is ignored
    assert h.command is Command.LOCAL and h.family is Family.UNSPEC and h.tlvs == () and rest == b"x"


def test_bare_local_is_16_bytes():
    h, rest = decode(hdr(0x20, 0x00, b""))
    assert h.command is Command.LOCAL and h.length == 16 and rest == b""


# --- TLVs -----------------------------------------------------------------------------------------------------------

def test_every_registered_tlv_is_decoded():
    ssl_value = bytes([PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS]) + b"\0\0\0\0" + \
        tlv(PP2_SUBTYPE_SSL_VERSION, b"TLSv1.3") + tlv(PP2_SUBTYPE_SSL_CN, b"client.example") + \
        tlv(PP2_SUBTYPE_SSL_CIPHER, b"TLS_AES_256_GCM_SHA384") + tlv(PP2_SUBTYPE_SSL_SIG_ALG, b"RSA-SHA256") + \
        tlv(PP2_SUBTYPE_SSL_KEY_ALG, b"RSA2048")
    body = V4_BLOCK + tlv(PP2_TYPE_ALPN, b"h2") + tlv(PP2_TYPE_AUTHORITY, b"example.com") + \
        tlv(PP2_TYPE_NOOP, b"\0\0") + tlv(PP2_TYPE_UNIQUE_ID, b"id-1") + tlv(PP2_TYPE_SSL, ssl_value) + \
        tlv(PP2_TYPE_NETNS, b"blue") + tlv(0xE0, b"custom") + tlv(0xF8, b"")
    h, _ = decode(hdr(0x21, 0x11, body))
    assert h.alpn == b"h2"
    assert h.authority == "example.com"
    assert h.unique_id == b"id-1"
    assert h.netns == "blue"
    assert h.tlv(PP2_TYPE_NOOP) == b"\0\0"
    assert h.tlv(0xE0) == b"custom" and h.tlv(0xF8) == b""  # unknown types kept raw, in order
    assert [t.type for t in h.tlvs] == [1, 2, 4, 5, 0x20, 0x30, 0xE0, 0xF8]
    ssl = h.ssl
    assert ssl.ssl and ssl.cert_conn and ssl.cert_sess and ssl.verify == 0
    assert (ssl.version, ssl.cn, ssl.cipher, ssl.sig_alg, ssl.key_alg) == \
        ("TLSv1.3", "client.example", "TLS_AES_256_GCM_SHA384", "RSA-SHA256", "RSA2048")
    assert encode(h) == hdr(0x21, 0x11, body)


def test_ssl_tlv_without_sub_tlvs_and_a_failed_verify():
    h, _ = decode(hdr(0x21, 0x11, V4_BLOCK + tlv(PP2_TYPE_SSL, b"\x00\x00\x00\x00\x0a")))
    assert h.ssl == SSLInfo(0, 10, ()) and not h.ssl.ssl and h.ssl.version is None


def test_crc32c_generated_by_haproxy_verifies():
    h, _ = decode(HAPROXY_CRC_UNIQUE_ID)
    assert h.tlvs[0].type == PP2_TYPE_CRC32C and h.unique_id == b"127.0.0.1:40216"
    assert decode(HAPROXY_LOCAL_CRC)[0].command is Command.LOCAL


def test_our_crc32c_equals_haproxys():
    assert encode_v2(("127.0.0.1", 40216), ("127.0.0.1", 46231), tlvs=[TLV(PP2_TYPE_UNIQUE_ID, b"127.0.0.1:40216")],
                     crc32c=True) == HAPROXY_CRC_UNIQUE_ID
    assert encode_v2(command=Command.LOCAL, crc32c=True) == HAPROXY_LOCAL_CRC


def test_crc32c_is_the_castagnoli_check_value():
    # RFC 3720 / iSCSI check value of CRC32C("123456789"); the header CRC must use this polynomial
    from crc32c import crc32c
    assert crc32c(b"123456789") == 0xE3069283


def test_crc32c_anywhere_in_the_tlvs_is_verified():
    body = V4_BLOCK + tlv(PP2_TYPE_NOOP, b"") + tlv(PP2_TYPE_CRC32C, b"\0\0\0\0")
    raw = bytearray(hdr(0x21, 0x11, body))
    from crc32c import crc32c
    raw[-4:] = struct.pack("!I", crc32c(bytes(raw)))
    assert decode(bytes(raw))[0].tlv(PP2_TYPE_CRC32C) == bytes(raw[-4:])


# --- encoder --------------------------------------------------------------------------------------------------------

def test_encoder_writes_the_hand_made_vectors():
    assert encode_v2(("192.0.2.1", 12345), ("198.51.100.2", 443)) == hdr(0x21, 0x11, V4_BLOCK)
    assert encode_v2(("192.0.2.1", 12345), ("198.51.100.2", 443), protocol=Protocol.DGRAM) == \
        hdr(0x21, 0x12, V4_BLOCK)
    assert encode_v2(("2001:db8::1", 65535), ("2001:db8::2", 80)) == hdr(0x21, 0x21, V6_BLOCK)
    assert encode_v2(b"/run/src.sock", "/run/dst.sock") == hdr(0x21, 0x31, UNIX_BLOCK)
    assert encode_v2(command=Command.LOCAL) == hdr(0x20, 0x00, b"")
    assert encode_v2(None, None) == hdr(0x21, 0x00, b"")


def test_encoder_takes_ipv6_socket_addresses_with_flowinfo_and_scope():
    assert encode_v2(("2001:db8::1", 65535, 0, 0), ("2001:db8::2", 80, 0, 0)) == hdr(0x21, 0x21, V6_BLOCK)


def test_encoder_maps_mixed_families_to_inet6():
    out = encode_v2(("2001:db8::7", 1), ("127.0.0.1", 2))
    assert out[13] == 0x21
    assert out[32:48] == bytes(10) + b"\xff\xff\x7f\x00\x00\x01"


def test_encoder_puts_crc32c_first_then_tlvs_in_order():
    out = encode_v2(("192.0.2.1", 1), ("192.0.2.2", 2), crc32c=True,
                    tlvs=[TLV(PP2_TYPE_AUTHORITY, b"a"), TLV(PP2_TYPE_ALPN, b"h2")])
    assert [t.type for t in decode(out)[0].tlvs] == [PP2_TYPE_CRC32C, PP2_TYPE_AUTHORITY, PP2_TYPE_ALPN]


def test_encode_ssl_round_trips():
    info = SSLInfo(PP2_CLIENT_SSL, 0, (TLV(PP2_SUBTYPE_SSL_VERSION, b"TLSv1.2"),))
    h, _ = decode(encode_v2(("192.0.2.1", 1), ("192.0.2.2", 2), tlvs=[TLV(PP2_TYPE_SSL, encode_ssl(info))]))
    assert h.ssl == info


@pytest.mark.parametrize("kwargs,msg", [
    (dict(source=("192.0.2.1", 1), destination=("192.0.2.2", 2), protocol=Protocol.UNSPEC), "UNSPEC has none"),
    (dict(source=b"/a", destination=("192.0.2.2", 2)), "cannot mix a UNIX path"),
    (dict(source=b"/" * 109, destination=b"/b"), "longer than 108"),
    (dict(source=("192.0.2.1", 1), destination=("192.0.2.2", 70000)), "out of range"),
    (dict(source=("192.0.2.1", 1), destination=("192.0.2.2", 2), tlvs=[TLV(256, b"")]), "not one byte"),
    (dict(source=("192.0.2.1", 1), destination=("192.0.2.2", 2), tlvs=[TLV(1, b"x" * 65536)]), "over 65535"),
    (dict(source=("192.0.2.1", 1), destination=("192.0.2.2", 2), tlvs=[TLV(1, b"x" * 65000)] * 2), "over 65535"),
    (dict(source=("192.0.2.1", 1), destination=("192.0.2.2", 2), tlvs=[TLV(1, "h2")]), "must be bytes"),
    (dict(command=7), "unknown command"),
    (dict(tlvs=[TLV(PP2_TYPE_CRC32C, b"\0\0\0\0")]), "pass crc32c=True"),
    (dict(tlvs=[TLV(PP2_TYPE_UNIQUE_ID, b"u" * 129)]), "UNIQUE_ID TLV is 129 bytes, at most 128"),
    (dict(tlvs=[TLV(PP2_TYPE_AUTHORITY, b"a" * 256)]), "AUTHORITY TLV is 256 bytes, at most 255"),
    (dict(tlvs=[TLV(PP2_TYPE_SSL, b"\x01")]), "encoder: v2 header: SSL TLV too short"),
])
def test_encoder_refuses_headers_it_cannot_write(kwargs, msg):
    with pytest.raises(ProxyError, match=msg):
        encode_v2(**kwargs)


# --- malformed headers ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw,msg", [
    (SIG[:11] + b"X" + b"\x21\x11\x00\x0c" + V4_BLOCK, "v2 header: bad signature"),
    (hdr(0x11, 0x11, V4_BLOCK), "unsupported version 1"),
    (hdr(0x31, 0x11, V4_BLOCK), "unsupported version 3"),
    (hdr(0x22, 0x11, V4_BLOCK), "unknown command 0x2"),
    (hdr(0x2F, 0x11, V4_BLOCK), "unknown command 0xf"),
    (hdr(0x21, 0x13, V4_BLOCK), "invalid address family/protocol byte 0x13"),
    (hdr(0x21, 0x41, V4_BLOCK), "invalid address family/protocol byte 0x41"),
    (hdr(0x21, 0x10, V4_BLOCK), "invalid address family/protocol byte 0x10"),
    (hdr(0x21, 0x01, V4_BLOCK), "invalid address family/protocol byte 0x01"),
    (hdr(0x21, 0x11, V4_BLOCK[:11]), "length 11 is shorter than the INET address block \\(12\\)"),
    (hdr(0x21, 0x21, V6_BLOCK[:35]), "length 35 is shorter than the INET6 address block \\(36\\)"),
    (hdr(0x21, 0x31, UNIX_BLOCK[:215]), "length 215 is shorter than the UNIX address block \\(216\\)"),
    (hdr(0x21, 0x11, V4_BLOCK + b"\x01"), "truncated TLV at offset 0"),
    (hdr(0x21, 0x11, V4_BLOCK + b"\x01\x00"), "truncated TLV"),
    (hdr(0x21, 0x11, V4_BLOCK + b"\x01\x00\x05ab"), "TLV type 0x01 length 5 runs past the header end"),
    (hdr(0x21, 0x11, V4_BLOCK + tlv(PP2_TYPE_CRC32C, b"\0\0\0")), "CRC32C TLV has length 3, expected 4"),
    (hdr(0x21, 0x11, V4_BLOCK + tlv(PP2_TYPE_CRC32C, b"\0\0\0\0")), "v2 header: CRC32C mismatch"),
    (HAPROXY_CRC_UNIQUE_ID[:-1] + b"7", "v2 header: CRC32C mismatch"),
    (hdr(0x21, 0x11, V4_BLOCK + tlv(PP2_TYPE_UNIQUE_ID, b"u" * 129)), "UNIQUE_ID TLV is 129 bytes, at most 128"),
    (hdr(0x21, 0x11, V4_BLOCK + tlv(PP2_TYPE_AUTHORITY, b"a" * 256)), "AUTHORITY TLV is 256 bytes, at most 255"),
    (hdr(0x21, 0x11, V4_BLOCK + tlv(PP2_TYPE_SSL, b"\x01\0\0\0")), "SSL TLV too short"),
    (hdr(0x21, 0x11, V4_BLOCK + tlv(PP2_TYPE_SSL, b"\x01\0\0\0\0\x21\x00\x09TLS")), "SSL TLV: TLV type 0x21"),
])
def test_malformed_v2_header_is_refused_with_a_precise_message(raw, msg):
    with pytest.raises(ProxyError, match=msg):
        decode(raw)


def test_limits_at_exactly_the_cap_are_accepted():
    assert decode(hdr(0x21, 0x11, V4_BLOCK + tlv(PP2_TYPE_UNIQUE_ID, b"u" * 128)))[0].unique_id == b"u" * 128
    assert decode(hdr(0x21, 0x11, V4_BLOCK + tlv(PP2_TYPE_AUTHORITY, b"a" * 255)))[0].authority == "a" * 255


def test_truncated_v2_header_is_a_truncation_error_in_one_shot_decode():
    with pytest.raises(ProxyError, match=r"v2 header: truncated \(27 of 28 bytes\)"):
        decode(hdr(0x21, 0x11, V4_BLOCK)[:-1])
    with pytest.raises(ProxyError, match="not enough to tell"):
        decode(SIG[:5])


def test_oversize_header_is_refused_as_soon_as_its_length_is_known():
    dec = Decoder(max_v2_length=100)
    with pytest.raises(ProxyError, match="v2 header: length 101 exceeds the limit of 100 bytes"):
        dec.feed(SIG + b"\x21\x11\x00\x55")  # 16 + 85 = 101: refused before any of the 85 bytes arrive
    assert decode(hdr(0x21, 0x11, V4_BLOCK + tlv(PP2_TYPE_NOOP, b"\0" * 69)), max_v2_length=100)[0].length == 100


def test_default_cap_refuses_the_largest_possible_header():
    with pytest.raises(ProxyError, match="exceeds the limit of 4096"):
        Decoder().feed(SIG + b"\x21\x11\xff\xff")


def test_parse_v2_refuses_extra_or_missing_bytes():
    with pytest.raises(ProxyError, match="too long"):
        parse_v2(hdr(0x21, 0x11, V4_BLOCK) + b"x")
    with pytest.raises(ProxyError, match="truncated"):
        parse_v2(hdr(0x21, 0x11, V4_BLOCK)[:-1])


@pytest.mark.parametrize("src,dst", [(("203.0.113.7", 51234), ("127.0.0.1", 443)),
                                     (("0.0.0.0", 0), ("255.255.255.255", 65535)),
                                     (("192.0.2.1", 1), ("::ffff:192.0.2.2", 80)), (("fd00::1", 9), ("192.0.2.2", 80))])
def test_the_tcp4_fast_path_writes_the_same_bytes_as_the_general_path(src, dst):
    # an iterator for tlvs is not the () the fast path looks for: it takes the general path, with no TLV
    fast, general = encode_v2(src, dst), encode_v2(src, dst, tlvs=iter(()))
    assert fast == general
    header = Decoder().feed(fast + b"x")
    assert header is not None and header.source[1] == src[1] and header.destination[1] == dst[1]


@pytest.mark.parametrize("src,dst", [(("1.2.3", 1), ("192.0.2.2", 80)), (("192.0.2.1", 70000), ("192.0.2.2", 80)),
                                     (("192.0.2.1", True), ("192.0.2.2", 80)), (("192.0.2.1", -1), ("192.0.2.2", 80))])
def test_what_the_fast_path_cannot_encode_is_still_refused(src, dst):
    with pytest.raises(ProxyError):
        encode_v2(src, dst)

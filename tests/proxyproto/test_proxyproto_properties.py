"""Property tests (hypothesis): round trips for every field, and arbitrary input in arbitrary slices."""

import ipaddress

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wiregate.proxyproto import (
    PP2_TYPE_ALPN,
    PP2_TYPE_AUTHORITY,
    PP2_TYPE_CRC32C,
    PP2_TYPE_NETNS,
    PP2_TYPE_NOOP,
    PP2_TYPE_SSL,
    PP2_TYPE_UNIQUE_ID,
    TLV,
    V2_SIGNATURE,
    Command,
    Decoder,
    Family,
    Protocol,
    ProxyError,
    SSLInfo,
    decode,
    encode,
    encode_ssl,
    encode_v1,
    encode_v2,
)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ports = st.integers(0, 65535)
v4 = st.ip_addresses(v=4).map(str)
v6 = st.ip_addresses(v=6).map(str)
ip = st.one_of(v4, v6)
paths = st.binary(min_size=1, max_size=108).map(lambda b: b.rstrip(b"\0")).filter(bool)
sub_tlvs = st.lists(st.builds(TLV, st.integers(0x21, 0x25), st.binary(max_size=40)), max_size=5)
ssl_values = st.builds(SSLInfo, st.integers(0, 7), st.integers(0, 2**32 - 1), sub_tlvs.map(tuple)).map(encode_ssl)
tlvs = st.lists(st.one_of(
    st.builds(TLV, st.just(PP2_TYPE_ALPN), st.binary(max_size=40)),
    st.builds(TLV, st.just(PP2_TYPE_AUTHORITY), st.binary(max_size=255)),
    st.builds(TLV, st.just(PP2_TYPE_NOOP), st.binary(max_size=20)),
    st.builds(TLV, st.just(PP2_TYPE_UNIQUE_ID), st.binary(max_size=128)),
    st.builds(TLV, st.just(PP2_TYPE_SSL), ssl_values),
    st.builds(TLV, st.just(PP2_TYPE_NETNS), st.text(max_size=30).map(str.encode)),
    st.builds(TLV, st.integers(0x06, 0xFF).filter(lambda t: t not in (PP2_TYPE_SSL,)), st.binary(max_size=30)),
), max_size=6)


def same_ip(a: str, b: str) -> bool:
    return ipaddress.ip_address(a) == ipaddress.ip_address(b)


def cuts(data: bytes, points: list[int]) -> list[bytes]:
    """Split `data` at the given points (any order, duplicates allowed) into consecutive slices."""
    edges = sorted({0, len(data), *(p % (len(data) + 1) for p in points)})
    return [data[a:b] for a, b in zip(edges, edges[1:], strict=False)]


def feed_all(dec: Decoder, pieces: list[bytes]):
    """Feed pieces until a header comes; return (header, everything after it: .rest + the unfed pieces)."""
    for i, piece in enumerate(pieces):
        h = dec.feed(piece)
        if h is not None:
            return h, dec.rest + b"".join(pieces[i + 1:])
    return None, b""


@SETTINGS
@given(st.one_of(st.tuples(v4, v4), st.tuples(v6, v6), st.tuples(v4, v6), st.tuples(v6, v4)), ports, ports)
def test_v1_round_trip_keeps_addresses_and_ports(hosts, sport, dport):
    raw = encode_v1((hosts[0], sport), (hosts[1], dport))
    h, rest = decode(raw)
    assert rest == b"" and h.length == len(raw) <= 104
    assert h.family is (Family.INET if ":" not in hosts[0] + hosts[1] else Family.INET6)
    # a v4 address in a TCP6 line comes back v4-mapped; compare the 128-bit values
    as6 = (lambda a: ipaddress.IPv6Address("::ffff:" + a) if ":" not in a else ipaddress.ip_address(a)) \
        if h.family is Family.INET6 else ipaddress.ip_address
    assert as6(hosts[0]) == ipaddress.ip_address(h.source[0]) and h.source[1] == sport
    assert as6(hosts[1]) == ipaddress.ip_address(h.destination[0]) and h.destination[1] == dport
    assert encode(h) == raw


@SETTINGS
@given(st.data(), st.sampled_from([Protocol.STREAM, Protocol.DGRAM]), tlvs, st.booleans())
def test_v2_round_trip_keeps_every_field(data, protocol, tlv_list, crc):
    family = data.draw(st.sampled_from([Family.INET, Family.INET6, Family.UNIX, Family.UNSPEC]))
    command = data.draw(st.sampled_from([Command.PROXY, Command.LOCAL]))
    if family is Family.INET:
        src, dst = (data.draw(v4), data.draw(ports)), (data.draw(v4), data.draw(ports))
    elif family is Family.INET6:
        src, dst = (data.draw(v6), data.draw(ports)), (data.draw(v6), data.draw(ports))
    elif family is Family.UNIX:
        src, dst = data.draw(paths), data.draw(paths)
    else:
        src = dst = None
    raw = encode_v2(src, dst, command=command, protocol=protocol, tlvs=tlv_list, crc32c=crc)
    h, rest = decode(raw, max_v2_length=65535 + 16)
    assert rest == b"" and h.length == len(raw)
    assert h.command is command
    if command is Command.LOCAL or family is Family.UNSPEC:
        assert h.family is Family.UNSPEC and h.source is None and h.destination is None
    else:
        assert (h.family, h.protocol) == (family, protocol)
        if family is Family.UNIX:
            assert (h.source, h.destination) == (src, dst)
        else:
            assert same_ip(h.source[0], src[0]) and h.source[1] == src[1]
            assert same_ip(h.destination[0], dst[0]) and h.destination[1] == dst[1]
    got = [t for t in h.tlvs if t.type != PP2_TYPE_CRC32C]
    assert got == list(tlv_list)
    assert [t.type for t in h.tlvs[:1]] == [PP2_TYPE_CRC32C] if crc else len(got) == len(h.tlvs)
    assert encode(h) == raw


@SETTINGS
@given(st.binary(max_size=300), st.lists(st.integers(0, 400), max_size=12), st.integers(16, 400))
def test_arbitrary_bytes_in_arbitrary_slices_only_raise_proxy_error(data, points, cap):
    dec = Decoder(max_v2_length=cap)
    try:
        h, after = feed_all(dec, cuts(data, points))
    except ProxyError:
        return
    if h is not None:
        # never past the declared length: what follows the header is handed back byte for byte
        assert after == data[h.length:]
        assert decode(data[:h.length], max_v2_length=cap)[0] == h


@SETTINGS
@given(st.one_of(st.just(b"PROXY "), st.just(V2_SIGNATURE + b"\x21"), st.just(V2_SIGNATURE + b"\x20")),
       st.binary(max_size=200), st.lists(st.integers(0, 300), max_size=8))
def test_plausible_prefixes_with_random_tails_never_raise_anything_else(prefix, tail, points):
    data = prefix + tail
    try:
        h, after = feed_all(Decoder(), cuts(data, points))
    except ProxyError:
        return
    if h is not None:
        assert after == data[h.length:]


@SETTINGS
@given(st.sampled_from(["v1", "v2"]), st.tuples(v4, v4), tlvs, st.binary(max_size=200),
       st.lists(st.integers(0, 600), max_size=10))
def test_valid_header_plus_payload_in_any_slices_gives_the_header_and_exactly_the_payload(
        version, hosts, tlv_list, payload, points):
    src, dst = (hosts[0], 1000), (hosts[1], 2000)
    raw = encode_v1(src, dst) if version == "v1" else encode_v2(src, dst, tlvs=tlv_list, crc32c=True)
    dec = Decoder(max_v2_length=65535 + 16)
    h, after = feed_all(dec, cuts(raw + payload, points))
    assert h == decode(raw, max_v2_length=65535 + 16)[0]
    assert after == payload


@SETTINGS
@given(st.tuples(v4, v4), tlvs, st.data())
def test_any_single_corrupted_byte_in_a_crc32c_header_is_detected(hosts, tlv_list, data):
    raw = encode_v2((hosts[0], 1), (hosts[1], 2), tlvs=tlv_list, crc32c=True)
    # every byte but the CRC TLV's own type byte (28): change that and it is no longer a checksum (the spec's
    # design, not ours), so nothing is left to verify
    i = data.draw(st.integers(0, len(raw) - 1).filter(lambda i: i != 28))
    flip = data.draw(st.integers(1, 255))
    bad = raw[:i] + bytes([raw[i] ^ flip]) + raw[i + 1:]
    try:
        h, _ = decode(bad, max_v2_length=65535 + 16)
    except ProxyError:
        return
    raise AssertionError(f"corruption at byte {i} went unnoticed: {h}")


@SETTINGS
@given(st.one_of(
    st.just(b"PROXY UNKNOWN\r\n"),
    st.builds(encode_v1, st.tuples(ip, ports), st.tuples(ip, ports)),
    st.builds(lambda s, d, t, c: encode_v2(s, d, tlvs=t, crc32c=c), st.tuples(ip, ports), st.tuples(ip, ports),
              tlvs, st.booleans()),
    st.just(encode_v2(command=Command.LOCAL)),
), st.binary(min_size=1, max_size=50), st.booleans())
def test_reading_exactly_want_bytes_never_reads_past_the_header(header, payload, v1_allowed):
    if header.startswith(b"PROXY") and not v1_allowed:
        v1_allowed = True
    dec = Decoder(allow_v1=v1_allowed, max_v2_length=65535 + 16)
    stream, pos, got = header + payload, 0, None
    while got is None:
        n = dec.want()
        assert n >= 1
        got = dec.feed(stream[pos:pos + n])
        pos += n
    assert pos == len(header) and dec.rest == b"" and dec.want() == 0

"""The C fast route's two checks against the Python code they stand in for (wiregate.datapath._pump.Fast).

The pump routes a trusted client without Python only when its own checks say so, so each must be a subset of
Python's answer with the same result: a header it takes is one the Python decoder accepts with the same client,
the same length and (send_proxy v2) the same bytes our encoder makes for it; a prefix it waits on is one the
decoder waits on too; a peer it trusts is one the listener's Trust trusts (and, for speed, the other way too).
"""

from __future__ import annotations

import ipaddress
import os
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wiregate.datapath import pump as cpump
from wiregate.ingress.policy import Trust
from wiregate.proxyproto import Decoder, ProxyError, encode_v2

pytestmark = pytest.mark.skipif(cpump.Fast is None and os.environ.get("CI") != "true",
                                reason="the C pump is not built here (optional extension)")
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Owner:
    pass


OWNER = Owner()  # (a route holds its owner weakly; these checks call it never)


def fast(nets: list[str] = (), max_header: int = 256):
    f = cpump.Fast(OWNER)
    parsed = [ipaddress.ip_network(n, strict=False) for n in nets]
    f.configure([(socket.AF_INET if n.version == 4 else socket.AF_INET6, n.network_address.packed, n.prefixlen)
                 for n in parsed], socket.AF_INET, ("127.0.0.1", 9), True, 5.0, 5.0, max_header, 100, False, False)
    return f


ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
port = st.integers(0, 65535)
pair4 = st.tuples(st.tuples(ipv4, port), st.tuples(ipv4, port))
pair6 = st.tuples(st.tuples(ipv6, port), st.tuples(ipv6, port))


def python_decides(data: bytes, max_header: int):
    """('header', header, rest) | ('more',) | ('error',) from the Python decoder."""
    dec = Decoder(max_v2_length=max_header)
    try:
        h = dec.feed(data)
    except ProxyError:
        return ("error",)
    return ("more",) if h is None else ("header", h, dec.rest)


def check(data: bytes, max_header: int = 256) -> int:
    f = fast(max_header=max_header)
    got = f._parse(data)
    py = python_decides(data, max_header)
    if got > 0:
        assert py[0] == "header", (data, py)
        header, rest = py[1], py[2]
        assert not header.is_local and header.length == got and rest == data[got:]
        assert encode_v2(header.source, header.destination) == data[:got]  # send_proxy v2: the same bytes
    elif got == 0:
        assert py == ("more",), (data, py)
    return got


@SETTINGS
@given(st.one_of(pair4, pair6), st.binary(max_size=40))
def test_a_header_the_pump_takes_is_one_python_accepts_the_same_way(pair, rest):
    src, dst = pair
    data = encode_v2(src, dst) + rest
    got = check(data)
    mapped = ":" in src[0] and (ipaddress.ip_address(src[0]).ipv4_mapped or ipaddress.ip_address(dst[0]).ipv4_mapped)
    assert got == (-1 if mapped else len(data) - len(rest))  # taken, unless IPv4-mapped (Python's to decide)
    for cut in range(len(data) - len(rest)):  # every prefix of it is waited on (by both)
        assert check(data[:cut]) == 0


@SETTINGS
@given(st.one_of(pair4, pair6), st.binary(max_size=8), st.lists(st.tuples(st.integers(0, 60), st.integers(0, 255)),
                                                                  max_size=4))
def test_mutated_headers_are_never_taken_unless_python_takes_them_alike(pair, rest, flips):
    data = bytearray(encode_v2(*pair) + rest)
    for pos, value in flips:
        if pos < len(data):
            data[pos] = value
    check(bytes(data))
    check(bytes(data), max_header=40)  # an IPv6 header (52 bytes) is over this limit: Python refuses it


@SETTINGS
@given(st.binary(max_size=80))
def test_any_bytes(data):
    check(data)
    check(bytes.fromhex("0d0a0d0a000d0a515549540a") + data)


def test_tlvs_local_v1_and_other_families_are_pythons():
    src, dst = ("192.0.2.1", 4000), ("198.51.100.2", 443)
    from wiregate.proxyproto import TLV, Command, encode_v1

    assert check(encode_v2(src, dst, tlvs=[TLV(0x04, b"x")])) == -1
    assert check(encode_v2(command=Command.LOCAL)) == -1
    assert check(encode_v1(src, dst)) == -1
    assert check(encode_v2(src, dst, crc32c=True)) == -1


nets4 = st.tuples(ipv4, st.integers(0, 32)).map(lambda t: f"{t[0]}/{t[1]}")
nets6 = st.tuples(ipv6, st.integers(0, 128)).map(lambda t: f"{t[0]}/{t[1]}")


@SETTINGS
@given(st.lists(st.one_of(nets4, nets6), max_size=5), st.one_of(ipv4, ipv6))
def test_the_pump_trusts_exactly_the_peers_the_listener_trusts(nets, peer):
    trust = Trust(tuple(nets))
    f = fast(nets)
    assert f._trusts(peer) == (peer in trust)
    near = [str(n.network_address) for n in trust.nets] + [str(n.broadcast_address) for n in trust.nets]
    for host in near:  # the edges of each network, and just outside them
        ip = ipaddress.ip_address(host)
        for h in {ip, *(ip + d for d in (-1, 1) if 0 <= int(ip) + d < 2 ** ip.max_prefixlen)}:
            assert f._trusts(str(h)) == (str(h) in trust), (nets, str(h))
    if ":" not in peer:  # a dual-stack listener sees an IPv4 client as IPv4-mapped
        assert f._trusts(f"::ffff:{peer}") == (peer in trust)

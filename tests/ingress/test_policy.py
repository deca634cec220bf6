"""The per-connection decision without sockets: trust by source, PROXY header, sniffing, routing, timeouts."""

from __future__ import annotations

import pytest

from wiregate.errors import ConfigError
from wiregate.ingress import IngressConfig, Listener, Route
from wiregate.ingress.policy import Accepted, HeadPhase, Refused, Rules
from wiregate.proxyproto import encode_v1, encode_v2

from wiregate.testing.tls_hello import client_hello, ext, records, sni_ext

GW = ("10.8.0.1", 40000)  # the trusted gateway
LAN = ("192.168.1.20", 50000)  # an untrusted local client
LOCAL = ("10.8.0.2", 443)
CLIENT = ("203.0.113.7", 51234)


def listener(**kw) -> Listener:
    routes = (
        Route("app", ("127.0.0.1", 9001), sni=("app.example.org",), send_proxy="v2"),
        Route("wild", ("127.0.0.1", 9002), sni=("*.example.net",)),
        Route("web", ("127.0.0.1", 9003), host=("web.example.org",), http_headers=True),
        Route("api", ("127.0.0.1", 9004), host=("web.example.org",), path_prefix="/api"),
        Route("fallback", ("127.0.0.1", 9005)),
    )
    base = dict(name="l", listen=("127.0.0.1", 0), trusted=("10.8.0.0/24",), routes=routes)
    base.update(kw)
    return Listener(**base)


def phase(peer=GW, now=0.0, **kw) -> HeadPhase:
    return HeadPhase(Rules.from_listener(listener(**kw)), peer, LOCAL, now)


def feed_all(p: HeadPhase, data: bytes, step: int = 1):
    ev = None
    for i in range(0, len(data), step):
        ev = p.receive_data(data[i : i + step], 1.0)
        if ev is not None:
            return ev
    return ev


def tls(name: bytes) -> bytes:
    return records(client_hello(sni_ext(name)), size=50)


def test_trusted_peer_with_v2_header_routes_by_sni_and_reports_the_client():
    ev = feed_all(phase(), encode_v2(CLIENT, ("198.51.100.2", 443)) + tls(b"app.example.org"), step=7)
    assert isinstance(ev, Accepted)
    assert ev.route.name == "app" and ev.client == CLIENT and ev.destination == ("198.51.100.2", 443)
    assert ev.kind == "tls" and ev.name == "app.example.org" and ev.data == tls(b"app.example.org")
    assert not ev.client_trusted


def test_trusted_peer_with_v1_header_routes_by_host_and_path():
    req = b"GET /api/v1 HTTP/1.1\r\nHost: web.example.org\r\n\r\n"
    ev = feed_all(phase(), encode_v1(CLIENT, LOCAL) + req, step=5)
    assert isinstance(ev, Accepted) and ev.route.name == "api" and ev.client == CLIENT and ev.data == req
    ev = feed_all(phase(), encode_v1(CLIENT, LOCAL) + req.replace(b"/api/v1", b"/apix"), step=500)
    assert isinstance(ev, Accepted) and ev.route.name == "web"


def test_untrusted_peer_with_header_is_refused():
    ev = feed_all(phase(peer=LAN), encode_v2(CLIENT, LOCAL) + tls(b"app.example.org"))
    assert isinstance(ev, Refused) and ev.reason == "untrusted_header" and "192.168.1.20" in ev.detail
    ev = feed_all(phase(peer=LAN), b"PROXY TCP4 203.0.113.7 10.8.0.2 1 443\r\n")
    assert isinstance(ev, Refused) and ev.reason == "untrusted_header"


def test_trusted_peer_without_header_is_refused():
    ev = feed_all(phase(), tls(b"app.example.org"), step=100)
    assert isinstance(ev, Refused) and ev.reason == "missing_header" and "10.8.0.1" in ev.detail


def test_untrusted_peer_without_header_is_routed_with_its_own_address():
    ev = feed_all(phase(peer=LAN), tls(b"x.example.net"), step=3)
    assert isinstance(ev, Accepted) and ev.route.name == "wild" and ev.client == LAN and ev.header is None


def test_proxy_optional_mode_accepts_trusted_peers_with_or_without_header():
    ev = feed_all(phase(proxy_optional=True), tls(b"app.example.org"))
    assert isinstance(ev, Accepted) and ev.client == GW
    ev = feed_all(phase(proxy_optional=True), encode_v2(CLIENT, LOCAL) + tls(b"app.example.org"))
    assert isinstance(ev, Accepted) and ev.client == CLIENT
    ev = feed_all(phase(peer=LAN, proxy_optional=True), encode_v2(CLIENT, LOCAL))
    assert isinstance(ev, Refused) and ev.reason == "untrusted_header"


def test_malformed_header_from_trusted_peer_is_refused_with_the_decoder_reason():
    ev = feed_all(phase(), b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n")
    assert isinstance(ev, Refused) and ev.reason == "bad_header" and "port" in ev.detail


def test_oversize_v2_header_is_refused_from_its_length():
    big = encode_v2(CLIENT, LOCAL)[:14] + (5000).to_bytes(2, "big")
    ev = feed_all(phase(), big, step=16)
    assert isinstance(ev, Refused) and ev.reason == "bad_header" and "exceeds the limit of 4096" in ev.detail


def test_header_timeout_then_sniff_timeout_with_a_fake_clock():
    p = phase(now=100.0, header_timeout=3.0, sniff_timeout=2.0)
    assert p.receive_data(b"PROXY TCP4 ", 101.0) is None
    assert p.handle_timer(102.9) is None
    ev = p.handle_timer(103.0)
    assert isinstance(ev, Refused) and ev.reason == "header_timeout" and "11 bytes" in ev.detail
    p = phase(now=100.0, header_timeout=3.0, sniff_timeout=2.0)
    assert p.receive_data(encode_v1(CLIENT, LOCAL) + b"\x16\x03\x01", 101.0) is None
    assert p.deadline == 103.0 and p.waiting_for == "sniff"
    ev = p.handle_timer(103.0)
    assert isinstance(ev, Refused) and ev.reason == "sniff_timeout"


def test_missing_sni_and_ech_fall_to_the_default_route():
    ev = feed_all(phase(peer=LAN, default_route="fallback"), records(client_hello()))
    assert isinstance(ev, Accepted) and ev.route.name == "fallback"
    ev = feed_all(phase(peer=LAN, default_route="fallback"), tls(b"unknown.example.com"))
    assert isinstance(ev, Accepted) and ev.route.name == "fallback"
    ech = records(client_hello(sni_ext(b"app.example.org"), ext(0xFE0D, b"\x00" * 8)))
    ev = feed_all(phase(peer=LAN, default_route="fallback"), ech)
    assert isinstance(ev, Accepted) and ev.route.name == "fallback" and ev.hello.ech


def test_unknown_name_without_default_is_refused_and_http_gets_404():
    ev = feed_all(phase(peer=LAN), tls(b"unknown.example.com"))
    assert isinstance(ev, Refused) and ev.reason == "no_route" and ev.reply == b""
    ev = feed_all(phase(peer=LAN), b"GET / HTTP/1.1\r\nHost: nope.example\r\n\r\n")
    assert isinstance(ev, Refused) and ev.reason == "no_route" and ev.reply.startswith(b"HTTP/1.1 404 ")


def test_garbage_goes_to_the_default_or_is_refused():
    ev = feed_all(phase(peer=LAN), b"\x00\x01garbage")
    assert isinstance(ev, Refused) and ev.reason == "no_route"
    ev = feed_all(phase(peer=LAN, default_route="fallback"), b"SSH-2.0-x\r\n")
    assert isinstance(ev, Accepted) and ev.kind == "other" and ev.route.name == "fallback"


def test_malformed_http_head_gets_400():
    ev = feed_all(phase(peer=LAN), b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", step=100)
    assert isinstance(ev, Refused) and ev.reason == "bad_request" and ev.reply.startswith(b"HTTP/1.1 400 ")


def test_port_listener_does_not_sniff_and_ipv4_mapped_peer_is_trusted():
    lst = Listener("p", ("127.0.0.1", 0), trusted=("10.8.0.1",), routes=(Route("ssh", ("127.0.0.1", 22)),),
                   default_route="ssh")
    p = HeadPhase(Rules.from_listener(lst), ("::ffff:10.8.0.1", 1), LOCAL, 0.0)
    ev = p.receive_data(encode_v2(CLIENT, LOCAL) + b"SSH-2.0-client", 0.0)
    assert isinstance(ev, Accepted) and ev.kind == "unsniffed" and ev.data == b"SSH-2.0-client"
    assert ev.client == CLIENT


def test_eof_before_a_decision_is_a_refusal():
    p = phase()
    assert p.receive_data(b"PRO", 0.0) is None
    assert p.receive_eof(0.0).reason == "closed_early"


@pytest.mark.parametrize(("kw", "msg"), [
    (dict(trusted=("10.0.0.300",)), r'trusted\[0\]: "10.0.0.300"'),
    (dict(default_route="nope"), 'default_route: "nope"'),
    (dict(header_timeout=0), "header_timeout"),
    (dict(proxy_optional=True, trusted=()), "proxy_optional"),
    (dict(protocol="sctp"), "protocol"),
])
def test_bad_listener_config_names_field_and_value(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        listener(**kw)


def test_bad_route_and_duplicate_names_are_refused():
    with pytest.raises(ConfigError, match='send_proxy: "v3"'):
        Route("r", ("127.0.0.1", 1), send_proxy="v3")
    with pytest.raises(ConfigError, match="sni"):
        Route("r", ("127.0.0.1", 1), sni=("bad name",))
    with pytest.raises(ConfigError, match=r'target: \["127.0.0.1", 70000\]: port out of range'):
        Route("r", ("127.0.0.1", 70000))
    with pytest.raises(ConfigError, match="used twice"):
        IngressConfig((listener(), listener()))

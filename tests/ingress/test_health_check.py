"""A trusted proxy's health check (PROXY LOCAL header, then close) is told apart from a client that gave up."""

from __future__ import annotations

from wiregate.ingress import Listener, Route
from wiregate.ingress.policy import (
    CLOSED_EARLY,
    HEADER_TIMEOUT,
    HEALTH_CHECK,
    RESET,
    UNTRUSTED_HEADER,
    Accepted,
    HeadPhase,
    Refused,
    Rules,
)
from wiregate.proxyproto import Command, encode_v2

GW = ("10.8.0.1", 40000)
LAN = ("192.168.1.20", 50000)
LOCAL_END = ("10.8.0.2", 443)
CLIENT = ("203.0.113.7", 51234)


def phase(peer=GW) -> HeadPhase:
    lst = Listener(name="l", listen=("127.0.0.1", 0), trusted=("10.8.0.0/24",),
                   routes=(Route("app", ("127.0.0.1", 9001), sni=("app.example.org",)),))
    return HeadPhase(Rules.from_listener(lst), peer, LOCAL_END, 0.0)


def test_local_header_then_close_is_a_health_check_not_a_refusal():
    p = phase()
    assert p.receive_data(encode_v2(command=Command.LOCAL), 0.1) is None  # waits for a ClientHello
    ev = p.receive_eof(0.2)
    assert isinstance(ev, Refused) and ev.reason == HEALTH_CHECK


def test_proxied_client_that_closes_before_a_request_is_still_closed_early():
    p = phase()
    assert p.receive_data(encode_v2(CLIENT, LOCAL_END), 0.1) is None
    assert p.receive_eof(0.2).reason == CLOSED_EARLY


def test_local_header_followed_by_bytes_then_close_is_closed_early():
    p = phase()
    assert p.receive_data(encode_v2(command=Command.LOCAL) + b"\x16\x03", 0.1) is None
    assert p.receive_eof(0.2).reason == CLOSED_EARLY


def test_local_header_from_an_untrusted_peer_is_refused_as_before():
    p = phase(peer=LAN)
    ev = p.receive_data(encode_v2(command=Command.LOCAL), 0.1)
    assert isinstance(ev, Refused) and ev.reason == UNTRUSTED_HEADER


def raw_phase(**kw) -> HeadPhase:
    """A raw TCP listener: one default route, nothing to sniff (the gateway's `echo` service in the e2e lab)."""
    lst = Listener(name="raw", listen=("127.0.0.1", 0), trusted=("10.8.0.0/24",), default_route="echo",
                   routes=(Route("echo", ("127.0.0.1", 9002)),), **kw)
    return HeadPhase(Rules.from_listener(lst), GW, LOCAL_END, 0.0)


def test_local_header_then_close_on_a_raw_tcp_listener_is_a_health_check_not_a_connection():
    """Issue 10 defect 6: the gateway's checks of a raw TCP service were routed at once as a client (the tunnel
    address) and logged and counted as accepted traffic."""
    p = raw_phase()
    assert p.receive_data(encode_v2(command=Command.LOCAL), 0.1) is None  # nothing routed yet
    assert p.receive_eof(0.2).reason == HEALTH_CHECK


def test_local_header_then_bytes_on_a_raw_listener_is_routed_as_the_proxy_itself():
    p = raw_phase()
    assert p.receive_data(encode_v2(command=Command.LOCAL), 0.1) is None
    ev = p.receive_data(b"ping", 0.2)
    assert isinstance(ev, Accepted) and ev.route.name == "echo" and ev.client == GW and ev.data == b"ping"


def test_local_header_with_bytes_in_the_same_segment_is_routed_at_once():
    ev = raw_phase().receive_data(encode_v2(command=Command.LOCAL) + b"ping", 0.1)
    assert isinstance(ev, Accepted) and ev.data == b"ping"


def test_local_header_on_a_server_first_listener_is_routed_at_once():
    ev = raw_phase(server_first=True).receive_data(encode_v2(command=Command.LOCAL), 0.1)
    assert isinstance(ev, Accepted) and ev.client == GW


def test_local_header_then_silence_times_out_naming_the_local_header():
    p = raw_phase()
    assert p.receive_data(encode_v2(command=Command.LOCAL), 0.1) is None
    ev = p.handle_timer(p.deadline)
    assert ev.reason == HEADER_TIMEOUT and "LOCAL header, then nothing" in ev.detail


def test_local_header_then_reset_is_a_health_check_as_haproxy_ends_its_checks():
    """Issue 10 defect 6: HAProxy's check-send-proxy resets after its LOCAL header; that was a `reset` refusal
    logged as a WARNING every 2 s."""
    for p in (phase(), raw_phase()):
        assert p.receive_data(encode_v2(command=Command.LOCAL), 0.1) is None
        assert p.receive_reset("Connection reset by peer", 0.2).reason == HEALTH_CHECK


def test_reset_after_a_client_header_is_still_a_reset_refusal():
    p = phase()
    assert p.receive_data(encode_v2(CLIENT, LOCAL_END), 0.1) is None
    ev = p.receive_reset("Connection reset by peer", 0.2)
    assert ev.reason == RESET and ev.detail == "Connection reset by peer before a decision"

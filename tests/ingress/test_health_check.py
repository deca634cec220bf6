"""A trusted proxy's health check (PROXY LOCAL header, then close) is told apart from a client that gave up."""

from __future__ import annotations

from wiregate.ingress import Listener, Route
from wiregate.ingress.policy import CLOSED_EARLY, HEALTH_CHECK, UNTRUSTED_HEADER, HeadPhase, Refused, Rules
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

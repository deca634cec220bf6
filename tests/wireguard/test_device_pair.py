"""Two Devices in memory: handshake, data both ways, session confirmation and rotation."""

from __future__ import annotations

from wgcore_helpers import ADDR_B, Pair, ip4, ip6

from wiregate.wireguard.events import HandshakeComplete
from wiregate.wireguard.keys import generate_psk


def test_handshake_then_data_flows_both_ways() -> None:
    p = Pair()
    p.a.send_packet(ip4("10.0.0.1", "10.0.0.2", b"ping"), p.now)
    # before the handshake nothing but an initiation leaves A
    out = p.a.take_datagrams()
    assert len(out) == 1 and out[0][0][0] == 1 and len(out[0][0]) == 148 and out[0][1] == ADDR_B
    p.b.receive_datagram(out[0][0], p.a_addr, p.now)
    p.pump()
    assert p.b.take_packets() == [ip4("10.0.0.1", "10.0.0.2", b"ping")]
    assert p.a.take_events() == [HandshakeComplete(p.b.public_key)]
    assert p.b.take_events() == [HandshakeComplete(p.a.public_key)]
    p.b.send_packet(ip4("10.0.0.2", "10.0.0.1", b"pong"), p.now)
    p.b.send_packet(ip6("fd00::2", "fd00::1", b"pong6"), p.now)
    p.pump()
    assert p.a.take_packets() == [ip4("10.0.0.2", "10.0.0.1", b"pong"), ip6("fd00::2", "fd00::1", b"pong6")]
    assert p.peer_b.last_handshake == p.wall.t and p.peer_a.last_handshake == p.wall.t
    assert p.peer_b.tx_bytes > 0 and p.peer_b.rx_bytes > 0 and p.peer_a.rx_bytes > 0
    assert p.peer_a.endpoint == p.a_addr  # B learned A's address from the authenticated initiation
    assert not p.a.drops and not p.b.drops


def test_with_preshared_key_and_batches() -> None:
    p = Pair(psk=generate_psk())
    pkts = [ip4("10.0.0.1", "10.0.0.2", bytes([i]) * i) for i in range(1, 40)]
    p.a.send_packets(pkts, p.now)
    p.pump()
    assert p.b.take_packets() == pkts  # queued during the handshake, delivered in order
    back = [ip6("fd00::2", "fd00::1", bytes([i]) * (i * 7)) for i in range(30)]
    p.b.send_packets(back, p.now)
    p.a.receive_datagrams([(dg, p.b_addr) for dg, _ in p.b.take_datagrams()], p.now)
    assert p.a.take_packets() == back


def test_mismatched_preshared_keys_never_get_a_session() -> None:
    p = Pair()
    p.b.update_peer(p.a.public_key, preshared_key=generate_psk())
    p.a.send_packet(ip4("10.0.0.1", "10.0.0.2"), p.now)
    p.pump()
    assert p.b.take_packets() == [] and p.a.take_events() == []
    assert p.a.drops["response_auth"] == 1


def test_transport_padding_is_a_multiple_of_16_capped_at_mtu() -> None:
    p = Pair()
    p.connect()
    for size in (1, 15, 16, 17, 100, 1400 - 20):
        p.a.send_packet(ip4("10.0.0.1", "10.0.0.2", b"x" * size), p.now)
        (dg, _), = p.a.take_datagrams()
        inner = len(dg) - 32
        assert inner % 16 == 0 or inner == p.a.mtu
        assert 20 + size <= inner <= max(20 + size, p.a.mtu)
        p.b.receive_datagram(dg, p.a_addr, p.now)
        assert p.b.take_packets() == [ip4("10.0.0.1", "10.0.0.2", b"x" * size)]  # padding trimmed


def test_responder_session_becomes_current_on_first_data_and_initiator_sends_keepalive() -> None:
    p = Pair()
    p.a.send_packet(ip4("10.0.0.1", "10.0.0.2"), p.now)
    init = p.a.take_datagrams()
    p.b.receive_datagram(init[0][0], p.a_addr, p.now)
    assert p.peer_a.keypairs.next is not None and p.peer_a.keypairs.current is None
    resp = p.b.take_datagrams()
    p.a.receive_datagram(resp[0][0], p.b_addr, p.now)
    assert p.peer_b.keypairs.current is not None
    p.a.take_datagrams()
    # an idle initiator with nothing queued still confirms the session with a keepalive
    q = Pair(seed=99)
    q.a.handle_timer(q.now)
    q.a.update_peer(q.b.public_key, persistent_keepalive=0)
    q.a._send_initiation(q.peer_b, q.now, retry=False)
    q.b.receive_datagram(q.a.take_datagrams()[0][0], q.a_addr, q.now)
    q.a.receive_datagram(q.b.take_datagrams()[0][0], q.b_addr, q.now)
    (ka, _), = q.a.take_datagrams()
    assert len(ka) == 32 and ka[0] == 4
    q.b.receive_datagram(ka, q.a_addr, q.now)
    assert q.peer_a.keypairs.current is not None and q.peer_a.keypairs.next is None
    assert q.b.take_packets() == []


def test_simultaneous_initiations_converge_on_one_session() -> None:
    from wgcore_helpers import run_until

    p = Pair(b_knows_a_endpoint=True)
    p.a.send_packet(ip4("10.0.0.1", "10.0.0.2", b"from a"), p.now)
    p.b.send_packet(ip4("10.0.0.2", "10.0.0.1", b"from b"), p.now)
    p.now += 0.5  # both initiations cross on the wire
    p.wall.t += 0.5
    run_until(p, p.now + 12)
    assert ip4("10.0.0.1", "10.0.0.2", b"from a") in p.b.take_packets()
    assert ip4("10.0.0.2", "10.0.0.1", b"from b") in p.a.take_packets()
    p.a.send_packet(ip4("10.0.0.1", "10.0.0.2", b"after"), p.now)
    p.pump()
    assert p.b.take_packets() == [ip4("10.0.0.1", "10.0.0.2", b"after")]


def test_rekey_after_messages_and_reject_after_messages() -> None:
    from wiregate.wireguard.constants import REJECT_AFTER_MESSAGES, REKEY_AFTER_MESSAGES

    p = Pair()
    p.connect()
    kp = p.peer_b.keypairs.current
    kp.send_nonce = REKEY_AFTER_MESSAGES + 1
    p.advance(6)  # past the REKEY_TIMEOUT rate limit of the first initiation
    p.pump()
    p.a.send_packet(ip4("10.0.0.1", "10.0.0.2", b"many"), p.now)
    assert [len(dg) if dg[0] == 4 else dg[0] for dg, _ in p.a.take_datagrams()][-1] == 1  # data, then rekey
    q = Pair(seed=5)
    q.connect()
    q.peer_b.keypairs.current.send_nonce = REJECT_AFTER_MESSAGES
    q.advance(6)  # past the REKEY_TIMEOUT rate limit of the first initiation (and a newer TAI64N)
    q.a.send_packet(ip4("10.0.0.1", "10.0.0.2", b"held"), q.now)
    out = q.a.take_datagrams()
    assert [dg[0] for dg, _ in out] == [1]  # not sent with the worn-out key: queued, handshake started
    q.b.receive_datagram(out[0][0], q.a_addr, q.now)
    q.pump()
    assert q.b.take_packets() == [ip4("10.0.0.1", "10.0.0.2", b"held")]


def test_changing_the_private_key_expires_sessions() -> None:
    from wiregate.wireguard.keys import generate_private_key, public_key

    p = Pair()
    p.connect()
    new = generate_private_key()
    p.a.set_private_key(new)
    assert p.a.public_key == public_key(new) and p.a.private_key == new
    p.a.send_packet(ip4("10.0.0.1", "10.0.0.2"), p.now)
    assert [dg[0] for dg, _ in p.a.take_datagrams()] == [1]  # a new handshake, the old session is spent

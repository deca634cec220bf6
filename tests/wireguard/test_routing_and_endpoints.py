"""AllowedIPs cryptokey routing (longest prefix, v4 and v6, source check), roaming, DNS endpoint re-resolution,
peer configuration changes."""

from __future__ import annotations

import random

import pytest
from wgcore_helpers import ADDR_A, ADDR_B, KEY_A, KEY_B, Pair, ip4, ip6, run_until

from wiregate.errors import ConfigError
from wiregate.wireguard.allowedips import AllowedIPs
from wiregate.wireguard.constants import REKEY_TIMEOUT
from wiregate.wireguard.device import Device, PeerConfig
from wiregate.wireguard.events import PeerRoamed, ResolveEndpoint
from wiregate.wireguard.keys import decode_key, encode_key, generate_private_key, generate_psk, public_key


def test_longest_prefix_match_v4_and_v6() -> None:
    t: AllowedIPs[str] = AllowedIPs()
    t.insert("0.0.0.0/0", "default")
    t.insert("10.0.0.0/8", "ten")
    t.insert("10.1.0.0/16", "ten-one")
    t.insert("10.1.2.3/32", "host")
    t.insert("::/0", "default6")
    t.insert("fd00::/8", "ula")
    t.insert("fd00:1::/32", "site")
    t.insert("fd00:1::7/128", "host6")
    look = lambda a: t.lookup(__import__("ipaddress").ip_address(a).packed)  # noqa: E731
    assert look("10.1.2.3") == "host" and look("10.1.2.4") == "ten-one" and look("10.2.0.1") == "ten"
    assert look("192.0.2.1") == "default"
    assert look("fd00:1::7") == "host6" and look("fd00:1::8") == "site" and look("fd00:2::1") == "ula"
    assert look("2001:db8::1") == "default6"
    t.insert("10.1.0.0/16", "moved")  # same prefix: new owner replaces the old
    assert look("10.1.9.9") == "moved"
    t.remove_value("moved")
    assert look("10.1.9.9") == "ten"
    t.remove_value("default")
    assert look("192.0.2.1") is None


def test_send_routes_by_destination_and_receive_checks_the_source() -> None:
    p = Pair()
    p.connect()
    # A's peer B owns only 10.0.0.2 and fd00::2: other destinations are not sent anywhere
    p.a.send_packets([ip4("10.0.0.1", "10.9.9.9"), ip6("fd00::1", "fd00::99"), b"\x00junk"], p.now)
    assert p.a.take_datagrams() == [] and p.a.drops["tun_no_route"] == 2 and p.a.drops["tun_not_ip"] == 1
    # B sends with a source A did not allow for B: decrypted, then dropped
    p.b.update_peer(p.a.public_key, allowed_ips=("10.0.0.0/24", "fd00::/64"))
    p.b.send_packets([ip4("10.0.0.3", "10.0.0.1", b"spoof"), ip6("fd00::3", "fd00::1", b"spoof6"),
                      ip4("10.0.0.2", "10.0.0.1", b"fine")], p.now)
    p.pump()
    assert p.a.take_packets() == [ip4("10.0.0.2", "10.0.0.1", b"fine")]
    assert p.a.drops["source_not_allowed"] == 2


def test_two_peers_split_by_longest_prefix() -> None:
    d = Device(KEY_A, rng=random.Random(1).randbytes)
    k1, k2 = public_key(generate_private_key()), public_key(generate_private_key())
    d.add_peer(PeerConfig(k1, allowed_ips=("10.0.0.0/8", "::/0"), endpoint=("192.0.2.10", 1)))
    d.add_peer(PeerConfig(k2, allowed_ips=("10.5.0.0/16", "fd00:5::/32"), endpoint=("192.0.2.20", 2)))
    assert d.lookup_route("10.5.1.1").public_key == k2 and d.lookup_route("10.6.1.1").public_key == k1
    assert d.lookup_route("fd00:5::1").public_key == k2 and d.lookup_route("fd00:6::1").public_key == k1
    d.send_packets([ip4("10.0.0.1", "10.5.1.1"), ip4("10.0.0.1", "10.6.1.1")], 1.0)
    assert sorted(addr for _, addr in d.take_datagrams()) == [("192.0.2.10", 1), ("192.0.2.20", 2)]
    # a prefix given to another peer moves, as with `wg set`
    d.update_peer(k1, allowed_ips=("10.0.0.0/8", "10.5.0.0/16"))
    assert d.lookup_route("10.5.1.1").public_key == k1 and d.peers[k2].allowed_ips == ("fd00:5::/32",)
    d.remove_peer(k1)
    assert d.lookup_route("10.6.1.1") is None and k1 not in d.peers


def test_endpoint_follows_an_authenticated_packet_from_a_new_address() -> None:
    p = Pair()
    p.connect()
    moved = ("203.0.113.7", 40000)
    p.a_addr = moved  # A's NAT mapping changed
    p.a.send_packet(ip4("10.0.0.1", "10.0.0.2", b"from new place"), p.now)
    p.pump()
    assert p.peer_a.endpoint == moved
    assert p.b.take_events() == [PeerRoamed(p.a.public_key, ADDR_A, moved)]
    p.b.send_packet(ip4("10.0.0.2", "10.0.0.1", b"answer"), p.now)
    assert p.b.take_datagrams()[0][1] == moved
    # an unauthenticated datagram from yet another address changes nothing
    p.b.receive_datagram(b"\x04\x00\x00\x00" + bytes(60), ("198.51.100.99", 9), p.now)
    assert p.peer_a.endpoint == moved and p.b.take_events() == []


def test_dns_endpoint_is_resolved_first_and_again_while_handshakes_fail() -> None:
    p = Pair()
    key = p.b.public_key
    p.a.remove_peer(key)
    p.a.add_peer(PeerConfig(key, allowed_ips=("10.0.0.2/32",), endpoint_host="vpn.example.net:51821"))
    assert p.a.take_events() == [ResolveEndpoint(key, "vpn.example.net", 51821)]
    p.a.send_packet(ip4("10.0.0.1", "10.0.0.2", b"early"), p.now)
    assert p.a.take_datagrams() == []  # nowhere to send yet; the packet stays queued
    p.a.take_events()
    p.a.set_endpoint(key, ADDR_B)
    assert p.a.next_deadline() <= p.now
    run_until(p, p.now + 0.01)
    assert p.b.take_packets() == [ip4("10.0.0.1", "10.0.0.2", b"early")]
    # later the far side goes silent: after every 3 failed retries the core asks for a fresh DNS answer
    p.a.take_events()
    run_until(p, p.now + 200)  # let the session age past REJECT_AFTER_TIME
    p.a.take_events()
    p.a.send_packet(ip4("10.0.0.1", "10.0.0.2", b"again"), p.now)
    t0 = p.now
    run_until(p, t0 + 9 * (REKEY_TIMEOUT + 0.334) + 0.1, drop_a_to_b=True)
    resolves = [e for e in p.a.take_events() if isinstance(e, ResolveEndpoint)]
    assert len(resolves) == 3 and resolves[0] == ResolveEndpoint(key, "vpn.example.net", 51821)


def test_peer_configuration_is_validated_and_updated_in_place() -> None:
    d = Device(KEY_A)
    k = public_key(KEY_B)
    with pytest.raises(ConfigError, match="AllowedIPs"):
        d.add_peer(PeerConfig(k, allowed_ips=("10.0.0.300/32",)))
    assert k not in d.peers
    with pytest.raises(ConfigError, match="PublicKey"):
        d.add_peer(PeerConfig(b"short"))
    peer = d.add_peer(PeerConfig(k, allowed_ips=("10.0.0.7/24",), persistent_keepalive=0))
    assert peer.allowed_ips == ("10.0.0.0/24",)  # host bits cleared, as wg shows it
    with pytest.raises(ConfigError):
        d.add_peer(PeerConfig(k))
    psk = generate_psk()
    d.update_peer(k, preshared_key=psk, persistent_keepalive=15, endpoint=("192.0.2.9", 5))
    assert peer.preshared_key == psk and peer.persistent_keepalive == 15 and peer.endpoint == ("192.0.2.9", 5)
    d.update_peer(k, preshared_key=None)
    assert peer.preshared_key is None and peer.handshake.psk == bytes(32)


def test_keys_encode_and_decode_like_wg() -> None:
    priv = generate_private_key()
    assert priv[0] & 7 == 0 and priv[31] & 0xC0 == 0x40
    text = encode_key(priv)
    assert len(text) == 44 and decode_key(text) == priv
    # RFC 7748 section 6.1 Alice's key pair, in wg's base64
    alice = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    assert public_key(alice).hex() == "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    for bad in ("", "abc", text[:-1] + "!", "A" * 44, encode_key(priv)[:-2] + "=="):
        with pytest.raises(ConfigError, match="PrivateKey"):
            decode_key(bad, "PrivateKey")


@pytest.mark.parametrize("text, expect", [
    ("vpn.example.net", ("vpn.example.net", 51820)),
    ("vpn.example.net:4500", ("vpn.example.net", 4500)),
    ("[fd00::1]:51000", ("fd00::1", 51000)),
])
def test_endpoint_host_forms(text: str, expect: tuple[str, int]) -> None:
    d = Device(KEY_A)
    d.add_peer(PeerConfig(public_key(KEY_B), endpoint_host=text))
    assert d.take_events() == [ResolveEndpoint(public_key(KEY_B), *expect)]


@pytest.mark.parametrize("text", ["vpn.example.net:0", "vpn.example.net:99999", "[fd00::1]:x", ":51820"])
def test_bad_endpoint_host_is_a_config_error(text: str) -> None:
    d = Device(KEY_A)
    with pytest.raises(ConfigError, match="Endpoint"):
        d.add_peer(PeerConfig(public_key(KEY_B), endpoint_host=text))
    assert not d.peers


def test_one_batch_mixing_flows_sources_and_bad_datagrams_is_checked_packet_by_packet() -> None:
    """The batch paths remember the last destination, source and receiver index: every packet must still get its
    own verdict when flows, peers and bad datagrams alternate within one call."""
    p = Pair()
    p.connect()
    p.b.update_peer(p.a.public_key, allowed_ips=("10.0.0.0/24", "fd00::/64"))
    sent = [ip4("10.0.0.2", "10.0.0.1", b"ok1"), ip4("10.0.0.3", "10.0.0.1", b"spoof"),
            ip4("10.0.0.2", "10.0.0.1", b"ok2"), ip6("fd00::2", "fd00::1", b"ok3"), ip6("fd00::3", "fd00::1", b"x"),
            ip4("10.0.0.2", "10.0.0.1", b"ok4")]
    p.b.send_packets(sent, p.now)
    dgs = [dg for dg, _ in p.b.take_datagrams()]
    assert len(dgs) == 6
    bad_index = dgs[2][:4] + bytes(4) + dgs[2][8:]  # unknown receiver index
    batch = [dgs[0], dgs[1], bad_index, dgs[2], dgs[0], dgs[3], dgs[4], dgs[5]]  # dgs[0] twice: a replay
    p.a.receive_datagrams([(d, p.b_addr) for d in batch], p.now)
    assert p.a.take_packets() == [sent[0], sent[2], sent[3], sent[5]]
    assert (p.a.drops["source_not_allowed"], p.a.drops["unknown_index"], p.a.drops["replay"]) == (2, 1, 1)


def test_one_send_batch_alternating_peers_routes_each_packet() -> None:
    d = Device(KEY_A, rng=random.Random(1).randbytes)
    k1, k2 = public_key(generate_private_key()), public_key(generate_private_key())
    d.add_peer(PeerConfig(k1, allowed_ips=("10.1.0.0/16",), endpoint=("192.0.2.10", 1)))
    d.add_peer(PeerConfig(k2, allowed_ips=("10.2.0.0/16",), endpoint=("192.0.2.20", 2)))
    dsts = ["10.1.0.1", "10.2.0.1", "10.1.0.1", "10.1.0.1", "10.3.0.1", "10.2.0.1", "10.2.0.1", "10.1.0.1"]
    d.send_packets([ip4("10.0.0.1", x) for x in dsts], 1.0)
    # no sessions yet: each peer queues its packets and sends one initiation
    assert sorted(addr for _, addr in d.take_datagrams()) == [("192.0.2.10", 1), ("192.0.2.20", 2)]
    assert [len(d.peers[k].staged) for k in (k1, k2)] == [4, 3] and d.drops["tun_no_route"] == 1

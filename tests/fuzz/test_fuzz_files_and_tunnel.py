"""Fuzz what reads the tunnel's datagrams, the UAPI socket and the files a user edits: WireGuard messages of all
four types and any length (fed to the sans-I/O Device), UAPI requests, wg-quick files, the TOML configs (gateway,
home, relay, ingress) and the join token. Only a result, a drop counter or a WiregateError may come out."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.common import cut, fuzz, mutated, mutated_text
from tests.wireguard.wgcore_helpers import ADDR_B, KEY_A, Pair, ip4
from wiregate.config import model, pairing, token
from wiregate.errors import WiregateError
from wiregate.ingress import config as ingress_config
from wiregate.relay import config as relay_config
from wiregate.testing.system import HOME_LISTENERS
from wiregate.wireguard import config as wgquick
from wiregate.wireguard import keys, uapi
from wiregate.wireguard.cookie import CookieGenerator
from wiregate.wireguard.device import Device


def allowed(fn, *args):
    try:
        return fn(*args)
    except WiregateError as exc:
        assert str(exc), f"{type(exc).__name__} without a message"
        return exc


# -- WireGuard messages -------------------------------------------------------------------------------------------

def _genuine_wire() -> list[bytes]:
    """Real datagrams of all four types from a handshake between two Devices (to mutate)."""
    p = Pair(seed=3)
    p.connect()
    p.a.send_packet(ip4("10.0.0.1", "10.0.0.2", b"data"), p.now)
    p.pump()
    out = [dg for _, dg in p.wire]
    # a cookie reply: B under load answers an initiation with one
    p2 = Pair(seed=5)
    p2.b.under_load = True
    p2.a.send_packet(ip4("10.0.0.1", "10.0.0.2", b"x"), p2.now)
    p2.pump(rounds=2)
    out += [dg for _, dg in p2.wire]
    assert {dg[0] for dg in out} == {1, 2, 3, 4}
    return out


WIRE = _genuine_wire()
A_PUBLIC = Device(KEY_A).public_key  # the device under test: datagrams with a valid MAC1 for it go deeper


@st.composite
def datagrams(draw) -> bytes:
    kind = draw(st.sampled_from(["mutated", "random", "typed", "mac1"]))
    if kind == "mutated":
        return draw(mutated(WIRE, max_edits=3))
    if kind == "random":
        return draw(st.binary(max_size=200))
    size = draw(st.sampled_from([148, 92, 64, 32, 48, 0, 1, 4, 147, 149, 93, 65, 31, 16]))
    msg = bytes([draw(st.integers(1, 4))]) + bytes(3) + draw(st.binary(min_size=max(size - 4, 0),
                                                                      max_size=max(size - 4, 0)))
    if kind == "mac1" and size >= 32:  # a valid MAC1 for A: gets past the cheap check into the handshake code
        msg = CookieGenerator(A_PUBLIC).add_macs(msg, 0.0)
    return msg



@fuzz
@given(st.lists(datagrams(), min_size=1, max_size=8), st.booleans())
def test_wireguard_device_drops_and_counts_any_datagram(dgs, connected):
    p = Pair(seed=11)
    if connected:
        p.connect()
    before = sum(p.a.drops.values())
    for dg in dgs:
        p.a.receive_datagram(dg, ADDR_B, p.now)  # must never raise
    p.a.take_datagrams()
    p.a.take_packets()
    assert p.a.drops["handshake_error"] == 0, p.a.drops  # the catch-all: an unexpected exception inside
    assert sum(p.a.drops.values()) >= before
    p.a.send_packet(ip4("10.0.0.1", "10.0.0.2", b"after"), p.now)  # and the device still works
    p.pump()
    assert ip4("10.0.0.1", "10.0.0.2", b"after") in p.b.take_packets()


# -- UAPI ---------------------------------------------------------------------------------------------------------

KEY_HEX = bytes(range(32)).hex()
UAPI_SEEDS = [
    b"get=1\n\n",
    f"set=1\nprivate_key={KEY_HEX}\nlisten_port=51820\nfwmark=0\nreplace_peers=true\npublic_key={KEY_HEX}\n"
    f"preshared_key={KEY_HEX}\nendpoint=[2001:db8::1]:51820\npersistent_keepalive_interval=25\n"
    f"replace_allowed_ips=true\nallowed_ip=10.0.0.0/8\nallowed_ip=fd00::/64\nprotocol_version=1\n\n".encode(),
    f"set=1\npublic_key={KEY_HEX}\nremove=true\nupdate_only=true\nendpoint=192.0.2.1:1\n\nget=1\n\n".encode(),
]


@fuzz
@given(st.data(), st.one_of(mutated(UAPI_SEEDS), st.binary(max_size=200)))
def test_uapi_connection_answers_any_bytes_with_requests_or_errors(data, wire):
    conn = uapi.UapiConnection(max_request=4096)
    for piece in data.draw(cut(wire)):
        for item in conn.feed(piece):
            assert isinstance(item, (uapi.GetRequest, uapi.SetRequest, uapi.UapiError))
            if isinstance(item, uapi.UapiError):
                assert item.code < 0 and str(item)
    allowed(uapi.parse_set, wire.decode("utf-8", "replace"))


# -- wg-quick files -----------------------------------------------------------------------------------------------

WG_SEEDS = [f"""[Interface]
PrivateKey = {keys.encode_key(bytes(range(1, 33)))}
Address = 10.0.0.1/24, fd00::1/64
ListenPort = 51820
FwMark = 0x10
MTU = 1420
DNS = 192.0.2.53
Table = off

[Peer]
PublicKey = {keys.encode_key(bytes(range(2, 34)))}
PresharedKey = {keys.encode_key(bytes(range(3, 35)))}
AllowedIPs = 10.0.0.2/32, fd00::2/128
Endpoint = [2001:db8::1]:51820
PersistentKeepalive = 25
"""]


@fuzz
@given(mutated_text(WG_SEEDS))
def test_wg_quick_parse_gives_a_config_or_a_one_line_error(text):
    got = allowed(wgquick.parse, text, "wg0.conf")
    if isinstance(got, WiregateError):
        assert str(got).startswith("wg0.conf") and "\n" not in str(got)


# -- TOML configs: gateway and home as init / site add / join write them; relay and ingress files ---------------

def _pairing_seeds() -> list[str]:
    tok = token.JoinToken(gateway_public_key=bytes(range(32)), site_private_key=bytes(range(32, 64)),
                          site_address="192.0.2.7/24", gateway_address="192.0.2.1",
                          endpoint=("vps.example.net", 51820), site_name="cabin")
    gw = pairing.gateway_text("gw", ("vps.example.net", 51820), "192.0.2.1/24", 51820, "gateway.key")
    gw += f"""
[[sites]]
name = "cabin"
public_key = "{keys.encode_key(bytes(range(40, 72)))}"
address = "192.0.2.7"

[[services]]
name = "https"
listen = ["0.0.0.0:443", "[::]:443"]

[[services]]
name = "dns"
protocol = "udp"
listen = ["0.0.0.0:53"]
"""
    home = pairing.home_text(tok, "cabin", "home.key") + HOME_LISTENERS
    return [gw, home]


CONFIG_SEEDS = _pairing_seeds()
RELAY_SEEDS = ["""
[[services]]
name = "web"
listen = [["0.0.0.0", 443], ["::", 443]]
backends = [{host = "192.0.2.2", port = 443}]
proxy_protocol = "v2"

[[services]]
name = "dns"
protocol = "udp"
listen = [["0.0.0.0", 53]]
backends = [{host = "192.0.2.2", port = 53}]
"""]
INGRESS_SEEDS = ["""
[[listeners]]
name = "https"
listen = ["0.0.0.0", 443]
trusted = ["192.0.2.1", "10.0.0.0/8"]
default_route = "fallback"
header_timeout = 5

[[listeners.routes]]
name = "blog"
sni = ["blog.example.org", "*.blog.example.org"]
target = ["192.168.1.10", 443]
send_proxy = "v2"

[[listeners.routes]]
name = "api"
host = ["www.example.org"]
path_prefix = "/api"
http_headers = true
target = ["192.168.1.13", 8080]

[[listeners.routes]]
name = "fallback"
target = ["192.168.1.12", 443]

[[listeners]]
name = "dns"
protocol = "udp"
listen = ["0.0.0.0", 53]
default_route = "dns"
[[listeners.routes]]
name = "dns"
target = ["192.168.1.2", 53]
"""]


def test_the_seeds_are_valid_files():
    assert [type(model.loads(t, Path("/cfg"))).__name__ for t in CONFIG_SEEDS] == ["GatewayConfig", "HomeConfig"]
    relay_config.config_from_dict(tomllib.loads(RELAY_SEEDS[0]))
    ingress_config.from_dict(tomllib.loads(INGRESS_SEEDS[0]))


@fuzz
@given(mutated_text(CONFIG_SEEDS))
def test_gateway_and_home_files_load_or_fail_with_a_config_error(text):
    allowed(model.loads, text, Path("/cfg"))


def _standalone(build, text: str):
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return None
    return allowed(build, doc)


@fuzz
@given(mutated_text(RELAY_SEEDS))
def test_relay_files_build_or_fail_with_a_config_error(text):
    _standalone(relay_config.config_from_dict, text)


@fuzz
@given(mutated_text(INGRESS_SEEDS))
def test_ingress_files_build_or_fail_with_a_config_error(text):
    _standalone(ingress_config.from_dict, text)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return
    allowed(ingress_config.from_dict, json.loads(json.dumps(doc, default=str)))  # the same through JSON


# -- join token ---------------------------------------------------------------------------------------------------

TOKENS = [token.encode(token.JoinToken(gateway_public_key=bytes(range(32)), site_private_key=bytes(range(32, 64)),
                                       site_address=a, gateway_address=g, endpoint=e, site_name="cabin"))
          for a, g, e in (("192.0.2.7/24", "192.0.2.1", ("vps.example.net", 51820)),
                          ("fd00::2/64", "fd00::1", ("2001:db8::1", 4)))]


@st.composite
def forged_tokens(draw) -> str:
    """A token whose checksum is right but whose body is random or edited (reaches the body parser)."""
    import base64

    from wiregate.config.token import TOKEN_PREFIX, _checksum

    seed = base64.urlsafe_b64decode(TOKENS[draw(st.integers(0, 1))][5:] + "==")[:-len(_checksum(b""))]
    body = draw(st.one_of(mutated([seed]), st.binary(min_size=66, max_size=140)))
    return TOKEN_PREFIX + base64.urlsafe_b64encode(body + _checksum(body)).decode().rstrip("=")


@fuzz
@given(st.one_of(mutated_text(TOKENS), forged_tokens(), st.text(max_size=120)))
def test_join_token_decodes_or_fails_with_a_config_error(text):
    got = allowed(token.decode, text)
    if not isinstance(got, WiregateError):
        assert isinstance(got, token.JoinToken) and token.decode(token.encode(got)) == got


def test_mac1_datagrams_are_made_for_the_device_under_test():
    p = Pair(seed=1)
    msg = CookieGenerator(A_PUBLIC).add_macs(bytes([1, 0, 0, 0]) + bytes(144), 0.0)
    p.a.receive_datagram(msg, ADDR_B, p.now)
    assert p.a.drops["mac1"] == 0 and p.a.drops["initiation_auth"] == 1  # past MAC1, refused by the handshake

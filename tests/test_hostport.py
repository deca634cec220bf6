"""wiregate.hostport: the one `host:port` parse / format / unmap, its rules, and the callers that use it.

The vectors below are the cases where the eight parsers this module replaced disagreed; each is asserted through
the caller that used to get it wrong (or through every caller, when the rule is common).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wiregate import hostport
from wiregate.config import schema, token
from wiregate.errors import ConfigError
from wiregate.hostport import Address, AddressError
from wiregate.ingress.config import Listener, Route
from wiregate.ingress.config import from_dict as ingress_from_dict
from wiregate.ingress.config import to_dict as ingress_to_dict
from wiregate.relay.config import config_from_dict as relay_from_dict
from wiregate.wireguard import uapi
from wiregate.wireguard import config as wgquick
from wiregate.wireguard.device import Device, PeerConfig
from wiregate.wireguard.events import ResolveEndpoint
from wiregate.wireguard.keys import encode_key, public_key

SRC = Path(__file__).resolve().parents[1] / "src" / "wiregate"
KEY_A, KEY_B = bytes(range(1, 33)), bytes(range(2, 34))

# -- canonical values ------------------------------------------------------------------------------------------
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).filter(lambda ip: ip.ipv4_mapped is None).map(str)
zone = st.from_regex(r"[A-Za-z0-9_.-]{1,15}", fullmatch=True)
scoped = st.builds(lambda ip, z: f"{ip}%{z}", ipv6, zone)
label = st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,20}[a-zA-Z0-9])?", fullmatch=True)
hostname = st.lists(label, min_size=1, max_size=5).map(".".join).filter(
    lambda n: not n.rpartition(".")[2].isdigit())
hosts = st.one_of(ipv4, ipv6, scoped, hostname)
ports = st.integers(0, 65535)


@given(hosts, ports)
def test_parse_of_format_is_identity(host: str, port: int) -> None:
    a = Address(host, port)
    text = hostport.format(a)
    assert hostport.parse(text, allow_port_zero=True) == a
    assert hostport.parse([host, port], allow_port_zero=True) == a  # the list form, by the same rules
    assert str(a) == text


@given(hosts, st.integers(1, 65535))
def test_bare_host_takes_the_default_port_only_when_one_is_given(host: str, port: int) -> None:
    text = hostport.format((host, 1))[: -len(":1")]
    assert hostport.parse(text, default_port=port) == Address(host, port)
    with pytest.raises(AddressError, match="missing ':port'"):
        hostport.parse(text)


@given(st.one_of(ipv4, ipv6), ports)
def test_ip_only_callers_take_every_ip(host: str, port: int) -> None:
    assert hostport.parse(hostport.format((host, port)), names=False, allow_port_zero=True) == (host, port)


@given(st.ip_addresses(v=4), st.integers(1, 65535))
def test_ipv4_mapped_ipv6_comes_out_as_ipv4(ip: ipaddress.IPv4Address, port: int) -> None:
    mapped = ipaddress.IPv6Address(f"::ffff:{ip}")
    assert hostport.parse(f"[::ffff:{ip}]:{port}") == (str(ip), port)
    assert hostport.parse(f"[{mapped}]:{port}") == (str(ip), port)  # ::ffff:c000:201, as Python 3.11 writes it
    assert hostport.unmap((f"::ffff:{ip}", port, 0, 0)) == (str(ip), port)  # a socket's 4-tuple
    assert hostport.unmap_host(str(mapped)) == str(ip)


def test_unmap_leaves_other_hosts_and_drops_a_zone_only_when_asked() -> None:
    assert hostport.unmap(("192.0.2.1", 5)) == ("192.0.2.1", 5)
    assert hostport.unmap(("2001:db8::1", 5, 0, 0)) == ("2001:db8::1", 5)
    assert hostport.unmap(("fe80::1%eth0", 5)) == ("fe80::1%eth0", 5)
    assert hostport.unmap(("fe80::1%eth0", 5), drop_scope=True) == ("fe80::1", 5)
    assert hostport.unmap_host("::ffff:zz") == "::ffff:zz"  # not an address: left for the caller to refuse


@pytest.mark.parametrize("text, canonical", [
    ("[2001:DB8:0::01]:443", Address("2001:db8::1", 443)),
    ("192.0.2.1:0080", Address("192.0.2.1", 80)),
    ("vpn.example.net.:51820", Address("vpn.example.net.", 51820)),
])
def test_ip_literals_come_out_canonical(text: str, canonical: Address) -> None:
    assert hostport.parse(text) == canonical


@pytest.mark.parametrize("text, why", [
    ("2001:db8::1:443", "an IPv6 address goes in brackets"),   # address, or address plus port?
    ("::1", "an IPv6 address goes in brackets"),
    ("[::1", "missing ']'"),
    ("[::1]443", "expected ':port' after ']'"),
    ("[vpn.example.net]:443", "not an IPv6 address in the brackets"),  # the schema took it
    ("[192.0.2.1]:443", "not an IPv6 address in the brackets"),
    ("[fe80::1%a b]:443", "not an IPv6 address in the brackets"),  # a zone is an interface name or index
    (":443", "missing host"),  # the relay file took it as 0.0.0.0:443
    ("host:", "port is not a number"),
    ("host:+80", "port is not a number"),
    ("host:\u0663", "port is not a number"),  # Arabic-Indic 3: str.isdigit() said yes, int() made it 3
    ("host:" + "9" * 5000, "port is not a number"),  # no int() of a huge string
    ("host:65536", "port out of range"),
    ("1.2.3.999:80", "neither an IP address nor a DNS name"),  # a bad IPv4 address is not a name either
    ("bad host!:80", "neither an IP address nor a DNS name"),
    ("a..b:80", "neither an IP address nor a DNS name"),
    (["192.0.2.1", "80"], "port must be an integer"),
    (["192.0.2.1", True], "port must be an integer"),
    (["192.0.2.1", 80, 0], "must be \"HOST:PORT\" or [HOST, PORT]"),
    (443, "must be a string"),
])
def test_bad_text_is_one_error_naming_what_value_and_why(text: object, why: str) -> None:
    with pytest.raises(AddressError) as exc:
        hostport.parse(text, what="services[0].listen[1]")
    assert str(exc.value).startswith(f"services[0].listen[1]: {schema.show(text)}: ")
    assert why in exc.value.why
    assert isinstance(exc.value, ConfigError)


# -- the old disagreements, through the callers ----------------------------------------------------------------
def test_port_zero_only_where_the_caller_asks() -> None:
    for bad in (lambda: schema.p_target("t", "192.0.2.1:0"),
                lambda: schema.endpoint_parser(51820)("e", "vpn.example.net:0"),
                lambda: relay_from_dict({"services": [{"name": "w", "listen": ["127.0.0.1:0"],
                                                       "backends": [{"host": "127.0.0.1", "port": 1}]}]}),
                lambda: Route(name="r", target=("127.0.0.1", 0)),  # the ingress took it: a connect to port 0
                lambda: wgquick.parse(f"[Interface]\nPrivateKey = {encode_key(KEY_A)}\n[Peer]\n"
                                      f"PublicKey = {encode_key(public_key(KEY_B))}\nEndpoint = 192.0.2.1:0\n")):
        with pytest.raises(ConfigError, match="port out of range"):
            bad()
    assert Listener(name="l", listen=("127.0.0.1", 0)).listen == ("127.0.0.1", 0)  # bind: any free port
    assert uapi.parse_endpoint("192.0.2.1:0") == ("192.0.2.1", 0)  # wireguard-go takes it too


def test_bare_host_only_with_a_default_port() -> None:
    assert schema.endpoint_parser(51820)("e", "vpn.example.net") == ("vpn.example.net", 51820)
    d = Device(KEY_A)
    d.add_peer(PeerConfig(public_key(KEY_B), endpoint_host="vpn.example.net"))
    assert d.take_events() == [ResolveEndpoint(public_key(KEY_B), "vpn.example.net", 51820)]
    with pytest.raises(ConfigError, match="missing ':port'"):
        schema.p_target("t", "vpn.example.net")
    with pytest.raises(ConfigError, match="missing ':port'"):
        wgquick.parse(f"[Interface]\nPrivateKey = {encode_key(KEY_A)}\n[Peer]\n"
                      f"PublicKey = {encode_key(public_key(KEY_B))}\nEndpoint = vpn.example.net\n")


def test_ipv6_without_brackets_is_refused_by_every_caller() -> None:
    d = Device(KEY_A)
    with pytest.raises(ConfigError, match="in brackets"):  # the Device took "fd00::1" as a host name
        d.add_peer(PeerConfig(public_key(KEY_B), endpoint_host="fd00::1"))
    with pytest.raises(ConfigError, match="in brackets"):
        schema.endpoint_parser(51820)("e", "fd00::1")
    with pytest.raises(uapi.UapiError, match="in brackets"):
        uapi.parse_endpoint("fd00::1:51820")
    with pytest.raises(ConfigError, match="in brackets"):
        relay_from_dict({"services": [{"name": "w", "listen": ["::1:80"],
                                       "backends": [{"host": "127.0.0.1", "port": 1}]}]})
    assert Route(name="r", target=("fd00::1", 80)).target == ("fd00::1", 80)  # the list form needs none


def test_uapi_takes_numeric_addresses_only_and_drops_a_zone() -> None:
    assert uapi.parse_endpoint("[fe80::1%eth0]:51820") == ("fe80::1", 51820)
    assert uapi.parse_endpoint("[::ffff:192.0.2.1]:51820") == ("192.0.2.1", 51820)  # was "::ffff:c000:201"
    with pytest.raises(uapi.UapiError, match="address must be an IP address"):
        uapi.parse_endpoint("vpn.example.net:51820")


def test_ingress_file_takes_the_text_form_and_the_old_list_form_alike() -> None:
    def doc(listen: object, target: object) -> dict:
        return {"listeners": [{"name": "web", "listen": listen, "default_route": "app",
                               "routes": [{"name": "app", "target": target}]}]}
    text = ingress_from_dict(doc("[::]:443", "app.lan:8443"))
    assert text == ingress_from_dict(doc(["::", 443], ["app.lan", 8443]))
    assert text.listeners[0].listen == ("::", 443) and text.listeners[0].routes[0].target == ("app.lan", 8443)
    assert ingress_to_dict(text)["listeners"][0]["listen"] == "[::]:443"
    assert ingress_from_dict(ingress_to_dict(text)) == text
    with pytest.raises(ConfigError, match=r"listeners\[0\].listen: \"app.lan:443\": address must be an IP"):
        ingress_from_dict(doc("app.lan:443", "app.lan:8443"))  # the ingress took any string, even to bind
    with pytest.raises(ConfigError, match="neither an IP address nor a DNS name"):
        ingress_from_dict(doc("[::]:443", ["bad host!", 80]))


def test_relay_file_takes_the_text_form_and_the_old_list_form_alike() -> None:
    def doc(listen: object) -> dict:
        return {"services": [{"name": "w", "listen": [listen], "backends": [{"host": "127.0.0.1", "port": 1}]}]}
    assert relay_from_dict(doc("[::1]:80")) == relay_from_dict(doc(["::1", 80]))
    assert relay_from_dict(doc("[::ffff:127.0.0.1]:80")).services[0].listen == (("127.0.0.1", 80),)


def test_join_token_endpoint_follows_the_same_rules() -> None:
    """The checksum only catches copying mistakes: a made-up token with a bad host must not reach home.toml."""
    tok = token.JoinToken(gateway_public_key=bytes(32), site_private_key=KEY_B, site_address="192.0.2.2/24",
                          gateway_address="192.0.2.1", endpoint=("vps.example.net", 51820), site_name="home")
    assert token.decode(token.encode(tok)).endpoint == ("vps.example.net", 51820)
    for bad in ("bad host!", "1.2.3.999", ""):
        with pytest.raises(ConfigError, match="join token: endpoint: "):
            token.decode(token.encode(dataclasses.replace(tok, endpoint=(bad, 51820))))


def test_schema_listen_takes_ips_and_tunnel_only_as_text() -> None:
    assert schema.p_listen("l", "tunnel:443") == ("tunnel", 443)
    assert schema.p_listen("l", "[::]:443") == ("::", 443)
    with pytest.raises(ConfigError, match=r"l: \"example.com:443\": address must be an IP address \(or 'tunnel'\)"):
        schema.p_listen("l", "example.com:443")
    with pytest.raises(ConfigError, match="must be a string"):
        schema.p_listen("l", ["0.0.0.0", 443])  # the list form is only for the standalone relay/ingress files


# -- the duplication cannot come back ----------------------------------------------------------------------------
# Text that splits or builds `host:port`, or unmaps IPv4-mapped addresses, outside hostport.py. Each allowed hit
# names why it is not host:port handling.
STRAY = re.compile("|".join([
    r"""r(?:split|partition)\(\s*["']:["']""",      # host, port = text.rsplit(":", 1)
    r"""\.split\(\s*["']:["']""",                    # text.split(":")[0]
    r"""partition\(\s*["']\]""",                     # text[1:].partition("]:")
    r"""["']\[["']\s*\+|f["']\[\{""",                # "[" + host + "]" / f"[{host}]:{port}"
    r"""startswith\(\s*["']::ffff:""",               # host[7:] when it starts with ::ffff:
    r"""ipv4_mapped""",
    r"""fullmatch\(r?["']\\\[""",                    # a regex for [v6]:port
]))
ALLOWED = {
    ("acme/client.py", "exc.typ.rsplit(':', 1)"): "an ACME error type URN (urn:ietf:params:acme:error:x)",
    ("config/schema.py", '("[" + prefix + "]"'): "a TOML table header in docs/config.md",
}


def test_no_stray_host_port_parsing_or_formatting_in_src() -> None:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel == "hostport.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if STRAY.search(line) and not any(rel == f and s in line for f, s in ALLOWED):
                found.append(f"{rel}:{n}: {line.strip()}")
    assert not found, "host:port handled outside wiregate.hostport (use parse/format/unmap):\n" + "\n".join(found)


def test_the_stray_check_would_see_each_old_form() -> None:
    old = ['host, _, port = text.rpartition(":")', 'ok = addr.split(":")[0] == CLIENT_IP',
           'host, sep, port = value[1:].partition("]:")', 'return f"[{host}]:{port}" if ":" in host else x',
           "Endpoint = {'[' + host + ']' if ':' in host else host}", 'if host.startswith("::ffff:") and "." in host:',
           "ip = ip.ipv4_mapped", r're.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:\[\]]*):(\d{1,5})", value)']
    assert all(STRAY.search(line) for line in old)

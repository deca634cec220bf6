"""wg-quick files: parsing, errors naming file:line and key, writing, key-file permissions."""

from __future__ import annotations

import base64
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wiregate.errors import ConfigError
from wiregate.wireguard import config as wgconf

PRIV = base64.b64encode(bytes(range(32))).decode()
PUB = base64.b64encode(bytes(range(1, 33))).decode()
PSK = base64.b64encode(bytes(range(2, 34))).decode()

SAMPLE = f"""
# a comment
[Interface]
privatekey = {PRIV}   # trailing comment
ListenPort=51820
Address = 198.51.100.1/24, fd00:51::1/64
Address = 198.51.100.9/32
MTU = 1380
DNS = 192.0.2.53

[peer]
PublicKey = {PUB}
PresharedKey = {PSK}
AllowedIPs = 198.51.100.2/32, fd00:51::2/128
AllowedIPs = 203.0.113.0/24
Endpoint = [fd00:0:2::2]:51821
PersistentKeepalive = 25

[Peer]
PublicKey = {PSK}
Endpoint = gw.example.org:51820
"""


def test_sample_file_is_read_with_case_insensitive_keys_and_repeated_lists():
    cfg = wgconf.parse(SAMPLE, "wg0.conf")
    assert cfg.private_key == bytes(range(32))
    assert cfg.listen_port == 51820
    assert cfg.addresses == ("198.51.100.1/24", "fd00:51::1/64", "198.51.100.9/32")
    assert cfg.mtu == 1380
    assert cfg.dns == ("192.0.2.53",)
    p1, p2 = cfg.peers
    assert p1.public_key == bytes(range(1, 33)) and p1.preshared_key == bytes(range(2, 34))
    assert p1.allowed_ips == ("198.51.100.2/32", "fd00:51::2/128", "203.0.113.0/24")
    assert p1.endpoint == ("fd00:0:2::2", 51821) and p1.persistent_keepalive == 25
    assert p2.endpoint == ("gw.example.org", 51820) and p2.allowed_ips == () and p2.preshared_key is None


def test_dns_is_ignored_with_a_note_naming_the_line():
    cfg = wgconf.parse(SAMPLE, "wg0.conf")
    assert any(n.startswith("wg0.conf:9:") and "DNS" in n for n in cfg.notes)


def test_written_file_reads_back_equal(tmp_path):
    cfg = wgconf.parse(SAMPLE, "wg0.conf")
    path = tmp_path / "out.conf"
    wgconf.write(path, cfg)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert wgconf.load(path) == cfg


@pytest.mark.parametrize("text, where", [
    (f"[Interface]\nPrivateKey = {PRIV}\nListenPort = 70000\n", "f.conf:3: ListenPort"),
    (f"[Interface]\nPrivateKey = {PRIV}\nColor = blue\n", "f.conf:3: Color: unknown key"),
    ("[Interface]\nPrivateKey = abc\n", "f.conf:2: PrivateKey"),
    (f"[Interface]\nPrivateKey = {PRIV}\n[Peer]\nPublicKey = {PUB}\nAllowedIPs = 10.0.0.0/33\n",
     "f.conf:5: AllowedIPs"),
    (f"[Interface]\nPrivateKey = {PRIV}\n[Peer]\nPublicKey = {PUB}\nEndpoint = 192.0.2.1\n", "f.conf:5: Endpoint"),
    (f"[Interface]\nPrivateKey = {PRIV}\n[Peer]\nPublicKey = {PUB}\nEndpoint = fd00::1:51820\n", "f.conf:5: Endpoint"),
    (f"[Interface]\nPrivateKey = {PRIV}\n[Peer]\nAllowedIPs = 198.51.100.2/32\n", "f.conf:3: [Peer] has no PublicKey"),
    ("ListenPort = 1\n", "f.conf:1: ListenPort: outside"),
    (f"[Interface]\nPrivateKey = {PRIV}\nFwMark = 0x1ffffffff\n", "f.conf:3: FwMark: out of range"),
    (f"[Interface]\nPrivateKey = {PRIV}\nFwMark = lots\n", "f.conf:3: FwMark: expected a number"),
    ("[Interface]\nListenPort = 1\n", "f.conf: [Interface] has no PrivateKey"),
    (f"[Interface]\nPrivateKey = {PRIV}\n[Peer]\nPublicKey = {PUB}\nPersistentKeepalive = -1\n",
     "f.conf:5: PersistentKeepalive"),
    (f"[Interface]\nPrivateKey = {PRIV}\n[Peer]\nPublicKey = {PUB}\n[Peer]\nPublicKey = {PUB}\n",
     "f.conf:5: PublicKey"),
    (f"[Interface]\nPrivateKey = {PRIV}\n[Tunnel]\n", "f.conf:3: unknown section"),
])
def test_errors_name_file_line_and_key(text, where):
    with pytest.raises(ConfigError) as exc:
        wgconf.parse(text, "f.conf")
    assert str(exc.value).startswith(where), str(exc.value)


def test_key_file_readable_by_group_or_world_is_refused(tmp_path):
    path = tmp_path / "wg0.conf"
    path.write_text(SAMPLE)
    for mode in (0o640, 0o604, 0o644):
        path.chmod(mode)
        with pytest.raises(ConfigError, match="chmod 600"):
            wgconf.load(path)
    path.chmod(0o600)
    assert wgconf.load(path).listen_port == 51820


def test_key_encoding_round_trips_and_rejects_wrong_length():
    key = os.urandom(32)
    assert wgconf.decode_key(wgconf.encode_key(key)) == key
    with pytest.raises(ConfigError, match="PublicKey"):
        wgconf.decode_key(base64.b64encode(bytes(31)).decode(), "PublicKey")


def test_table_off_disables_routes_and_round_trips(tmp_path):
    cfg = wgconf.parse(f"[Interface]\nPrivateKey = {PRIV}\nTable = off\n", "t.conf")
    assert cfg.routes is False and cfg.notes == ()
    path = tmp_path / "t.conf"
    wgconf.write(path, cfg)
    assert wgconf.load(path).routes is False
    other = wgconf.parse(f"[Interface]\nPrivateKey = {PRIV}\nTable = 1234\nPostUp = iptables -A x\n", "t.conf")
    assert other.routes is True and [n.split(":")[1] for n in other.notes] == ["3", "4"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(["[Interface]", "[Peer]", f"PrivateKey = {PRIV}", f"PublicKey = {PUB}",
                                           "AllowedIPs = 1.2.3.0/24,", "Endpoint = [::1]:1", "ListenPort = x",
                                           "MTU = 9", "# c", "=", "Endpoint = :5"]),
                          st.text(max_size=40)), max_size=15))
def test_any_text_parses_or_gives_a_config_error(lines):
    try:
        wgconf.parse("\n".join(lines), "f.conf")
    except ConfigError as exc:
        assert str(exc).startswith("f.conf")

"""wg-quick files: parsing, errors naming file:line and key, writing, key-file permissions."""

from __future__ import annotations

import base64
import os

import pytest

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
    (f"[Interface]\nPrivateKey = {PRIV}\n[Peer]\nPublicKey = {PUB}\nAllowedIPs = 10.0.0.0/33\n", "f.conf:5: AllowedIPs"),
    (f"[Interface]\nPrivateKey = {PRIV}\n[Peer]\nPublicKey = {PUB}\nEndpoint = 192.0.2.1\n", "f.conf:5: Endpoint"),
    (f"[Interface]\nPrivateKey = {PRIV}\n[Peer]\nPublicKey = {PUB}\nEndpoint = fd00::1:51820\n", "f.conf:5: Endpoint"),
    (f"[Interface]\nPrivateKey = {PRIV}\n[Peer]\nAllowedIPs = 198.51.100.2/32\n", "f.conf:3: [Peer] has no PublicKey"),
    (f"ListenPort = 1\n", "f.conf:1: ListenPort: outside"),
    (f"[Interface]\nListenPort = 1\n", "f.conf: [Interface] has no PrivateKey"),
    (f"[Interface]\nPrivateKey = {PRIV}\n[Peer]\nPublicKey = {PUB}\nPersistentKeepalive = -1\n",
     "f.conf:5: PersistentKeepalive"),
    (f"[Interface]\nPrivateKey = {PRIV}\n[Peer]\nPublicKey = {PUB}\n[Peer]\nPublicKey = {PUB}\n", "f.conf:5: PublicKey"),
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

"""Pairing: init gateway -> site add (join token) -> join, key files 0600, tokens with a version and checksum."""

from __future__ import annotations

import os
import stat

import pytest

from tests.system.conftest import wiregate
from wiregate.config import load, token
from wiregate.config.model import read_key
from wiregate.config.pairing import init_gateway, site_add
from wiregate.errors import ConfigError
from wiregate.wireguard import keys


def _tok(**kw) -> token.JoinToken:
    base = dict(gateway_public_key=bytes(range(32)), site_private_key=bytes(range(32, 64)),
                site_address="192.0.2.7/24", gateway_address="192.0.2.1", endpoint=("vps.example.net", 51820),
                site_name="cabin")
    base.update(kw)
    return token.JoinToken(**base)


def test_token_round_trips_ipv4_and_ipv6():
    for tok in (_tok(), _tok(site_address="fd00::2/64", gateway_address="fd00::1", endpoint=("2001:db8::1", 4))):
        text = token.encode(tok)
        assert text.startswith("wgj1.") and "=" not in text and len(text) < 200
        assert token.decode(text) == tok


@pytest.mark.parametrize("mangle,expected", [
    (lambda t: t[:-6], "checksum mismatch"),
    (lambda t: t[:40], "too short"),
    (lambda t: t[:12] + ("A" if t[12] != "A" else "B") + t[13:], "checksum mismatch"),
    (lambda t: "wgj2." + t[5:], "version '2' is not supported"),
    (lambda t: t[5:], "does not start with 'wgj1.'"),
    (lambda t: t + "!!", "not base64url"),
    (lambda t: "wgj1.AAAA", "too short"),
])
def test_damaged_token_is_refused_with_the_reason(mangle, expected):
    text = token.encode(_tok())
    with pytest.raises(ConfigError, match=expected) as exc:
        token.decode(mangle(text))
    assert text[5:25] not in str(exc.value)  # the secret token is not echoed


def test_token_repr_hides_the_private_key():
    tok = _tok()
    assert repr(bytes(range(32, 64))) not in repr(tok) and "site_private_key" not in repr(tok)


def test_init_site_add_join_pair_matching_keys(tmp_path):
    gw_dir, home_dir = tmp_path / "gw", tmp_path / "home"
    r = wiregate("init", "gateway", "--endpoint", "vps.example.net:4500", "--config-dir", str(gw_dir))
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE((gw_dir / "gateway.key").stat().st_mode) == 0o600
    r = wiregate("site", "add", "home", "--config-dir", str(gw_dir))
    assert r.returncode == 0, r.stderr
    tok_text = r.stdout.strip()
    assert tok_text.startswith("wgj1.") and "join token" in r.stderr
    r = wiregate("site", "add", "cabin", "--config-dir", str(gw_dir), "--token-only")
    cabin = token.decode(r.stdout.strip())
    r = wiregate("join", "-", "--config-dir", str(home_dir), input=tok_text + "\n")
    assert r.returncode == 0, r.stderr
    gw, home = load(gw_dir / "gateway.toml"), load(home_dir / "home.toml")
    assert [(s.name, s.address) for s in gw.sites] == [("home", "192.0.2.2"), ("cabin", "192.0.2.3")]
    assert cabin.site_address == "192.0.2.3/24"
    assert gw.tunnel.endpoint == ("vps.example.net", 4500) and gw.tunnel.listen_port == 4500
    assert home.tunnel.gateway_endpoint == ("vps.example.net", 4500)
    assert home.tunnel.address == "192.0.2.2/24" and home.tunnel.gateway_address == "192.0.2.1"
    assert stat.S_IMODE((home_dir / "home.key").stat().st_mode) == 0o600
    home_priv = read_key(home.tunnel.private_key_file)
    gw_priv = read_key(gw.tunnel.private_key_file)
    assert keys.encode_key(keys.public_key(home_priv)) == gw.sites[0].public_key
    assert keys.encode_key(keys.public_key(gw_priv)) == home.tunnel.gateway_public_key
    # the site's private key is in the token only, never in the gateway's files
    for f in gw_dir.iterdir():
        assert keys.encode_key(home_priv) not in f.read_text()


def test_site_add_keeps_comments_and_refuses_a_duplicate(tmp_path):
    path = init_gateway(tmp_path, "203.0.113.5")
    site_add(path, "home")
    before = path.read_text()
    assert "# Sites are appended below" in before
    with pytest.raises(ConfigError, match='NAME: "home": is already a site'):
        site_add(path, "home")
    with pytest.raises(ConfigError, match='--address: "198.51.100.2": is outside the tunnel prefix'):
        site_add(path, "cabin", address="198.51.100.2")
    assert path.read_text() == before


def test_site_add_leaves_a_file_it_cannot_extend_unchanged(tmp_path):
    path = init_gateway(tmp_path, "203.0.113.5")
    original = path.read_text() + "sites = []\n"  # legal alone, clashes with an appended [[sites]]
    path.write_text(original)
    with pytest.raises(ConfigError):
        site_add(path, "home")
    assert path.read_text() == original


def test_init_refuses_to_overwrite_a_key_without_force(tmp_path):
    init_gateway(tmp_path, "203.0.113.5")
    key = (tmp_path / "gateway.key").read_text()
    r = wiregate("init", "gateway", "--endpoint", "203.0.113.5", "--config-dir", str(tmp_path))
    assert r.returncode == 2 and "exists already; use --force" in r.stderr and "Traceback" not in r.stderr
    assert (tmp_path / "gateway.key").read_text() == key


def test_group_readable_key_is_refused_by_site_add(tmp_path):
    path = init_gateway(tmp_path, "203.0.113.5")
    os.chmod(tmp_path / "gateway.key", 0o644)
    with pytest.raises(ConfigError, match="mode 0644 .*chmod 600"):
        site_add(path, "home")


def test_bad_endpoint_is_named(tmp_path):
    r = wiregate("init", "gateway", "--endpoint", "vps:0", "--config-dir", str(tmp_path))
    assert r.returncode == 2 and 'error: --endpoint: "vps:0": port out of range' in r.stderr


def test_join_with_damaged_token_writes_nothing(tmp_path):
    r = wiregate("join", "wgj1." + "A" * 120,
                 "--config-dir", str(tmp_path / "h"))
    assert r.returncode == 2 and "checksum mismatch" in r.stderr
    assert not (tmp_path / "h").exists()

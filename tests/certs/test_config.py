"""The home [acme] table and the ACME route keys, on files as `wiregate join` writes them, through `wiregate check`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.system.conftest import wiregate
from wiregate.config import load, pairing
from wiregate.errors import ConfigError

ACME = """
[acme]
email = "admin@example.org"
agree_tos = true
"""

ROUTE = """
[[listeners]]
name = "https"
listen = "tunnel:443"

[[listeners.routes]]
name = "app"
sni = ["app.example.org"]
target = "127.0.0.1:8080"
tls = "acme"
"""


@pytest.fixture
def home(tmp_path: Path) -> Path:
    pairing.init_gateway(tmp_path / "gw", "vps.example.net:51820")
    tok = pairing.site_add(tmp_path / "gw" / pairing.GATEWAY_FILE, "home").token
    return pairing.join(tok, tmp_path / "home")


def _with(home: Path, text: str) -> Path:
    home.write_text(home.read_text() + text)
    return home


def _error(home: Path, text: str) -> str:
    _with(home, text)
    with pytest.raises(ConfigError) as e:
        load(home)
    return str(e.value)


def test_acme_defaults_and_paths_from_the_config_dir(home):
    cfg = load(_with(home, ROUTE + ACME))
    a = cfg.acme
    assert a is not None
    assert a.directory == "https://acme-v02.api.letsencrypt.org/directory"
    assert a.key_type == "ec256" and a.challenge == "tls-alpn-01" and a.dns_provider == "gateway"
    assert a.account_key_file == home.parent / "acme-account.key"
    assert a.storage_dir == home.parent / "acme" and a.ca_bundle is None and a.rfc2136 is None
    (r,) = cfg.listeners[0].routes
    assert r.tls == "acme" and r.acme and r.acme_challenge == ""


def test_a_file_without_acme_has_none(home):
    assert load(home).acme is None


@pytest.mark.parametrize("extra,expected", [
    (ROUTE, "asks for an ACME certificate but the file has no [acme] table"),
    (ROUTE + ACME.replace("agree_tos = true", "agree_tos = false"), "acme.agree_tos: false: must be true"),
    (ROUTE.replace('sni = ["app.example.org"]', 'sni = ["*.example.org"]') + ACME,
     'sni: "*.example.org": a wildcard certificate needs dns-01'),
    (ROUTE.replace('sni = ["app.example.org"]\n', "") + ACME, "sni: []: an ACME certificate is for the route's sni"),
    (ROUTE.replace('tls = "acme"', 'tls = "acme"\ntls_cert = "c.pem"\ntls_key = "k.pem"') + ACME,
     'tls: "acme": a route takes its certificate from tls_cert/tls_key or from ACME, not both'),
    (ROUTE.replace('tls = "acme"', 'tls = "letsencrypt"') + ACME, 'tls: "letsencrypt": must be one of , acme'),
    (ROUTE + ACME + 'key_type = "ed25519"\n', 'acme.key_type: "ed25519": must be one of ec256, rsa2048'),
    (ROUTE + ACME + 'challenge = "tls-sni-01"\n', 'acme.challenge: "tls-sni-01": must be one of'),
    (ROUTE + ACME + 'directory = "ftp://ca"\n', 'acme.directory: "ftp://ca": must be an https:// URL'),
    (ROUTE + ACME + 'challenge = "dns-01"\ndns_provider = "rfc2136"\n',
     'acme.rfc2136: dns_provider = "rfc2136" needs [acme.rfc2136]'),
    (ROUTE.replace('tls = "acme"', 'acme_cert_file = "app.pem"') + ACME,
     "acme_cert_file and acme_key_file go together"),
    (ROUTE.replace('tls = "acme"', 'acme_deploy_hook = "systemctl reload nginx"') + ACME,
     "acme_deploy_hook: \"systemctl reload nginx\": needs acme_cert_file"),
    (ROUTE.replace('tls = "acme"', 'acme_challenge = "http-01"') + ACME, 'needs tls = "acme" or acme_cert_file'),
    (ROUTE + ACME + "emial = \"x\"\n", "acme.emial: unknown key"),
    (ROUTE + ROUTE.split("[[listeners.routes]]")[1].replace('name = "app"', 'name = "app2"')
     .replace('tls = "acme"', 'tls = "acme"\nacme_challenge = "http-01"').join(["[[listeners.routes]]", ""]) + ACME,
     "listeners[0].routes[1].acme_challenge: \"http-01\": route 'app' asks for the same names with tls-alpn-01"),
])
def test_bad_acme_config_is_one_line_naming_key_and_value(home, extra, expected):
    msg = _error(home, extra)
    assert expected in msg and "\n" not in msg


def test_passthrough_route_with_files_and_hook(home):
    cfg = load(_with(home, ROUTE.replace('tls = "acme"', 'acme_cert_file = "certs/app.pem"\n'
                                          'acme_key_file = "certs/app.key"\n'
                                          'acme_deploy_hook = "systemctl reload nginx"\nacme_challenge = "http-01"')
                     + ACME))
    (r,) = cfg.listeners[0].routes
    assert r.acme and r.tls == "" and r.acme_cert_file == home.parent / "certs/app.pem"
    assert r.acme_deploy_hook == "systemctl reload nginx" and r.acme_challenge == "http-01"


def test_wiregate_check_validates_acme_and_refuses_a_readable_account_key(home):
    _with(home, ROUTE + ACME)
    r = wiregate("check", str(home))
    assert r.returncode == 0, r.stdout + r.stderr
    key = home.parent / "acme-account.key"
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    os.chmod(key, 0o644)
    r = wiregate("check", str(home))
    # key-file errors follow check's one convention (stderr, exit status 2), like config errors
    assert r.returncode == 2 and "acme.account_key_file" in r.stderr and "0644" in r.stderr
    home.write_text(home.read_text().replace("agree_tos = true", "agree_tos = false"))
    r = wiregate("check", str(home))
    assert r.returncode != 0 and "acme.agree_tos: false" in (r.stdout + r.stderr)
    assert "Traceback" not in r.stderr


def test_routes_of_the_same_name_on_two_listeners_keep_their_own_certificates(home):
    from wiregate.acme.manager import specs_from_config

    lan = ROUTE.replace('name = "https"', 'name = "lan"').replace('"tunnel:443"', '"0.0.0.0:8443"') \
        .replace('"app.example.org"', '"lan.example.org"')
    cfg = load(_with(home, ROUTE + lan + ACME))
    specs = {s.names: s.routes for s in specs_from_config(cfg)}
    assert specs == {("app.example.org",): ("https/app",), ("lan.example.org",): ("lan/app",)}

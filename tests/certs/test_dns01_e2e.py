"""DNS-01 through `wiregate run`: the home's ACME manager itself obtains a wildcard certificate from pebble, the
challenge answered (a) by the gateway's DNS responder, BIND 9 holding the user's zone with the CNAME and the
delegation, or (b) by BIND 9 itself through RFC 2136 updates signed with a TSIG key; then a real client verifies
the certificate with pebble's root. A wrong TSIG key gives one clear line and the home keeps running."""

from __future__ import annotations

import sys

import pytest

from tests.certs.conftest import AcmeLab
from tests.certs.test_e2e import HOLD, _chain_verifies, _root
from wiregate.testing.dns import TsigKey, dig
from wiregate.testing.peers import need
from wiregate.testing.system import CLIENT_IP, VPS_PUBLIC_IP, wait_for

pytestmark = [pytest.mark.netns, pytest.mark.peer, pytest.mark.timeout(180)]

WILDCARD = """
[[listeners]]
name = "https"
listen = "{listen}"

[[listeners.routes]]
name = "org"
sni = ["*.example.org", "example.org"]
target = "127.0.0.1:7007"
send_proxy = "v2"
tls = "acme"
"""


def _names(chain) -> list[str]:
    from cryptography import x509

    leaf = x509.load_pem_x509_certificates(chain.read_bytes())[0]
    return sorted(leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                  .get_values_for_type(x509.DNSName))


def test_home_gets_a_wildcard_certificate_through_the_gateway_dns_responder(lab, tmp_path):
    need("named", "dig")
    al = AcmeLab(lab, tmp_path, home=WILDCARD.format(listen="tunnel:443"), dns01=True,
                 acme_extra='challenge = "dns-01"\ndns_provider = "gateway"\n', acme_names=("*.example.org",))
    sl = al.sl
    sl.start_home()
    al.wait_issued(1)
    (c,) = al.certificates()
    assert c["names"] == ["*.example.org", "example.org"] and c["challenge"] == "dns-01", c
    root = _root(al, tmp_path)
    (chain,) = (sl.home_dir / "acme").glob("*/fullchain.pem")
    assert _names(chain) == ["*.example.org", "example.org"]
    _chain_verifies(chain, root, "a.example.org")
    # pebble's validation went through BIND (the CNAME, the delegation) to the gateway, which answered
    st = sl.status("gateway")["acme_dns"]
    assert st["queries"]["answered"] >= 1 and st["publish"]["published"] >= 1 and st["publish"]["refused"] == 0
    assert st["records"] == []  # cleared after the order
    # a resolver now follows the CNAME to no value (BIND caches for at most 1 s)
    wait_for(lambda: not [a for a in dig(sl.client, CLIENT_IP, "_acme-challenge.example.org", "TXT",
                                         recurse=True)[1] if a.startswith("TXT")], 15, 0.5)
    # a real client through the gateway, SNI a.example.org (covered by the wildcard), pebble's root as CA
    r = sl.client.run([sys.executable, "-c", HOLD, root, VPS_PUBLIC_IP, "a.example.org"], input="", check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[1].startswith(f"echo client {CLIENT_IP}:")
    # the certificate key exists only at home
    key = next((sl.home_dir / "acme").glob("*/privkey.pem")).read_bytes()
    found = [p for p in tmp_path.rglob("*") if p.is_file() and p.stat().st_size < 65536 and p.read_bytes() == key]
    assert found and all(sl.home_dir in p.parents for p in found), found


RFC2136 = """
challenge = "dns-01"
dns_provider = "rfc2136"

[acme.rfc2136]
server = "{server}:53"
zone = "example.org"
tsig_key_name = "{key}"
tsig_algorithm = "hmac-sha256"
tsig_secret_file = "tsig.key"
"""

# In the home namespace (the LAN): TLS to the ingress's LAN listener, verified with pebble's root.
LAN = r"""
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
with ctx.wrap_socket(socket.create_connection(("127.0.0.1", 9443), timeout=10), server_hostname=sys.argv[2]) as s:
    print(s.recv(200).decode().strip())
"""


def test_home_gets_a_wildcard_certificate_for_a_lan_only_name_through_rfc2136(lab, tmp_path):
    need("named", "dig")
    key = TsigKey.new("wiregate-home.")
    # the names are on a LAN listener only: nothing of them is reachable from the internet
    al = AcmeLab(lab, tmp_path, home=WILDCARD.format(listen="127.0.0.1:9443"), dns01=True,
                 acme_extra=RFC2136.format(server=CLIENT_IP, key=key.name), tsig=key)
    sl = al.sl
    key.write_secret(sl.home_dir / "tsig.key")
    sl.start_home()
    al.wait_issued(1)
    (chain,) = (sl.home_dir / "acme").glob("*/fullchain.pem")
    assert _names(chain) == ["*.example.org", "example.org"]
    root = _root(al, tmp_path)
    _chain_verifies(chain, root, "nas.example.org")
    r = sl.home.run([sys.executable, "-c", LAN, root, "nas.example.org"], check=False)
    assert r.returncode == 0 and r.stdout.startswith("echo client 127.0.0.1:"), r.stderr
    assert key.secret not in sl.log_tail("home", 1 << 20)
    # the update went to BIND, and the cleanup removed the record again
    assert dig(sl.client, CLIENT_IP, "_acme-challenge.example.org", "TXT")[1] == []


def test_a_wrong_tsig_key_gives_one_clear_line_and_the_home_keeps_running(lab, tmp_path):
    need("named", "dig")
    key = TsigKey.new("wiregate-home.")
    home = WILDCARD.format(listen="127.0.0.1:9443") + """
[[listeners]]
name = "pub"
listen = "tunnel:443"

[[listeners.routes]]
name = "app"
sni = ["app.example"]
target = "127.0.0.1:7007"
send_proxy = "v2"
tls = "acme"
acme_challenge = "tls-alpn-01"
"""
    al = AcmeLab(lab, tmp_path, home=home, dns01=True, acme_extra=RFC2136.format(server=CLIENT_IP, key=key.name),
                 tsig=key)
    sl = al.sl
    wrong = TsigKey.new("wiregate-home.")
    wrong.write_secret(sl.home_dir / "tsig.key")
    sl.start_home()

    al.wait_issued_and_failed("app.example", "*.example.org")
    log = sl.log_tail("home", 1 << 20)
    lines = [ln for ln in log.splitlines() if "acme: certificate for *.example.org,example.org failed" in ln]
    print("\n" + lines[0])
    assert len(lines) == 1 and "TSIG key refused" in lines[0] and "example.org" in lines[0], lines
    assert "no certificate yet" in lines[0] and "retry in" in lines[0]
    assert "Traceback" not in log and wrong.secret not in log and key.secret not in log
    # the home keeps running: the other name was issued and is served through the gateway
    root = _root(al, tmp_path)
    r = sl.client.run([sys.executable, "-c", HOLD, root, VPS_PUBLIC_IP, "app.example"], input="", check=False)
    assert r.returncode == 0 and r.stdout.splitlines()[1].startswith(f"echo client {CLIENT_IP}:"), r.stderr
    assert sl.home_proc is not None and sl.home_proc.poll() is None

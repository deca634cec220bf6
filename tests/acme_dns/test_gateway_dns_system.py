"""Gateway-answered DNS-01 through the whole system: a real BIND 9 in the "internet" holds the user's zone with the
CNAME that `wiregate acme-dns records` printed and delegates the challenge zone to the gateway; the home publishes
over the real tunnel; a recursive query through named follows the CNAME to the gateway's answer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from wiregate.testing.dns import Named, dig, zone_text
from wiregate.testing.peers import need, which
from wiregate.testing.system import CLIENT_IP, VPS_IP, VPS_PUBLIC_IP, SystemLab, wait_for

pytestmark = [pytest.mark.netns, pytest.mark.peer, pytest.mark.timeout(150)]

ZONE = "acme.vps.example.net"
V1, V2 = "gw" + "1" * 41, "gw" + "2" * 41

PUBLISH = r"""
import asyncio, json, sys
from wiregate.acme.dns01 import GatewayLink, make_publisher
from wiregate.config import load
from wiregate.errors import WiregateError
from types import SimpleNamespace
cfg = load(sys.argv[1])
pub = make_publisher(SimpleNamespace(dns_provider="gateway"), cfg.path.parent, gateway=GatewayLink.for_home(cfg))
out = {}
for op, domain, values in json.loads(sys.argv[2]):
    try:
        asyncio.run(pub.publish(domain, values) if op == "publish" else pub.clear(domain))
        out[f"{op} {domain}"] = "ok"
    except WiregateError as e:
        out[f"{op} {domain}"] = str(e)
print(json.dumps(out))
"""


def publish(sl: SystemLab, *ops) -> dict[str, str]:
    r = sl.home.run([sys.executable, "-c", PUBLISH, str(sl.home_file), json.dumps(ops)], check=False, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def gateway_with_named(lab, tmp_path) -> tuple[SystemLab, Named, str, str]:
    """Both sides running with [acme_dns] on the gateway, the site allowed *.example.org, and named in the
    "internet" (client namespace) holding the two records `wiregate acme-dns records` printed at home."""
    sl = SystemLab(lab, tmp_path / "sys")
    sl.pair()
    text = sl.gateway_file.read_text()
    assert 'name = "home"\n' in text
    sl.gateway_file.write_text(text.replace('name = "home"\n', 'name = "home"\nacme_names = ["*.example.org"]\n', 1)
                               + f'\n[acme_dns]\nzone = "{ZONE}"\nnameserver = "vps.example.net"\n'
                               f'listen = ["{VPS_PUBLIC_IP}:53"]\n')
    sl.start_gateway()
    sl.start_home()

    # what the user runs at home to learn the two records (the gateway answers over the tunnel)
    def records():
        r = sl.home.run([sys.executable, "-m", "wiregate", "acme-dns", "records", str(sl.home_file)], check=False)
        return r.stdout if r.returncode == 0 else None
    wait_for(lambda: records() is not None, 30, 0.5)
    lines = [ln for ln in records().splitlines() if ln and not ln.startswith(";")]
    ns_line = next(ln for ln in lines if " IN NS " in ln)
    cname_line = next(ln for ln in lines if " IN CNAME " in ln)
    assert ns_line == f"{ZONE}.  IN NS  vps.example.net."
    assert cname_line.startswith("_acme-challenge.example.org.  IN CNAME  ") and cname_line.endswith(f".{ZONE}.")

    # the "internet": named in the client namespace, authoritative for the user's zone and the VPS's zone,
    # recursive for its clients; the user pasted the two lines into their zones
    net = zone_text("example.net", {"ns1": CLIENT_IP}, f"vps IN A {VPS_PUBLIC_IP}\n{ns_line}")
    org = zone_text("example.org", {"ns1.example.net.": ""}, cname_line)
    named = Named(lab, sl.client, tmp_path / "named", CLIENT_IP, zones={"example.net": net, "example.org": org},
                  recursion=True)
    named.start()
    return sl, named, ns_line, cname_line


def test_gateway_answers_dns01_through_a_delegation_and_refuses_other_names(lab, tmp_path):
    need("named", "dig")
    sl, named, _, cname_line = gateway_with_named(lab, tmp_path)
    got = publish(sl, ("publish", "*.example.org", [V1, V2]), ("publish", "www.example.org", [V1]),
                  ("publish", "evil.example.com", [V1]), ("publish", "a.b.example.org", [V1]))
    assert got["publish *.example.org"] == "ok" and got["publish www.example.org"] == "ok"
    assert got["publish evil.example.com"] == ("evil.example.com: DNS-01 via the gateway: refused: evil.example.com: "
                                               "not in the acme_names of site home on the gateway")
    assert "not in the acme_names" in got["publish a.b.example.org"]
    gw_log = sl.log_tail("gateway", 20000)
    assert "acme-dns publish: site home: evil.example.com refused: not in the acme_names" in gw_log

    # a resolver's view (what the CA does): CNAME at the user's zone, then the delegated zone's TXT at the gateway
    status, answers = dig(sl.client, CLIENT_IP, "_acme-challenge.example.org", "TXT", recurse=True)
    assert status == "NOERROR", named.log()[-2000:]
    assert answers[0] == "CNAME " + cname_line.split()[-1]
    assert sorted(answers[1:]) == sorted([f'TXT "{V1}"', f'TXT "{V2}"'])
    # www has no CNAME at the user's zone yet: the gateway holds it, but nobody is sent there
    assert dig(sl.client, CLIENT_IP, "_acme-challenge.www.example.org", "TXT", recurse=True)[0] == "NXDOMAIN"

    # the gateway is no open resolver: names outside its zone are refused, recursion or not
    assert dig(sl.client, VPS_PUBLIC_IP, "example.org", "SOA", recurse=True) == ("REFUSED", [])
    assert dig(sl.client, VPS_PUBLIC_IP, ZONE, "NS") == ("NOERROR", ["NS vps.example.net."])

    # the publish channel answers only on the tunnel: from the internet it is closed even when routed to
    sl.client.run(["ip", "route", "add", "192.0.2.1/32", "via", VPS_PUBLIC_IP])
    r = sl.client.run([sys.executable, "-c", "import socket; socket.create_connection(('192.0.2.1', 51818), 5)"],
                      check=False)
    assert "ConnectionRefusedError" in r.stderr, r.stderr

    st = sl.status("gateway")["acme_dns"]
    assert st["publish"]["refused"] == 2 and st["publish"]["published"] == 2
    assert sorted(e["name"] for e in st["records"]) == ["example.org", "www.example.org"]
    shown = sl.vps.run([sys.executable, "-m", "wiregate", "status", str(sl.dir / "gw.ctl")]).stdout
    assert f"acme-dns: zone {ZONE}: queries answered " in shown and "site home example.org: 2 value(s)" in shown

    # granting a name on the gateway applies on reload, without a restart
    text = sl.gateway_file.read_text()
    sl.gateway_file.write_text(text.replace('acme_names = ["*.example.org"]',
                                            'acme_names = ["*.example.org", "evil.example.com"]'))
    from wiregate.control import request
    assert request(sl.dir / "gw.ctl", {"cmd": "reload"})["ok"]
    assert publish(sl, ("publish", "evil.example.com", [V2])) == {"publish evil.example.com": "ok"}

    assert publish(sl, ("clear", "example.org", [])) == {"clear example.org": "ok"}
    wait_for(lambda: dig(sl.client, CLIENT_IP, "_acme-challenge.example.org", "TXT", recurse=True)[0] == "NXDOMAIN",
             15, 0.5)


# An ACME client (certbot's `acme` library) at home: order example.org + *.example.org from pebble, publish the
# DNS-01 values through the gateway (make_publisher, as the ACME core calls it), answer, finalize.
ACME_CLIENT = r"""
import asyncio, datetime, json, sys, time
from types import SimpleNamespace
import josepy as jose
from acme import challenges, client, crypto_util, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from wiregate.acme.dns01 import GatewayLink, make_publisher
from wiregate.config import load
home_file, directory_url, ca, roots_url = sys.argv[1:5]
t0 = time.monotonic()
account = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
net = client.ClientNetwork(account, alg=jose.ES256, verify_ssl=ca, user_agent="wiregate-test")
acme = client.ClientV2(client.ClientV2.get_directory(directory_url, net), net=net)
acme.new_account(messages.NewRegistration.from_data(email="admin@example.org", terms_of_service_agreed=True))
key = ec.generate_private_key(ec.SECP256R1()).private_bytes(serialization.Encoding.PEM,
    serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
order = acme.new_order(crypto_util.make_csr(key, ["example.org", "*.example.org"]))
values, todo = {}, []
for authz in order.authorizations:
    ch = next(c for c in authz.body.challenges if isinstance(c.chall, challenges.DNS01))
    values.setdefault(authz.body.identifier.value, []).append(ch.chall.validation(account))
    todo.append(ch)
cfg = load(home_file)
pub = make_publisher(SimpleNamespace(dns_provider="gateway"), cfg.path.parent, gateway=GatewayLink.for_home(cfg))
for domain, vals in values.items():
    asyncio.run(pub.publish(domain, vals))
for ch in todo:
    acme.answer_challenge(ch, ch.chall.response(account))
order = acme.poll_and_finalize(order, datetime.datetime.now() + datetime.timedelta(seconds=60))
for domain in values:
    asyncio.run(pub.clear(domain))
root = net.session.get(roots_url, verify=ca, timeout=10).text
print(json.dumps({"chain": order.fullchain_pem, "root": root, "values": values,
                  "seconds": round(time.monotonic() - t0, 2)}))
"""


def _pebble_cert(tmp: Path, ip: str) -> tuple[Path, Path]:
    """pebble's own HTTPS certificate (self-signed, for its IP), which the ACME client trusts."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pebble test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "pebble-cert.pem", tmp / "pebble-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def test_pebble_issues_a_wildcard_certificate_through_the_gateway_responder(lab, tmp_path):
    need("named", "dig", "pebble", "openssl")
    pytest.importorskip("acme")
    sl, _, _, _ = gateway_with_named(lab, tmp_path)
    # the home reaches the CA through the VPS, as through the internet
    sl.vps.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    sl.home.run(["ip", "route", "add", "203.0.113.0/24", "via", VPS_IP])
    sl.client.run(["ip", "route", "add", "198.51.100.0/24", "via", VPS_PUBLIC_IP])
    cert, key = _pebble_cert(tmp_path, CLIENT_IP)
    conf = tmp_path / "pebble.json"
    conf.write_text(json.dumps({"pebble": {
        "listenAddress": f"{CLIENT_IP}:14000", "managementListenAddress": f"{CLIENT_IP}:15000",
        "certificate": str(cert), "privateKey": str(key), "httpPort": 5002, "tlsPort": 5001,
        "ocspResponderURL": "", "externalAccountBindingRequired": False}}))
    with open(tmp_path / "pebble.log", "wb") as log:
        proc = lab.spawn(sl.client, ["env", "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", which("pebble"),
                                     "-config", str(conf), "-dnsserver", f"{CLIENT_IP}:53"], stdout=log,
                         stderr=subprocess.STDOUT)
    wait_for(lambda: proc.poll() is None and b"Listening on" in (tmp_path / "pebble.log").read_bytes(), 20, 0.1)
    r = sl.home.run([sys.executable, "-c", ACME_CLIENT, str(sl.home_file), f"https://{CLIENT_IP}:14000/dir",
                     str(cert), f"https://{CLIENT_IP}:15000/roots/0"], check=False, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:] + (tmp_path / "pebble.log").read_text()[-3000:]
    out = json.loads(r.stdout)
    assert list(out["values"]) == ["example.org"] and len(out["values"]["example.org"]) == 2  # both authzs
    print(f"DNS-01 through the gateway: wildcard certificate issued in {out['seconds']} s")
    # the chain verifies against pebble's root (from its management endpoint) and names both
    pems = out["chain"].split("-----END CERTIFICATE-----")
    leaf = tmp_path / "leaf.pem"
    leaf.write_text(pems[0] + "-----END CERTIFICATE-----\n")
    (tmp_path / "rest.pem").write_text("-----END CERTIFICATE-----".join(pems[1:]))
    (tmp_path / "root.pem").write_text(out["root"])
    v = subprocess.run([which("openssl"), "verify", "-CAfile", str(tmp_path / "root.pem"), "-untrusted",
                        str(tmp_path / "rest.pem"), str(leaf)], capture_output=True, text=True, check=False)
    assert v.returncode == 0 and v.stdout.strip().endswith(": OK"), v.stdout + v.stderr
    text = subprocess.run([which("openssl"), "x509", "-in", str(leaf), "-noout", "-ext", "subjectAltName"],
                          capture_output=True, text=True, check=True).stdout
    assert "DNS:*.example.org" in text and "DNS:example.org" in text
    # pebble's validations went through named to the gateway, which answered (named may cache for 1 s)
    st = sl.status("gateway")["acme_dns"]
    assert st["queries"]["answered"] >= 1 and st["publish"]["published"] == 1 and st["records"] == []

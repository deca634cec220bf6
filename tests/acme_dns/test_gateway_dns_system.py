"""Gateway-answered DNS-01 through the whole system: a real BIND 9 in the "internet" holds the user's zone with the
CNAME that `wiregate acme-dns records` printed and delegates the challenge zone to the gateway; the home publishes
over the real tunnel; a recursive query through named follows the CNAME to the gateway's answer."""

from __future__ import annotations

import json
import sys

import pytest

from wiregate.testing.dns import Named, dig, zone_text
from wiregate.testing.peers import need
from wiregate.testing.system import CLIENT_IP, VPS_PUBLIC_IP, SystemLab, wait_for

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


def test_gateway_answers_dns01_through_a_delegation_and_refuses_other_names(lab, tmp_path):
    need("named", "dig")
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

    assert publish(sl, ("clear", "example.org", [])) == {"clear example.org": "ok"}
    wait_for(lambda: dig(sl.client, CLIENT_IP, "_acme-challenge.example.org", "TXT", recurse=True)[0] == "NXDOMAIN",
             15, 0.5)

"""Rfc2136Publisher against a real BIND 9: TSIG-signed updates, waiting for every authoritative server, clear,
and the one clear error for a wrong TSIG key. The publisher runs in a client namespace; `dig` checks the result."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from wiregate.testing.dns import Named, TsigKey, dig, zone_text
from wiregate.testing.peers import need

pytestmark = [pytest.mark.netns, pytest.mark.peer]

PRIMARY, SECONDARY, CLIENT = "198.51.100.53", "198.51.100.54", "198.51.100.10"
V1, V2 = "x" * 43, "Yz_-" + "k" * 39

# what the ACME core does: make_publisher from the [acme] table, then publish/clear (AcmeConfig-like objects)
SCRIPT = r"""
import asyncio, json, logging, sys
from pathlib import Path
from types import SimpleNamespace
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
from wiregate.acme.dns01 import make_publisher
from wiregate.errors import WiregateError
a = json.loads(sys.argv[1])
acme = SimpleNamespace(dns_provider="rfc2136", rfc2136=SimpleNamespace(**a["rfc2136"]))
async def main():
    pub = make_publisher(acme, Path(a["dir"]), gateway=None)
    pub.timeout = a.get("timeout", pub.timeout)
    if a["op"] == "publish":
        await pub.publish(a["domain"], a["values"])
    else:
        await pub.clear(a["domain"])
try:
    asyncio.run(main())
    print("ok")
except WiregateError as e:
    print("error:", e)
"""


def run_publisher(lab_ns, tmp: Path, secret_file: str, op: str, domain: str, values=(), key_name: str = "wiregate.",
                  timeout: float = 20.0):
    args = {"dir": str(tmp), "op": op, "domain": domain, "values": list(values), "timeout": timeout,
            "rfc2136": {"server": f"{PRIMARY}:53", "zone": "example.org", "tsig_key_name": key_name,
                        "tsig_algorithm": "hmac-sha256", "tsig_secret_file": secret_file}}
    r = lab_ns.run([sys.executable, "-c", SCRIPT, json.dumps(args)], check=False, timeout=60)
    return r.stdout.strip(), r.stderr


@pytest.fixture
def bind(lab, tmp_path):
    need("named", "dig")
    dns_ns, client = lab.netns("d"), lab.netns("c")
    lab.link(client, f"{CLIENT}/24", dns_ns, f"{PRIMARY}/24")
    dns_ns.run(["ip", "addr", "add", f"{SECONDARY}/32", "dev", "lo"])
    key = TsigKey.new("wiregate.")
    zone = zone_text("example.org", {"ns1": PRIMARY, "ns2": SECONDARY}, "www IN A 192.0.2.80")
    primary = Named(lab, dns_ns, tmp_path / "primary", PRIMARY, zones={"example.org": zone}, tsig=key,
                    update_zones=("example.org",), notify_to=(SECONDARY,),
                    update_names=("_acme-challenge.example.org", "_acme-challenge.www.example.org"))
    primary.start()
    secondary = Named(lab, dns_ns, tmp_path / "secondary", SECONDARY, secondaries={"example.org": PRIMARY})
    secondary.start()
    key.write_secret(tmp_path / "tsig.key")
    return client, key, primary, secondary


def test_publish_is_visible_on_every_authoritative_server_then_cleared(bind, tmp_path) -> None:
    client, key, primary, _ = bind
    out, err = run_publisher(client, tmp_path, "tsig.key", "publish", "*.example.org", [V1, V2])
    assert out == "ok", err
    # publish() returned only after both servers of the NS set answer the values
    for server in (PRIMARY, SECONDARY):
        status, answers = dig(client, server, "_acme-challenge.example.org", "TXT")
        assert status == "NOERROR" and sorted(answers) == sorted([f'TXT "{V1}"', f'TXT "{V2}"']), server
    assert "2 authoritative server(s)" in err
    assert key.secret not in err + out + primary.log()  # the secret is never logged
    out, err = run_publisher(client, tmp_path, "tsig.key", "publish", "example.org", [V2])  # replaces
    assert out == "ok", err
    assert dig(client, PRIMARY, "_acme-challenge.example.org", "TXT")[1] == [f'TXT "{V2}"']
    out, err = run_publisher(client, tmp_path, "tsig.key", "clear", "example.org")
    assert out == "ok", err
    assert dig(client, PRIMARY, "_acme-challenge.example.org", "TXT") == ("NXDOMAIN", [])
    out, err = run_publisher(client, tmp_path, "tsig.key", "clear", "example.org")  # already gone: no error
    assert out == "ok" and "cleanup" not in err, err


def test_a_wrong_tsig_key_gives_one_clear_error(bind, tmp_path) -> None:
    client, key, primary, _ = bind
    TsigKey("wiregate.", TsigKey.new().secret).write_secret(tmp_path / "wrong.key")  # right name, wrong secret
    out, err = run_publisher(client, tmp_path, "wrong.key", "publish", "www.example.org", [V1])
    assert out.startswith("error: www.example.org: DNS-01 update at 198.51.100.53:53: TSIG key refused "
                          "(BADKEY/BADSIG)"), out + err
    out, _ = run_publisher(client, tmp_path, "tsig.key", "publish", "www.example.org", [V1], key_name="other.")
    assert "www.example.org" in out and "TSIG key refused (BADKEY/BADSIG)" in out  # unknown key name
    assert dig(client, PRIMARY, "_acme-challenge.www.example.org", "TXT") == ("NXDOMAIN", [])
    assert "request has invalid signature" in primary.log() or "TSIG" in primary.log()
    (tmp_path / "tsig.key").chmod(0o644)  # a readable secret is refused before anything is sent
    out, _ = run_publisher(client, tmp_path, "tsig.key", "publish", "www.example.org", [V1])
    assert out.startswith("error: acme.rfc2136.tsig_secret_file:") and "chmod 600" in out
    assert key.secret not in out


def test_a_name_outside_the_zone_and_a_server_that_never_shows_it_are_reported(bind, tmp_path) -> None:
    client, *_ = bind
    out, _ = run_publisher(client, tmp_path, "tsig.key", "publish", "example.com", [V1])
    assert out == "error: example.com: DNS-01 via RFC 2136: _acme-challenge.example.com is not in the zone " \
                  "example.org (acme.rfc2136.zone)"
    out, _ = run_publisher(client, tmp_path, "tsig.key", "publish", "other.example.org", [V1])  # not granted
    assert out == "error: other.example.org: DNS-01 update at 198.51.100.53:53: the server answered REFUSED " \
                  "(may key wiregate. update zone example.org.?)"
    _, _, _, secondary = bind
    from wiregate.testing.peers import stop

    stop(secondary.proc)  # one authoritative server down: the update lands, but publish() must not claim success
    out, _ = run_publisher(client, tmp_path, "tsig.key", "publish", "www.example.org", [V1], timeout=2.0)
    assert out == "error: www.example.org: DNS-01 record published but not visible after 2s on the zone's " \
                  f"authoritative server(s) {SECONDARY}"

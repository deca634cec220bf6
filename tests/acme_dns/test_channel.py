"""The publish channel's decisions (sans-I/O, fake clock): who may publish what, labels, expiry, bounds."""

from __future__ import annotations

import json

from wiregate.dnsserver.channel import (
    MAX_LINE,
    MAX_VALUES_PER_NAME,
    ChallengeStore,
    PublishHandler,
    SiteGrant,
    allowed,
    challenge_label,
    describe_records,
    records_for,
)

ZONE = "acme.vps.example.net"
V1, V2 = "a" * 43, "B-_" + "c" * 40
HOME = SiteGrant("home", "192.0.2.2", "HOMEKEY=", ("example.org", "*.example.org"))
OFFICE = SiteGrant("office", "192.0.2.3", "OFFICEKEY=", ("office.example.net",))


def handler(**kw) -> PublishHandler:
    return PublishHandler(ZONE, "vps.example.net", {s.address: s for s in (HOME, OFFICE)}, **kw)


def call(h: PublishHandler, source: str, req: object, now: float = 0.0) -> dict:
    line = h.handle(source, json.dumps(req).encode() + b"\n", now)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    return json.loads(line)


def test_wildcard_entries_cover_the_base_name_and_one_label_below() -> None:
    names = ("example.org", "*.example.net")
    assert allowed("example.org", names) and allowed("EXAMPLE.org.", names)
    assert not allowed("www.example.org", names)  # a plain entry is exactly that name
    assert allowed("example.net", names)  # where the *.example.net certificate's challenge lives
    assert allowed("a.example.net", names)
    assert not allowed("a.b.example.net", names) and not allowed("badexample.net", names)
    assert not allowed("net", names) and not allowed("", names) and not allowed("exa mple.org", names)


def test_labels_are_stable_and_differ_by_site_and_name() -> None:
    a = challenge_label(HOME.public_key, "example.org")
    assert a == challenge_label(HOME.public_key, "*.Example.ORG.")  # the wildcard's challenge is at the base
    assert a != challenge_label(OFFICE.public_key, "example.org")
    assert a != challenge_label(HOME.public_key, "www.example.org")
    assert len(a) == 32 and a.isalnum() and a == a.lower()


def test_publish_serves_exactly_the_values_until_cleared() -> None:
    h = handler()
    ans = call(h, HOME.address, {"op": "publish", "name": "example.org", "values": [V1, V2]})
    label = challenge_label(HOME.public_key, "example.org")
    assert ans == {"ok": True, "name": "example.org", "fqdn": f"{label}.{ZONE}", "ttl": h.store.ttl}
    assert h.store.records(1.0) == {label: (V1, V2)}
    call(h, HOME.address, {"op": "publish", "name": "example.org", "values": [V2]})  # replaces, not appends
    assert h.store.records(1.0) == {label: (V2,)}
    assert call(h, HOME.address, {"op": "clear", "name": "example.org"})["ok"]
    assert h.store.records(1.0) == {}
    assert call(h, HOME.address, {"op": "clear", "name": "example.org"})["ok"]  # already gone: fine


def test_a_name_outside_the_sites_acme_names_is_refused_and_reported() -> None:
    h = handler()
    ans = call(h, OFFICE.address, {"op": "publish", "name": "example.org", "values": [V1]})
    assert not ans["ok"] and ans["error"] == "example.org: not in the acme_names of site office on the gateway"
    assert h.take_refusals() == [("office", "example.org", "not in the acme_names of site office on the gateway")]
    assert h.store.records(0.0) == {} and h.counts["refused"] == 1
    # clearing someone else's name cannot touch their record
    call(h, HOME.address, {"op": "publish", "name": "example.org", "values": [V1]})
    call(h, OFFICE.address, {"op": "clear", "name": "example.org"})
    assert h.store.records(0.0) == {challenge_label(HOME.public_key, "example.org"): (V1,)}


def test_unknown_sources_and_bad_requests_get_clear_errors() -> None:
    h = handler()
    assert "not the tunnel address of a site" in call(h, "192.0.2.99", {"op": "info"})["error"]
    assert "JSON" in json.loads(h.handle(HOME.address, b"{nope\n", 0.0))["error"]
    assert "longer than" in json.loads(h.handle(HOME.address, b"x" * (MAX_LINE + 1), 0.0))["error"]
    bad_values = ([], ["short"], [V1] * (MAX_VALUES_PER_NAME + 1), [V1 + "="], ["a" * 42 + " "], [1])
    for values in bad_values:
        ans = call(h, HOME.address, {"op": "publish", "name": "example.org", "values": values})
        assert not ans["ok"] and "DNS-01 digests" in ans["error"]
    assert "\"op\" must be" in call(h, HOME.address, {"op": "drop", "name": "example.org"})["error"]
    assert "\"name\"" in call(h, HOME.address, {"op": "publish", "values": [V1]})["error"]
    assert h.store.records(0.0) == {}


def test_records_expire_and_each_site_has_a_bounded_count() -> None:
    site = SiteGrant("many", "192.0.2.9", "K=", ("*.example.com",))
    h = PublishHandler(ZONE, "ns.example.com", {site.address: site}, store=ChallengeStore(ttl=60.0,
                                                                                          max_names_per_site=3))
    for i in range(3):
        assert call(h, site.address, {"op": "publish", "name": f"n{i}.example.com", "values": [V1]}, now=i)["ok"]
    ans = call(h, site.address, {"op": "publish", "name": "n3.example.com", "values": [V1]}, now=3.0)
    assert not ans["ok"] and "already has 3 names" in ans["error"]
    assert call(h, site.address, {"op": "publish", "name": "n0.example.com", "values": [V2]}, now=3.0)["ok"]
    assert len(h.store.records(61.5)) == 2  # n1 (published at 1) went at 61
    assert call(h, site.address, {"op": "publish", "name": "n3.example.com", "values": [V1]}, now=61.5)["ok"]
    assert sorted(e["name"] for e in h.store.status(63.1)) == ["n3.example.com"]  # n0 (at 3) went at 63


def test_info_and_the_records_a_user_adds() -> None:
    h = handler()
    info = call(h, HOME.address, {"op": "info"})
    label = challenge_label(HOME.public_key, "example.org")
    assert info["zone"] == ZONE and info["site"] == "home"
    assert info["records"] == [{"name": "_acme-challenge.example.org", "type": "CNAME", "target": f"{label}.{ZONE}"}]
    assert records_for(HOME, ZONE) == info["records"]
    text = describe_records(ZONE, "vps.example.net", info["records"])
    assert f"{ZONE}.  IN NS  vps.example.net." in text
    assert f"_acme-challenge.example.org.  IN CNAME  {label}.{ZONE}." in text


async def test_wait_until_polls_on_the_injected_clock_and_gives_up_at_the_deadline() -> None:
    from wiregate.acme.dns01 import wait_until

    now = [0.0]
    calls = []

    async def sleep(dt: float) -> None:
        now[0] += dt

    async def never() -> bool:
        calls.append(now[0])
        return False

    assert not await wait_until(never, timeout=10.0, interval=2.0, clock=lambda: now[0], sleep=sleep)
    assert calls == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]  # the last check at the deadline itself
    seen = iter([False, False, True])

    async def third() -> bool:
        return next(seen)

    now[0] = 0.0
    assert await wait_until(third, timeout=10.0, interval=2.0, clock=lambda: now[0], sleep=sleep) and now[0] == 4.0

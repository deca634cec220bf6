"""The challenge zone's responder (sans-I/O): answers parsed back with dnspython, hostile bytes dropped."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.update

from wiregate.dnsserver.responder import MAX_QUERY_BYTES, Responder

ZONE = "acme.vps.example.net"
V1, V2 = "A" * 43, "b" * 43
RECORDS = {"k3xq": (V1, V2)}


def ask(r: Responder, name: str, rdtype: str, records=RECORDS, **kw) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, **kw)
    out = r.respond(q.to_wire(), records)
    assert out is not None
    resp = dns.message.from_wire(out)
    assert resp.id == q.id and resp.flags & dns.flags.QR
    assert not resp.flags & dns.flags.RA  # never offers recursion
    return resp


def test_txt_for_a_published_label_answers_exactly_the_values() -> None:
    r = Responder(ZONE, "vps.example.net")
    resp = ask(r, f"K3XQ.{ZONE}.", "TXT")  # names are case-insensitive
    assert resp.rcode() == dns.rcode.NOERROR and resp.flags & dns.flags.AA
    (rrset,) = resp.answer
    assert rrset.rdtype == dns.rdatatype.TXT and rrset.ttl == 1
    assert sorted(b"".join(rd.strings).decode() for rd in rrset) == sorted([V1, V2])
    assert r.counters.answered == 1


def test_apex_answers_soa_and_ns() -> None:
    r = Responder(ZONE, "vps.example.net")
    soa = ask(r, ZONE, "SOA")
    assert soa.answer[0].rdtype == dns.rdatatype.SOA and str(soa.answer[0][0].mname) == "vps.example.net."
    ns = ask(r, ZONE, "NS")
    assert [str(rd.target) for rd in ns.answer[0]] == ["vps.example.net."]
    nodata = ask(r, ZONE, "A")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    assert nodata.authority[0].rdtype == dns.rdatatype.SOA


def test_unknown_label_is_nxdomain_with_soa_and_other_types_are_nodata() -> None:
    r = Responder(ZONE, "vps.example.net")
    resp = ask(r, f"nope.{ZONE}", "TXT")
    assert resp.rcode() == dns.rcode.NXDOMAIN and resp.flags & dns.flags.AA
    assert resp.authority[0].rdtype == dns.rdatatype.SOA and resp.authority[0][0].minimum == 1
    deeper = ask(r, f"x.k3xq.{ZONE}", "TXT")
    assert deeper.rcode() == dns.rcode.NXDOMAIN
    a = ask(r, f"k3xq.{ZONE}", "A")
    assert a.rcode() == dns.rcode.NOERROR and not a.answer
    gone = ask(r, f"k3xq.{ZONE}", "TXT", records={})  # the record set is the caller's: expired = absent
    assert gone.rcode() == dns.rcode.NXDOMAIN


def test_names_outside_the_zone_are_refused_never_resolved() -> None:
    r = Responder(ZONE, "vps.example.net")
    for name in ("example.org", "vps.example.net", "net", "xacme.vps.example.net", "."):
        resp = ask(r, name, "A")
        assert resp.rcode() == dns.rcode.REFUSED and not resp.answer and not resp.flags & dns.flags.AA
    chaos = dns.message.make_query(ZONE, "TXT", rdclass="CH")
    assert dns.message.from_wire(r.respond(chaos.to_wire(), RECORDS)).rcode() == dns.rcode.REFUSED
    assert r.counters.refused == 6


def test_updates_and_other_opcodes_are_not_implemented() -> None:
    r = Responder(ZONE, "vps.example.net")
    upd = dns.update.UpdateMessage(ZONE)
    upd.add(f"evil.{ZONE}", 60, "TXT", "x")
    resp = dns.message.from_wire(r.respond(upd.to_wire(), RECORDS))
    assert resp.rcode() == dns.rcode.NOTIMP and not resp.answer


def test_malformed_responses_and_oversized_packets_are_dropped_and_counted() -> None:
    r = Responder(ZONE, "vps.example.net")
    good = dns.message.make_query(f"k3xq.{ZONE}", "TXT").to_wire()
    bad = [b"", b"\x00" * 5, good[:-3], good + b"junk", b"\xff" * 40, b"\x00" * (MAX_QUERY_BYTES + 1)]
    as_response = dns.message.make_response(dns.message.make_query(ZONE, "SOA")).to_wire()
    for pkt in [*bad, as_response]:
        assert r.respond(pkt, RECORDS) is None
    assert r.counters.dropped == len(bad) + 1
    assert r.respond(good, RECORDS) is not None  # still answering


def test_two_questions_is_formerr() -> None:
    r = Responder(ZONE, "vps.example.net")
    q = dns.message.make_query(f"k3xq.{ZONE}", "TXT")
    q.question.append(dns.rrset.RRset(dns.name.from_text(f"y.{ZONE}"), dns.rdataclass.IN, dns.rdatatype.TXT))
    resp = dns.message.from_wire(r.respond(q.to_wire(), RECORDS))
    assert resp.rcode() == dns.rcode.FORMERR and not resp.answer


def test_a_udp_answer_larger_than_the_client_buffer_is_truncated_and_whole_over_tcp() -> None:
    r = Responder(ZONE, "vps.example.net")
    many = {"big": tuple(f"{i:02d}" + "x" * 41 for i in range(40))}
    q = dns.message.make_query(f"big.{ZONE}", "TXT").to_wire()  # no EDNS: 512 bytes
    udp = dns.message.from_wire(r.respond(q, many, tcp=False))
    assert udp.flags & dns.flags.TC and not udp.answer and r.counters.truncated == 1
    tcp = dns.message.from_wire(r.respond(q, many, tcp=True))
    assert not tcp.flags & dns.flags.TC and len(tcp.answer[0]) == 40
    edns = dns.message.make_query(f"big.{ZONE}", "TXT", use_edns=0, payload=4096).to_wire()
    out = r.respond(edns, many)
    assert len(out) <= 1232  # the EDNS buffer we honour is capped (no fragmentation)


def test_edns_queries_get_edns_answers_and_unknown_versions_badvers() -> None:
    r = Responder(ZONE, "vps.example.net")
    resp = ask(r, f"k3xq.{ZONE}", "TXT", use_edns=0, payload=1232)
    assert resp.edns == 0 and resp.answer
    q = dns.message.make_query(ZONE, "SOA", use_edns=1)
    resp = dns.message.from_wire(r.respond(q.to_wire(), RECORDS))
    assert resp.rcode() == dns.rcode.BADVERS


def test_udp_answers_are_rate_limited_per_client_network_and_tcp_is_not() -> None:
    r = Responder(ZONE, "vps.example.net")
    q = dns.message.make_query(ZONE, "SOA").to_wire()
    answered = sum(r.respond(q, RECORDS, source=f"198.51.100.{i % 200}", now=0.0) is not None for i in range(100))
    assert answered == 40 and r.counters.rate_limited == 60  # one /24: the burst, then nothing at the same instant
    assert r.respond(q, RECORDS, source="203.0.113.5", now=0.0) is not None  # another network has its own bucket
    assert r.respond(q, RECORDS, tcp=True, source="198.51.100.1", now=0.0) is not None  # TCP: source is real
    assert r.respond(q, RECORDS, source="198.51.100.7", now=0.1) is not None  # 20/s refill: 2 more after 0.1 s
    assert r.respond(q, RECORDS, source="198.51.100.8", now=0.1) is not None
    assert r.respond(q, RECORDS, source="198.51.100.9", now=0.1) is None
    v6 = [r.respond(q, RECORDS, source=f"fd00:0:0:{i:x}::1", now=0.0) for i in range(50)]  # one /56
    assert sum(x is not None for x in v6) == 40


def test_the_rate_limit_table_is_bounded() -> None:
    from wiregate.dnsserver.responder import RateLimiter

    lim = RateLimiter(max_entries=100)
    for i in range(1000):
        assert lim.allow(f"10.{i // 256}.{i % 256}.1", float(i))
    assert len(lim._buckets) == 100

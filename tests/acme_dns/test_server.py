"""The asyncio adapters on loopback: DNS over UDP and TCP, and the publish channel's socket rules."""

from __future__ import annotations

import asyncio
import json

import dns.asyncquery
import dns.message
import dns.rcode

from wiregate.dnsserver.channel import PublishHandler, SiteGrant, challenge_label
from wiregate.dnsserver.responder import Responder
from wiregate.dnsserver.server import DnsServer, PublishServer

ZONE = "acme.vps.example.net"
V = "Q" * 43


async def test_udp_and_tcp_answer_from_the_current_record_set() -> None:
    records: dict[str, tuple[str, ...]] = {}
    srv = DnsServer(Responder(ZONE, "vps.example.net"), lambda: records, [("127.0.0.1", 0)])
    await srv.start()
    try:
        port = srv.bound()[0][1]
        # TCP listens on a port of its own choosing when 0 is given: ask the server
        tcp_port = srv.servers[0].sockets[0].getsockname()[1]
        q = dns.message.make_query(f"lbl.{ZONE}", "TXT")
        assert (await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=5)).rcode() == dns.rcode.NXDOMAIN
        records["lbl"] = (V,)
        for resp in (await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=5),
                     await dns.asyncquery.tcp(q, "127.0.0.1", port=tcp_port, timeout=5)):
            assert [b"".join(rd.strings).decode() for rd in resp.answer[0]] == [V]
        # garbage on UDP is dropped (no answer) and the server keeps answering
        proto_t, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            asyncio.DatagramProtocol, remote_addr=("127.0.0.1", port))
        proto_t.sendto(b"\x01\x02garbage")
        resp = await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=5)
        assert resp.answer
        proto_t.close()
        assert srv.responder.counters.dropped == 1
    finally:
        await srv.close()


async def test_publish_channel_answers_sites_and_closes_on_strangers() -> None:
    site = SiteGrant("home", "127.0.0.1", "pubkey-home", ("example.org",))
    handler = PublishHandler(ZONE, "vps.example.net", {"127.0.0.1": site})
    srv = PublishServer(handler, "127.0.0.1", 0)
    await srv.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.bound_port())
        writer.write(json.dumps({"op": "publish", "name": "example.org", "values": [V]}).encode() + b"\n")
        answer = json.loads(await asyncio.wait_for(reader.readline(), 5))
        writer.close()
        assert answer["ok"] and answer["fqdn"] == f"{challenge_label('pubkey-home', 'example.org')}.{ZONE}"
        # an over-long line is answered with the error and the connection closed
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.bound_port())
        writer.write(b"x" * 10000)
        answer = json.loads(await asyncio.wait_for(reader.readline(), 5))
        writer.close()
        assert not answer["ok"] and "longer than" in answer["error"]
        handler.sites = {}  # now 127.0.0.1 is no site: closed without an answer
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.bound_port())
        writer.write(b'{"op": "info"}\n')
        try:
            assert await asyncio.wait_for(reader.read(), 5) == b""
        except ConnectionResetError:  # closed with our request unread: a reset is the same answer
            pass
        writer.close()
    finally:
        await srv.close()

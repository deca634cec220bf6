"""Prometheus metrics of a running node, computed from its status at scrape time and served over HTTP.

A small asyncio HTTP server (GET /metrics only; request head bounded to MAX_HEAD bytes and HEAD_TIMEOUT seconds)
renders a prometheus_client registry whose one collector reads the node's typed status (wiregate.status) in the
event loop, so it never races the data path. The listen address defaults to loopback (127.0.0.1:9851): metrics are
not for the public side.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from wiregate.status import NodeStatus

log = logging.getLogger("wiregate.metrics")
MAX_HEAD = 8192
HEAD_TIMEOUT = 5.0
MAX_CLIENTS = 16


class StatusCollector:
    """Turns a node's status (wiregate.status.NodeStatus, as runner.Node.status builds it) into metric families."""

    def __init__(self, status: Callable[[], NodeStatus]) -> None:
        self.status = status

    def collect(self) -> Iterator[Metric]:
        st = self.status()
        up = GaugeMetricFamily("wiregate_up", "1 while the node runs", labels=["node", "role"])
        up.add_metric([st.name, st.role], 1)
        yield up
        reloads = CounterMetricFamily("wiregate_reloads", "config reloads by result", labels=["node", "result"])
        reloads.add_metric([st.name, "ok"], st.reloads.ok)
        reloads.add_metric([st.name, "refused"], st.reloads.refused)
        yield reloads
        rx = CounterMetricFamily("wiregate_tunnel_rx_bytes", "bytes received from a tunnel peer", labels=["peer"])
        tx = CounterMetricFamily("wiregate_tunnel_tx_bytes", "bytes sent to a tunnel peer", labels=["peer"])
        hs = GaugeMetricFamily("wiregate_tunnel_last_handshake_seconds",
                               "UNIX time of the last handshake with a peer (0 = never)", labels=["peer"])
        for t in st.tunnels:  # a home: one tunnel per gateway, each with the gateway as its one peer
            for p in t.peers:
                label = p.name or p.public_key[:8]
                rx.add_metric([label], p.rx_bytes)
                tx.add_metric([label], p.tx_bytes)
                hs.add_metric([label], p.last_handshake or 0)
        yield from (rx, tx, hs)
        if st.gateways:
            rtt = GaugeMetricFamily("wiregate_probe_rtt_seconds", "round trip of the last tunnel probe to a gateway",
                                    labels=["gateway"])
            reach = GaugeMetricFamily("wiregate_gateway_reachable",
                                      "1 while a gateway answers the tunnel probes (the last answer within 3 probe "
                                      "intervals)", labels=["gateway"])
            for g in st.gateways:
                rtt.add_metric([g.name], (g.probe.rtt_ms or 0) / 1000 if g.probe else 0)
                reach.add_metric([g.name], 1 if g.reachable else 0)
            yield from (rtt, reach)
        if st.relay is not None:
            open_ = GaugeMetricFamily("wiregate_service_open", "open connections (TCP) or flows (UDP) per service",
                                      labels=["service"])
            totals = CounterMetricFamily("wiregate_service_events", "service event counts", labels=["service",
                                                                                                    "event"])
            bup = GaugeMetricFamily("wiregate_backend_up", "1 when the site passes its health checks",
                                    labels=["service", "backend"])
            bact = GaugeMetricFamily("wiregate_backend_active", "connections open to a site",
                                     labels=["service", "backend"])
            for name, svc in st.relay.services.items():
                open_.add_metric([name], svc.open)
                for ev, n in svc.totals.items():
                    totals.add_metric([name, ev], n)
                for b in svc.backends:
                    bup.add_metric([name, b.name], 1 if b.state == "up" else 0)
                    bact.add_metric([name, b.name], b.active)
            yield from (open_, totals, bup, bact)
        if st.ingress:
            lopen = GaugeMetricFamily("wiregate_listener_open", "open connections per ingress listener",
                                      labels=["listener"])
            levents = CounterMetricFamily("wiregate_listener_events", "ingress event counts",
                                          labels=["listener", "event"])
            for name, ln in st.ingress.items():
                lopen.add_metric([name], ln.open)
                levents.add_metric([name, "accepted"], ln.accepted)
                levents.add_metric([name, "health_check"], ln.health_checks)
                for why, n in ln.refused.items():
                    levents.add_metric([name, f"refused_{why}"], n)
            yield from (lopen, levents)
        if st.acme_dns is not None:
            q = CounterMetricFamily("wiregate_acme_dns_queries", "DNS queries of the ACME challenge zone by outcome",
                                    labels=["outcome"])
            for outcome, n in st.acme_dns.queries.items():
                q.add_metric([outcome], n)
            pub = CounterMetricFamily("wiregate_acme_dns_publish", "publish-channel requests by result",
                                      labels=["result"])
            for result, n in st.acme_dns.publish.items():
                pub.add_metric([result], n)
            recs = GaugeMetricFamily("wiregate_acme_dns_records", "challenge names with published records")
            recs.add_metric([], len(st.acme_dns.records))
            yield from (q, pub, recs)
        if st.certificates is not None:
            exp = GaugeMetricFamily("wiregate_certificate_expiry_seconds",
                                    "seconds until an ACME certificate expires (absent until one is obtained)",
                                    labels=["names"])
            for c in st.certificates:
                if c.expires_in is not None:
                    exp.add_metric([",".join(c.names)], c.expires_in)
            fails = CounterMetricFamily("wiregate_certificate_renewal_failures",
                                        "failed ACME orders by reason", labels=["reason"])
            for why, n in (st.certificate_failures or {}).items():
                fails.add_metric([why], n)
            yield from (exp, fails)


class MetricsServer:
    """GET /metrics on (host, port); anything else gets 404, oversized or slow requests are dropped."""

    def __init__(self, status: Callable[[], NodeStatus],
                 refresh: Callable[[], Awaitable[None]] | None = None) -> None:
        self.refresh = refresh  # awaited before each scrape (e.g. reading `wg show` off the event loop)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StatusCollector(status))
        self.server: asyncio.Server | None = None
        self.clients = 0

    async def start(self, host: str, port: int) -> None:
        self.server = await asyncio.start_server(self._client, host, port, limit=MAX_HEAD + 1)

    @property
    def port(self) -> int:
        return self.server.sockets[0].getsockname()[1] if self.server else 0

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    def render(self) -> bytes:
        """The current metrics in Prometheus text format."""
        return generate_latest(self.registry)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.clients >= MAX_CLIENTS:
            writer.close()
            return
        self.clients += 1
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
            parts = head.split(b"\r\n", 1)[0].split()
            if len(parts) == 3 and parts[0] == b"GET" and parts[1].split(b"?")[0] == b"/metrics":
                if self.refresh is not None:
                    await self.refresh()
                body, status, ctype = self.render(), b"200 OK", CONTENT_TYPE_LATEST.encode()
            else:
                body, status, ctype = b"not found: try /metrics\n", b"404 Not Found", b"text/plain"
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: " + ctype + b"\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
            await asyncio.wait_for(writer.drain(), HEAD_TIMEOUT)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass
        finally:
            self.clients -= 1
            writer.close()

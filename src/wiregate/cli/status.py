"""`wiregate status [FILE|NAME]`: what a running node reports over its control socket."""

from __future__ import annotations

import argparse
import json
import time

from wiregate import hostport
from wiregate.status import GatewayEndpoint, NodeStatus, ProbeStatus, TunnelStatus

HELP = "show tunnel, services, backend health and connections of a running node"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", nargs="?", default=None,
                   help="config file, instance name or socket path (default: the only /run/wiregate/*.ctl)")
    p.add_argument("--json", action="store_true", help="print the raw status as JSON")


def _ago(ts: float | None) -> str:
    if not ts:
        return "never"
    return f"{max(0, int(time.time() - ts))}s ago"


def _bytes(n: float | None) -> str:
    n = n or 0
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _tunnel_lines(t: TunnelStatus | None, head: str) -> list[str]:
    if t is None:
        return []
    out = [f"{head}tunnel {t.interface} ({t.mode} mode) {t.address} listening on UDP {t.listen_port}"]
    if t.error:
        out.append(f"  error: {t.error}")
    for p in t.peers:
        out.append(f"  peer {p.name or '-'} {p.public_key[:12]}... endpoint {p.endpoint or '-'}"
                   f"  handshake {_ago(p.last_handshake)}  rx {_bytes(p.rx_bytes)}  tx {_bytes(p.tx_bytes)}")
    return out


def _gateway_lines(ge: GatewayEndpoint | None, pr: ProbeStatus | None) -> list[str]:
    out = []
    if ge is not None:
        out.append(f"  gateway endpoint {ge.configured} -> {ge.resolved}")
    if pr is not None:
        out.append(f"  probes sent {pr.sent} answered {pr.replies} rtt "
                   f"{pr.rtt_ms if pr.rtt_ms is not None else '-'} ms")
    return out


def render(st: NodeStatus) -> str:
    """The status as a few readable lines."""
    out = [f"{st.role} {st.name} (pid {st.pid}, up {st.uptime:.0f}s, config {st.config}, "
           f"reloads ok {st.reloads.ok} refused {st.reloads.refused})"]
    out += [f"warning: {w}" for w in st.warnings]
    # a home: one tunnel per gateway (`gateways`); a gateway, or an older home: the one `tunnel`
    if st.gateways:
        for g in st.gateways:
            head = f"gateway {g.name} ({'reachable' if g.reachable else 'NOT answering probes'}): " \
                if len(st.gateways) > 1 else ""
            out += _tunnel_lines(g.tunnel, head) + _gateway_lines(g.gateway_endpoint, g.probe)
    else:
        out += _tunnel_lines(st.tunnel, "") + _gateway_lines(st.gateway_endpoint, st.probe)
    relay = st.relay
    if relay is not None:
        out.append(f"relay: {relay.open_connections} open connection(s), data path {relay.data_path}")
        for name, svc in relay.services.items():
            out.append(f"  service {name} ({svc.kind}) on {', '.join(svc.listeners)}: open {svc.open}, "
                       + ", ".join(f"{k} {v}" for k, v in svc.totals.items()))
            for b in svc.backends:
                out.append(f"    site {b.name} {hostport.format((b.host, b.port))} {b.state} "
                           f"active {b.active} total {b.total}")
    if st.ingress:
        out.append(f"ingress: {sum(ln.open for ln in st.ingress.values())} open connection(s)")
        for name, ln in st.ingress.items():
            refused = ", ".join(f"{k} {v}" for k, v in ln.refused.items())
            out.append(f"  listener {name} ({ln.protocol}) on {ln.listen}: open {ln.open}, accepted {ln.accepted}"
                       + (f", health checks {ln.health_checks}" if ln.health_checks else "")
                       + (f", refused: {refused}" if refused else ""))
    acme_dns = st.acme_dns
    if acme_dns is not None:
        out.append(f"acme-dns: zone {acme_dns.zone}: queries "
                   + ", ".join(f"{k} {v}" for k, v in acme_dns.queries.items())
                   + "; publish " + ", ".join(f"{k} {v}" for k, v in acme_dns.publish.items()))
        for r in acme_dns.records:
            out.append(f"  site {r.site} {r.name}: {r.values} value(s), expires in {r.expires_in}s")
    if st.certificates:
        out.append(f"certificates (ACME): {len(st.certificates)}")
        for c in st.certificates:
            exp = "none yet" if c.not_after is None else \
                f"expires {time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime(c.not_after))}"
            out.append(f"  {', '.join(c.names)} ({c.challenge}): {exp}"
                       + (f", last error: {c.last_error}" if c.last_error else ""))
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    from wiregate.control import node_status
    from wiregate.runner import find_control_socket

    st, raw = node_status(find_control_socket(args.target))
    if args.json:
        print(json.dumps(raw, indent=2, default=str))  # as the node sent it (checked: it parsed)
    else:
        print(render(st))
    return 0

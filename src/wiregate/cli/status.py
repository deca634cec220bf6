"""`wiregate status [FILE|NAME]`: what a running node reports over its control socket."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from wiregate import hostport

HELP = "show tunnel, services, backend health and connections of a running node"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", nargs="?", default=None,
                   help="config file, instance name or socket path (default: the only /run/wiregate/*.ctl)")
    p.add_argument("--json", action="store_true", help="print the raw status as JSON")


def _ago(ts: float | None) -> str:
    if not ts:
        return "never"
    return f"{max(0, int(time.time() - ts))}s ago"


def _bytes(n: int | None) -> str:
    n = n or 0
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def render(st: dict[str, Any]) -> str:
    """The status as a few readable lines."""
    from wiregate.metrics import ingress_listeners

    out = [f"{st['role']} {st['name']} (pid {st['pid']}, up {st['uptime']:.0f}s, config {st['config']}, "
           f"reloads ok {st['reloads']['ok']} refused {st['reloads']['refused']})"]
    out += [f"warning: {w}" for w in st.get("warnings", ())]
    # a home: one tunnel per gateway (`gateways`); a gateway, or an older home: the one `tunnel`
    for g in st.get("gateways") or [dict(st, name="")]:
        t = g.get("tunnel", {})
        head = f"gateway {g['name']} ({'reachable' if g.get('reachable') else 'NOT answering probes'}): " \
            if len(st.get("gateways") or ()) > 1 else ""
        out.append(f"{head}tunnel {t.get('interface')} ({t.get('mode')} mode) {t.get('address')} "
                   f"listening on UDP {t.get('listen_port')}")
        if t.get("error"):
            out.append(f"  error: {t['error']}")
        for p in t.get("peers", []):
            out.append(f"  peer {p.get('name') or '-'} {p['public_key'][:12]}... endpoint {p.get('endpoint') or '-'}"
                       f"  handshake {_ago(p.get('last_handshake'))}  rx {_bytes(p.get('rx_bytes'))}  "
                       f"tx {_bytes(p.get('tx_bytes'))}")
        if "gateway_endpoint" in g:
            ge = g["gateway_endpoint"]
            out.append(f"  gateway endpoint {ge['configured']} -> {ge['resolved']}")
        if "probe" in g:
            pr = g["probe"]
            out.append(f"  probes sent {pr['sent']} answered {pr['replies']} rtt "
                       f"{pr['rtt_ms'] if pr['rtt_ms'] is not None else '-'} ms")
    relay = st.get("relay")
    if relay:
        out.append(f"relay: {relay.get('open_connections', 0)} open connection(s), data path "
                   f"{relay.get('data_path')}")
        for name, svc in relay.get("services", {}).items():
            listen = ", ".join(a if isinstance(a, str) else hostport.format(a) for a in svc.get("listeners", []))
            out.append(f"  service {name} ({svc.get('kind')}) on {listen}: open {svc.get('open', 0)}, "
                       + ", ".join(f"{k} {v}" for k, v in svc.get("totals", {}).items()))
            for b in svc.get("backends", []):
                where = hostport.format((str(b.get("host")), b.get("port")))
                out.append(f"    site {b.get('name')} {where} {b.get('state')} "
                           f"active {b.get('active', 0)} total {b.get('total', 0)}")
    listeners = ingress_listeners(st.get("ingress"))
    if listeners:
        out.append(f"ingress: {sum(ln.get('open', 0) for ln in listeners.values())} open connection(s)")
        for name, ln in listeners.items():
            refused = ", ".join(f"{k} {v}" for k, v in (ln.get("refused") or {}).items())
            out.append(f"  listener {name} ({ln.get('protocol', 'tcp')}) on {ln.get('listen', '')}: "
                       f"open {ln.get('open', 0)}, accepted {ln.get('accepted', 0)}"
                       + (f", health checks {ln['health_checks']}" if ln.get("health_checks") else "")
                       + (f", refused: {refused}" if refused else ""))
    acme_dns = st.get("acme_dns")
    if acme_dns:
        q, pub = acme_dns.get("queries", {}), acme_dns.get("publish", {})
        out.append(f"acme-dns: zone {acme_dns.get('zone')}: queries " + ", ".join(f"{k} {v}" for k, v in q.items())
                   + "; publish " + ", ".join(f"{k} {v}" for k, v in pub.items()))
        for r in acme_dns.get("records", []):
            out.append(f"  site {r['site']} {r['name']}: {r['values']} value(s), expires in {r['expires_in']}s")
    certs = st.get("certificates")
    if certs:
        out.append(f"certificates (ACME): {len(certs)}")
        for c in certs:
            exp = "none yet" if c.get("not_after") is None else \
                f"expires {time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime(c['not_after']))}"
            out.append(f"  {', '.join(c['names'])} ({c['challenge']}): {exp}"
                       + (f", last error: {c['last_error']}" if c.get("last_error") else ""))
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    from wiregate.control import request
    from wiregate.errors import WiregateError
    from wiregate.runner import find_control_socket

    path = find_control_socket(args.target)
    reply = request(path, {"cmd": "status"})
    if not reply.get("ok"):
        raise WiregateError(f"status: {reply.get('error', 'failed')}")
    if args.json:
        print(json.dumps(reply["status"], indent=2, default=str))
    else:
        print(render(reply["status"]))
    return 0

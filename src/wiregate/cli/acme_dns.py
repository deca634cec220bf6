"""`wiregate acme-dns records FILE`: the DNS records a user adds once for DNS-01 answered by the gateway."""

from __future__ import annotations

import argparse

from wiregate import hostport

HELP = "DNS-01 answered by the gateway: print the records to add at your DNS provider (acme-dns records FILE)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="acme_dns_command", metavar="ACTION", required=True)
    rec = sub.add_parser("records", help="print the NS delegation and the _acme-challenge CNAMEs")
    rec.add_argument("file", help="the gateway file (offline), or a home file (asks the running gateway)")
    rec.add_argument("--name", action="append", default=[],
                     help="also a name covered by a '*.' entry of acme_names (repeatable)")


def run(args: argparse.Namespace) -> int:
    from wiregate.config import load
    from wiregate.config.model import GatewayConfig
    from wiregate.dnsserver.channel import SiteGrant, describe_records

    cfg = load(args.file)
    if isinstance(cfg, GatewayConfig):
        a = cfg.acme_dns
        if a is None:
            from wiregate.errors import ConfigError

            raise ConfigError(f"{args.file}: acme_dns: no [acme_dns] zone on this gateway (see docs/acme-dns.md)")
        grants = [SiteGrant(s.name, s.address, s.public_key, s.acme_names) for s in cfg.sites if s.acme_names]
        if not grants:
            print(f"; no site of {args.file} has acme_names yet")
        for g in grants:
            print(f"; site {g.name}")
            print(describe_records(a.zone, a.nameserver, _cnames(g, a.zone, args.name)), end="")
        return 0
    return _from_home(cfg, args)


def _cnames(site, zone: str, extra: list[str]) -> list[dict[str, str]]:
    from wiregate.dnsserver.channel import allowed, challenge_label, normalize, records_for

    out = records_for(site, zone)
    for n in extra:
        n = normalize(n).removeprefix("*.")
        if allowed(n, site.acme_names) and not any(c["name"] == f"_acme-challenge.{n}" for c in out):
            out.append({"name": f"_acme-challenge.{n}", "type": "CNAME",
                        "target": f"{challenge_label(site.public_key, n)}.{normalize(zone)}"})
    return out


def _from_home(cfg, args: argparse.Namespace) -> int:
    import asyncio

    from wiregate.acme.dns01 import GatewayLink, gateway_request
    from wiregate.config.model import read_key
    from wiregate.dnsserver.channel import SiteGrant, describe_records
    from wiregate.errors import WiregateError
    from wiregate.wireguard.keys import encode_key, public_key

    link = GatewayLink.for_home(cfg)
    try:
        info = asyncio.run(gateway_request(link, {"op": "info"}))
    except (OSError, TimeoutError, ValueError) as exc:
        where = hostport.format((link.address, link.port))
        raise WiregateError(f"{args.file}: cannot ask the gateway at {where} over the tunnel "
                            f"(is `wiregate run` up on both sides?): {exc or type(exc).__name__}") from None
    if not info.get("ok"):
        raise WiregateError(f"{args.file}: the gateway answered: {info.get('error')}")
    records = list(info.get("records") or [])
    if args.name:
        key = encode_key(public_key(read_key(cfg.tunnel.private_key_file, "tunnel.private_key_file")))
        names = tuple(r["name"].removeprefix("_acme-challenge.") for r in records)
        allowed_names = tuple(info.get("acme_names") or names)
        records = _cnames(SiteGrant(cfg.name, cfg.tunnel.ip, key, allowed_names), info["zone"], args.name)
    print(f"; site {info.get('site')} (from the gateway)")
    print(describe_records(info["zone"], info["nameserver"], records), end="")
    return 0

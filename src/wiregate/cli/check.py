"""`wiregate check FILE`: validate a config file and the key files it names; `--schema` prints the reference."""

from __future__ import annotations

import argparse
import sys

HELP = "validate a config file (errors name the key path and the value at fault)"
DESCRIPTION = ("Validate a gateway/home file and the key files it names. Prints one `ok` line on stdout and exits 0; "
               "otherwise each problem (config or key file) is one line on stderr and the exit status is 2.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", nargs="?", help="gateway or home TOML file")
    p.add_argument("--schema", action="store_true", help="print the configuration reference (docs/config.md)")
    p.add_argument("--no-files", action="store_true", help="do not check the key files the config names")


def run(args: argparse.Namespace) -> int:
    from wiregate.config import load, schema
    from wiregate.config.model import GatewayConfig, check_files
    from wiregate.errors import ConfigError

    if args.schema:
        print(schema.render_markdown(), end="")
        return 0
    if not args.file:
        raise ConfigError("check: give a FILE (or --schema)")
    cfg = load(args.file)
    problems = [] if args.no_files else check_files(cfg)
    for p in problems:  # the convention of every wiregate error: stderr, one line, exit status 2
        print(f"wiregate: error: {args.file}: {p}", file=sys.stderr)
    if problems:
        return 2
    if isinstance(cfg, GatewayConfig):
        what = f"gateway {cfg.name!r}: {len(cfg.sites)} site(s), {len(cfg.services)} service(s)"
        if cfg.acme_dns is not None:
            what += f", acme-dns zone {cfg.acme_dns.zone}"
    else:
        what = f"home {cfg.name!r}: {len(cfg.listeners)} listener(s)"
        if cfg.gateways:
            what += f", {len(cfg.links)} gateways ({', '.join(g.name for g in cfg.links)})"
    print(f"{args.file}: ok ({what}, tunnel mode {cfg.tunnel.mode})")
    _warn_descriptors(args.file, cfg)
    return 0


def _warn_descriptors(file: str, cfg) -> None:
    """Warn (not fail) when the limits cannot fit the descriptors this process may open (`run` raises its soft
    limit to this hard one; under systemd, the unit's LimitNOFILE)."""
    import sys

    from wiregate.limits import config_demand, fit_warning, nofile

    warning = fit_warning(nofile()[1], *config_demand(cfg))
    if warning is not None:
        print(f"{file}: warning: {warning}", file=sys.stderr)

"""`wiregate check FILE`: validate a config file and the key files it names; `--schema` prints the reference."""

from __future__ import annotations

import argparse

HELP = "validate a config file (errors name the key path and the value at fault)"


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
    for p in problems:
        print(f"{args.file}: {p}")
    if problems:
        return 1
    if isinstance(cfg, GatewayConfig):
        what = f"gateway {cfg.name!r}: {len(cfg.sites)} site(s), {len(cfg.services)} service(s)"
        if cfg.acme_dns is not None:
            what += f", acme-dns zone {cfg.acme_dns.zone}"
    else:
        what = f"home {cfg.name!r}: {len(cfg.listeners)} listener(s)"
    print(f"{args.file}: ok ({what}, tunnel mode {cfg.tunnel.mode})")
    return 0

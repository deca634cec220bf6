"""`wiregate site add NAME`: add a home site to the gateway file and print its join token (a secret)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "add a site on the gateway and print its join token (site add NAME)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="site_command", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="append a site with a fresh key pair; print the join token")
    add.add_argument("name", help="site name")
    add.add_argument("--config-dir", type=Path, default=Path("/etc/wiregate"), help="default /etc/wiregate")
    add.add_argument("--config", type=Path, default=None, help="gateway file (default CONFIG_DIR/gateway.toml)")
    add.add_argument("--address", default=None, help="site tunnel address (default: next free one)")
    add.add_argument("--token-only", action="store_true", help="print only the token (for scripts)")


def run(args: argparse.Namespace) -> int:
    from wiregate.cli.install_service import unit_name
    from wiregate.config import load, pairing

    path = args.config or args.config_dir / pairing.GATEWAY_FILE
    added = pairing.site_add(path, args.name, address=args.address)
    if args.token_only:
        print(added.token)
        return 0
    print(f"added site {args.name!r} ({added.address}) to {path}", file=sys.stderr)
    print("join token (it holds the site's private key: pass it on privately; it is not stored anywhere):",
          file=sys.stderr)
    print(added.token)
    print("at home run: wiregate join TOKEN", file=sys.stderr)
    unit = unit_name(load(path).name).removesuffix(".service")
    print(f"then reload the gateway: systemctl reload {unit} (the unit install-service writes), or kill -HUP "
          "its PID", file=sys.stderr)
    return 0

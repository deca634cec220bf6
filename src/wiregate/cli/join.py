"""`wiregate join TOKEN`: write the home file and key from a token printed by `site add` on the gateway."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "pair this home with a gateway from a join token (join TOKEN; '-' reads it from stdin)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("token", help="the token 'site add' printed; '-' reads it from stdin (keeps it out of ps)")
    p.add_argument("--config-dir", type=Path, default=Path("/etc/wiregate"), help="default /etc/wiregate")
    p.add_argument("--name", default=None, help="instance name (default: the site name in the token)")
    p.add_argument("--interface", default=None,
                   help="tunnel interface name (default wg-NAME: one per node, so nodes on one host do not collide)")
    p.add_argument("--force", action="store_true", help="replace existing files (the old key is lost)")


def run(args: argparse.Namespace) -> int:
    from wiregate.config import pairing

    text = sys.stdin.readline(4096) if args.token == "-" else args.token
    path = pairing.join(text, args.config_dir, name=args.name, interface=args.interface, force=args.force)
    print(f"wrote {path} and {args.config_dir / pairing.HOME_KEY} (mode 0600)")
    print(f"next: add [[listeners]] for your services to {path}, then: wiregate run {path}")
    return 0

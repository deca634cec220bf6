"""`wiregate join TOKEN`: write the home file and key from a token printed by `site add` on the gateway."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = ("pair this home with a gateway from a join token (join TOKEN; '-' reads it from stdin); on an existing "
        "home file, add a further gateway")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("token", help="the token 'site add' printed; '-' reads it from stdin (keeps it out of ps)")
    p.add_argument("--config-dir", type=Path, default=Path("/etc/wiregate"), help="default /etc/wiregate")
    p.add_argument("--name", default=None, help="instance name (default: the site name in the token)")
    p.add_argument("--interface", default=None,
                   help="tunnel interface name (default wg-NAME: one per node, so nodes on one host do not collide; "
                   "for a further gateway: the first one's with a number, e.g. wg-home2)")
    p.add_argument("--gateway-name", default=None,
                   help="name of a further gateway in an existing home file (default gateway2, gateway3...)")
    p.add_argument("--force", action="store_true",
                   help="replace existing files with a new one-gateway home (the old keys are lost)")


def run(args: argparse.Namespace) -> int:
    from wiregate.config import pairing

    text = sys.stdin.readline(4096) if args.token == "-" else args.token
    existing = args.config_dir / pairing.HOME_FILE
    if existing.exists() and not args.force:
        added = pairing.add_gateway(text, existing, name=args.gateway_name, interface=args.interface)
        print(f"added gateway {added.name} (interface {added.interface}) to {added.path}; its key is in "
              f"{added.key_file} (mode 0600)")
        print(f"next: reload the running home (systemctl reload wiregate-{added.home}, or kill -HUP its PID), and "
              "give the public name an A/AAAA record for this gateway too (README: Several gateways)")
        return 0
    path = pairing.join(text, args.config_dir, name=args.name, interface=args.interface, force=args.force)
    print(f"wrote {path} and {args.config_dir / pairing.HOME_KEY} (mode 0600)")
    print(f"next: add [[listeners]] for your services to {path}, then: wiregate run {path}")
    return 0

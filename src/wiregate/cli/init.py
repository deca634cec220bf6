"""`wiregate init gateway --endpoint HOST[:PORT]`: write the gateway file and its private key."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "create the gateway config and key (init gateway --endpoint HOST[:PORT])"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("side", choices=["gateway"], help="only the gateway is initialised; homes use 'join'")
    p.add_argument("--endpoint", required=True, help="public HOST[:PORT] homes dial (port 51820 by default)")
    p.add_argument("--config-dir", type=Path, default=Path("/etc/wiregate"), help="default /etc/wiregate")
    p.add_argument("--name", default="gateway", help="instance name (control socket, metrics); default gateway")
    p.add_argument("--address", default="192.0.2.1/24", help="gateway tunnel address/prefix (192.0.2.1/24)")
    p.add_argument("--listen-port", type=int, default=None, help="UDP port (default: the endpoint's port)")
    p.add_argument("--interface", default=None,
                   help="tunnel interface name (default wg-NAME: one per node, so nodes on one host do not collide)")
    p.add_argument("--force", action="store_true", help="replace existing files (the old key is lost)")


def run(args: argparse.Namespace) -> int:
    from wiregate.config import pairing

    path = pairing.init_gateway(args.config_dir, args.endpoint, name=args.name, address=args.address,
                                listen_port=args.listen_port, interface=args.interface, force=args.force)
    print(f"wrote {path} and {args.config_dir / pairing.GATEWAY_KEY} (mode 0600)")
    print(f"next: add [[services]] to {path}, then: wiregate site add NAME --config-dir {args.config_dir}")
    return 0

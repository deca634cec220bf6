"""`wiregate run FILE`: run the gateway or home side the file describes, in the foreground (systemd Type=notify)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "run every part a gateway/home file declares (SIGHUP reloads, SIGTERM drains)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, help="gateway or home TOML file")
    p.add_argument("--access-log", action="store_true",
                   help="gateway: log every connection and UDP flow (INFO) with the real client address and the "
                        "address it connected to")


def run(args: argparse.Namespace) -> int:
    import logging

    from wiregate.datapath.loop import run as run_loop
    from wiregate.runner import run_node

    # the gateway's relay logs one INFO line per connection / UDP flow only when asked (the home's ingress
    # always logs its connections with the real client address)
    logging.getLogger("wiregate.relay.access").setLevel(logging.INFO if args.access_log else logging.WARNING)

    return run_loop(run_node(args.file))  # the one loop choice (wiregate.datapath.loop): uvloop when installed

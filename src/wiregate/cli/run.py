"""`wiregate run FILE`: run the gateway or home side the file describes, in the foreground (systemd Type=notify)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "run every part a gateway/home file declares (SIGHUP reloads, SIGTERM drains)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, help="gateway or home TOML file")
    p.add_argument("--access-log", action="store_true",
                   help="log every connection and UDP flow with the real client address")


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from wiregate.runner import run_node

    if args.access_log:  # the parts log each connection (client address -> site/route) at debug level
        for name in ("wiregate.relay", "wiregate.ingress"):
            logging.getLogger(name).setLevel(logging.DEBUG)

    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(run_node(args.file))

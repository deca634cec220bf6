"""`wiregate run FILE`: run the gateway or home side the file describes, in the foreground (systemd Type=notify)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "run every part a gateway/home file declares (SIGHUP reloads, SIGTERM drains)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, help="gateway or home TOML file")


def run(args: argparse.Namespace) -> int:
    import asyncio

    from wiregate.runner import run_node

    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(run_node(args.file))

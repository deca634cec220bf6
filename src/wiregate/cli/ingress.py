"""`wiregate ingress FILE`: run the home ingress from a JSON or TOML file (SIGHUP reloads, SIGTERM drains)."""

from __future__ import annotations

import argparse

HELP = "run the home ingress from a file (listeners, trusted sources, routes)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from wiregate.ingress.runner import add_arguments as add

    add(p, positional=True)


def run(args: argparse.Namespace) -> int:
    import logging

    from wiregate.ingress.runner import run_file

    logging.getLogger().setLevel(args.log_level.upper())
    return run_file(args.config, args.drain)

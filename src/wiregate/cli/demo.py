"""`wiregate demo`: the main job on embedded defaults.

Until the whole system (gateway + tunnel + home) is wired, this runs the PROXY protocol round trip against a real
HAProxy (`wiregate proxy-demo`).
"""

from __future__ import annotations

import argparse

HELP = "run the demo of the whole system on embedded defaults (needs root on Linux)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    from wiregate.cli import proxy_demo

    return proxy_demo.run(args)

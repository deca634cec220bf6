"""`wiregate genkey`: print a new WireGuard private key (base64), like `wg genkey`."""

from __future__ import annotations

import argparse

HELP = "print a new WireGuard private key (base64)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    import os
    import sys

    from wiregate.wireguard.keys import encode_key, generate_private_key

    if sys.stdout.isatty():
        print("wiregate: note: a private key is a secret; redirect it to a file with mode 0600", file=sys.stderr)
    os.umask(0o077)  # `wiregate genkey > key` creates the file 0600
    print(encode_key(generate_private_key()))
    return 0

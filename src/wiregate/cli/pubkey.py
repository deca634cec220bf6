"""`wiregate pubkey`: read a private key (base64) on stdin, print its public key, like `wg pubkey`."""

from __future__ import annotations

import argparse

HELP = "read a private key on stdin, print its public key"


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    import sys

    from wiregate.wireguard.keys import decode_key, encode_key, public_key

    text = sys.stdin.read(1024)  # a key is 44 characters; bound the read
    print(encode_key(public_key(decode_key(text.strip(), "private key on stdin"))))
    return 0

"""`wiregate genpsk`: print a new WireGuard preshared key (base64), like `wg genpsk`."""

from __future__ import annotations

import argparse

HELP = "print a new WireGuard preshared key (base64)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    from wiregate.wireguard.keys import encode_key, generate_psk

    print(encode_key(generate_psk()))
    return 0

"""`wiregate genkey`: print a new WireGuard private key (base64), like `wg genkey`; a file it is redirected to
becomes 0600."""

from __future__ import annotations

import argparse

HELP = "print a new WireGuard private key (base64)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    from wiregate.wireguard.keys import encode_key, generate_private_key

    protect_stdout()
    print(encode_key(generate_private_key()))
    return 0


def protect_stdout() -> None:
    """`wiregate genkey > key`: the shell created `key` with its umask; make it 0600 before the secret goes in."""
    import os
    import stat
    import sys

    try:
        st = os.fstat(sys.stdout.fileno())
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o077:
            os.fchmod(sys.stdout.fileno(), 0o600)
    except OSError:
        print("wiregate: warning: the output file is readable by others; chmod 600 it", file=sys.stderr)

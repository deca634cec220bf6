"""`wiregate export haproxy|wg-quick|nginx|traefik|systemd FILE`: the classic stack's equivalent configs."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "print the equivalent HAProxy / wg-quick / nginx / Traefik / systemd configs of a wiregate file"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from wiregate.config.export import FORMATS

    p.add_argument("format", choices=FORMATS)
    p.add_argument("file", help="gateway or home TOML file")
    p.add_argument("-o", "--output-dir", type=Path, default=None,
                   help="write the files there (wg-quick files get mode 0600) instead of printing them")


def run(args: argparse.Namespace) -> int:
    from wiregate.config import load
    from wiregate.config.export import export, write_files

    files = export(args.format, load(args.file), args.output_dir)
    if args.output_dir:
        for path in write_files(files, args.output_dir, secret=args.format == "wg-quick"):
            print(f"wrote {path}")
        return 0
    many = len(files) > 1
    for name, text in files.items():
        if many:
            print(f"# ==> {name} <==")
        print(text, end="" if text.endswith("\n") else "\n")
    return 0

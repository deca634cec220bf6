"""`wiregate` console script: dispatches to one module per subcommand.

Each module listed in COMMANDS defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Modules are imported when the parser is built, so they must import heavy things inside ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys

from wiregate import __version__
from wiregate.errors import WiregateError

# name -> module; the order is the order shown by --help.
COMMANDS: dict[str, str] = {
    "demo": "wiregate.cli.demo",
    "proxy-demo": "wiregate.cli.proxy_demo",
    "bench": "wiregate.cli.bench",
    "ingress": "wiregate.cli.ingress",
    "check": "wiregate.cli.check",
    "init": "wiregate.cli.init",
    "site": "wiregate.cli.site",
    "join": "wiregate.cli.join",
    "run": "wiregate.cli.run",
    "status": "wiregate.cli.status",
    "export": "wiregate.cli.export",
    "acme-dns": "wiregate.cli.acme_dns",
    "install-service": "wiregate.cli.install_service",
    "wg": "wiregate.cli.wg",
    "genkey": "wiregate.cli.genkey",
    "pubkey": "wiregate.cli.pubkey",
    "genpsk": "wiregate.cli.genpsk",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wiregate",
        description="Expose home services on a VPS over WireGuard, keeping the real client address.",
    )
    parser.add_argument("--version", action="version", version=f"wiregate {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (repeatable)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, modname in COMMANDS.items():
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as exc:  # a command whose module is not there is simply not offered
            if exc.name == modname:
                continue
            raise
        p = sub.add_parser(name, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP))
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not raise BrokenPipeError again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2) if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        rc = int(args._run(args) or 0)
        sys.stdout.flush()  # here, where a reader that left is caught, not in the interpreter's exit
        return rc
    except BrokenPipeError:  # `wiregate status | head -3`: the reader left; say nothing more, exit as SIGPIPE would
        _quiet_stdout()
        return 128 + signal.SIGPIPE
    except WiregateError as exc:
        print(f"wiregate: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""`wiregate wg up FILE [--name NAME]`: bring up a WireGuard interface from a wg-quick file, in the foreground.

SIGTERM or SIGINT tears it down (the interface and its UAPI socket are removed). SIGHUP re-reads the file and applies
it in place (a file that does not load is logged and the running config stays). While it runs, `wg show NAME` and
`wg set NAME ...` work on it as on wireguard-go.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "run the built-in WireGuard on a wg-quick file in the foreground (wg up FILE)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="wg_command", metavar="ACTION", required=True)
    up = sub.add_parser("up", help="bring an interface up from a wg-quick file; SIGTERM tears it down")
    up.add_argument("file", help="wg-quick configuration file (mode 0600)")
    up.add_argument("--name", help="interface name (default: the file name without .conf)")
    up.add_argument("--mtu", type=int, default=None, help="MTU when the file has none (default 1420)")
    up.add_argument("--profile", default=None, help=argparse.SUPPRESS)  # cProfile output file (benchmark)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import signal

    from wiregate.errors import ConfigError, WiregateError
    from wiregate.wireguard import config as wgconf

    log = logging.getLogger("wiregate.wg")
    cfg = wgconf.load(args.file)
    for note in cfg.notes:
        log.info("note: %s", note)
    name = args.name or Path(args.file).name.removesuffix(".conf")
    if not name or len(name) > 15:
        raise ConfigError(f"interface name {name!r}: 1..15 characters (use --name)")
    from wiregate.wireguard.interface import DEFAULT_MTU, WireGuardInterface

    profiler = None
    if args.profile:
        import cProfile
        # wall time (a CPU-time timer costs a system call per event and inflates small calls); the loop's own
        # entry then holds the idle wait in epoll, which the benchmark reports apart
        profiler = cProfile.Profile()

    async def main() -> None:
        iface = WireGuardInterface(name, cfg, mtu=args.mtu or DEFAULT_MTU)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        def reload() -> None:
            try:
                new = wgconf.load(args.file)
                iface.update(new)
            except WiregateError as exc:
                log.error("reload: %s (the running configuration stays)", exc)
                return
            log.info("%s: reloaded %s", name, args.file)

        loop.add_signal_handler(signal.SIGHUP, reload)
        await iface.start()
        if profiler is not None:  # the data path only, not the start-up
            profiler.enable()
        try:
            # stop on a signal, or when the TUN device fails (e.g. deleted under us)
            await asyncio.wait([asyncio.ensure_future(stop.wait()), asyncio.ensure_future(iface.failed.wait())],
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            await iface.close()
            log.info("%s: down", name)

    try:
        from wiregate.datapath.loop import run as run_loop

        run_loop(main())  # the one loop choice (wiregate.datapath.loop): uvloop when installed
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
    return 0

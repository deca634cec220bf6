"""Running an ingress from a file as its own process: `python -m wiregate.ingress --config ingress.json`
(or `wiregate ingress ingress.json`).

SIGHUP re-reads the file (a bad file is refused with a one-line error and the running config stays); SIGTERM and
SIGINT stop accepting, let open connections finish for up to --drain seconds, then exit.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from wiregate.datapath.loop import loop_name
from wiregate.datapath.loop import run as run_loop
from wiregate.errors import WiregateError
from wiregate.ingress.config import load_config

log = logging.getLogger("wiregate.ingress")


async def serve(path: Path, drain: float, ready: asyncio.Event | None = None) -> None:
    """Run the ingress in `path` until SIGTERM/SIGINT."""
    from wiregate.ingress.server import Ingress

    running = asyncio.get_running_loop()
    ing = Ingress(load_config(path))
    await ing.start()
    stop = asyncio.Event()
    pending: set[asyncio.Task] = set()

    async def reload() -> None:
        try:
            await ing.reload(load_config(path))
        except WiregateError as exc:
            log.error("reload refused, keeping the running config: %s", exc)
        except Exception as exc:  # noqa: BLE001 - a reload bug must not end as "Task exception was never retrieved"
            log.error("reload refused, keeping the running config: %s: %s", type(exc).__name__, exc)

    def on_hup() -> None:
        t = running.create_task(reload())
        pending.add(t)
        t.add_done_callback(pending.discard)

    running.add_signal_handler(signal.SIGHUP, on_hup)
    running.add_signal_handler(signal.SIGTERM, stop.set)
    running.add_signal_handler(signal.SIGINT, stop.set)
    log.info("ingress: running (%s, %s event loop); SIGHUP reloads, SIGTERM drains for up to %gs", path,
             loop_name(running), drain)
    if ready is not None:
        ready.set()
    await stop.wait()
    log.info("ingress: stopping, draining open connections for up to %gs", drain)
    await ing.close(drain_timeout=drain)


def run_file(path: Path, drain: float) -> int:
    """Blocking entry point: serve until a stop signal; WiregateError on a bad file or a failed bind."""
    from wiregate.limits import raise_nofile

    load_config(path)  # a clean error before the loop starts
    raise_nofile()  # soft up to hard: the soft default of 1024 cannot hold the default max_connections
    run_loop(serve(path, drain))  # the one loop choice (wiregate.datapath.loop): uvloop when installed
    return 0


def add_arguments(p: argparse.ArgumentParser, positional: bool = False) -> None:
    if positional:
        p.add_argument("config", type=Path, help="ingress file (.json or .toml)")
    else:
        p.add_argument("--config", type=Path, required=True, help="ingress file (.json or .toml)")
    p.add_argument("--drain", type=float, default=10.0, help="seconds open connections get on SIGTERM (10)")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO (one line per connection), WARNING")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m wiregate.ingress", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run_file(args.config, args.drain)
    except WiregateError as exc:
        print(f"wiregate ingress: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130

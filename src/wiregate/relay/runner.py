"""Running a relay from a file as its own process: `python -m wiregate.relay --config relay.toml`.

SIGHUP re-reads the file (a bad file is refused with a one-line error and the running config stays), SIGTERM
and SIGINT drain open connections up to `drain_timeout` and exit. With `workers = N > 1` a supervisor starts
N worker processes that each bind every listener with SO_REUSEPORT (the kernel spreads connections and UDP
flows across them, so both cores work); it forwards signals and restarts a worker that dies.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from wiregate.datapath.loop import run as run_loop
from wiregate.errors import WiregateError
from wiregate.relay.config import RelayConfig, TCPService, load_config
from wiregate.relay.server import Relay

log = logging.getLogger("wiregate.relay")
RESTART_DELAY = 1.0  # a worker that dies is restarted after this pause (no tight crash loop)
EARLY_EXIT = 3.0  # a worker that exits this soon after its start failed to start: give up instead of looping


def per_worker(config: RelayConfig, running: int | None = None) -> RelayConfig:
    """Share connection and flow limits among the workers (ceil), so that together they stay near the configured
    figure. The kernel spreads connections by hashing addresses and ports, so one worker may refuse a little early;
    never do the workers together admit more than workers x ceil(limit / workers).

    `running`: the number of workers actually running, when it differs from the file's (a reload cannot change
    it, so a reloaded file's `workers` must not change the shares)."""
    n = config.workers if running is None else running
    if n != config.workers:
        config = replace(config, workers=n)
    if n == 1:
        return config

    def share(v: int) -> int:
        return max(1, -(-v // n))

    services = tuple(
        replace(s, max_connections=share(s.max_connections), max_per_source=share(s.max_per_source))
        if isinstance(s, TCPService)
        else replace(s, max_flows=share(s.max_flows), max_per_source=share(s.max_per_source))
        for s in config.services)
    return replace(config, services=services)


async def serve(path: Path, config: RelayConfig, reuse_port: bool) -> None:
    """Run one Relay until SIGTERM/SIGINT; SIGHUP reloads `path`. As a worker (reuse_port) limits are shared."""
    loop = asyncio.get_running_loop()
    running = config.workers  # fixed for the life of the process; a reload that changes it warns in the supervisor
    prepare = (lambda c: per_worker(c, running)) if reuse_port else (lambda c: c)
    relay = Relay(prepare(config), reuse_port=reuse_port)
    await relay.start()
    stop = asyncio.Event()

    async def reload() -> None:
        try:
            new = load_config(path)
            if not reuse_port and new.workers != running:  # (a supervisor warns for its workers)
                log.warning("reload: workers changes only on restart (running %d)", running)
            await relay.reload(prepare(replace(new, workers=running)))
        except WiregateError as exc:
            log.error("reload refused, keeping the running config: %s", exc)
        except Exception as exc:  # noqa: BLE001 - a reload bug must not end as "Task exception was never retrieved"
            log.error("reload refused, keeping the running config: %s: %s", type(exc).__name__, exc)

    pending: set[asyncio.Task] = set()  # the loop keeps only weak references to tasks

    def on_hup() -> None:
        task = loop.create_task(reload())
        pending.add(task)
        task.add_done_callback(pending.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    log.info("relay: stopping")
    await relay.close()


def run_worker(path: Path, config: RelayConfig, reuse_port: bool) -> int:
    """One process, one event loop (`wiregate.datapath.loop`: uvloop when installed)."""
    run_loop(serve(path, config, reuse_port))
    return 0


def run_supervisor(path: Path, config: RelayConfig, verbose: int) -> int:
    """Start config.workers worker processes and look after them."""
    argv = [sys.executable, "-m", "wiregate.relay", "--config", str(path), "--worker"] + ["-v"] * verbose
    workers: dict[int, tuple[subprocess.Popen, float]] = {}
    stopping = False
    reload_wanted = False

    def spawn() -> None:
        p = subprocess.Popen(argv)
        workers[p.pid] = (p, time.monotonic())

    def on_term(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    def on_hup(signum, frame) -> None:
        nonlocal reload_wanted
        reload_wanted = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, on_hup)
    for _ in range(config.workers):
        spawn()
    log.info("relay: supervisor pid %d, %d workers", os.getpid(), config.workers)
    status = 0
    while not stopping:
        if reload_wanted:
            reload_wanted = False
            try:  # checked here once so a bad file gives one clear error and no worker is disturbed
                new = load_config(path)
                if new.workers != config.workers:
                    log.warning("reload: workers changes only on restart (running %d)", config.workers)
                for p, _ in workers.values():
                    p.send_signal(signal.SIGHUP)
            except WiregateError as exc:
                log.error("reload refused, keeping the running config: %s", exc)
        for pid, (p, started) in list(workers.items()):
            if p.poll() is None:
                continue
            del workers[pid]
            if stopping:
                continue
            if time.monotonic() - started < EARLY_EXIT:
                log.error("relay: worker %d exited with %d at start; stopping", pid, p.returncode)
                stopping, status = True, 2
                break
            log.warning("relay: worker %d exited with %d; restarting", pid, p.returncode)
            time.sleep(RESTART_DELAY)
            spawn()
        time.sleep(0.1)
    for p, _ in workers.values():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + config.drain_timeout + 5.0
    for p, _ in workers.values():
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return status


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m wiregate.relay`."""
    ap = argparse.ArgumentParser(prog="python -m wiregate.relay",
                                 description="Run the gateway relay from a JSON or TOML file.")
    ap.add_argument("--config", "-c", required=True, help="relay file (.json or .toml)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # set by the supervisor
    ap.add_argument("--check", action="store_true", help="validate the file and exit")
    ap.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-v: per connection)")
    args = ap.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format=f"%(asctime)s %(levelname)s [{os.getpid()}] %(name)s: %(message)s")
    logging.getLogger("wiregate.relay.access").setLevel(logging.INFO if args.verbose else logging.WARNING)
    path = Path(args.config)
    try:
        config = load_config(path)
        if args.check:
            print(f"{path}: OK ({len(config.services)} service(s))")
            return 0
        from wiregate.limits import raise_nofile

        raise_nofile()  # soft up to hard (workers inherit it): the soft default of 1024 cannot hold the limits
        if args.worker or config.workers == 1:
            return run_worker(path, config, reuse_port=args.worker)
        return run_supervisor(path, config, args.verbose)
    except WiregateError as exc:
        print(f"wiregate relay: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130

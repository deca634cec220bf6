"""`python -m wiregate.relay`: SIGHUP reload (bad file refused), SIGTERM drain, SO_REUSEPORT workers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wiregate.testing.peers import stop, wait_port

from .conftest import EchoBackend, cpu_seconds, greeting, local_port

pytestmark = pytest.mark.timeout(60)


def write(path: Path, port: int, backend_port: int, **extra) -> None:
    svc = {"name": "web", "listen": [f"127.0.0.1:{port}"], "backends": [{"host": "127.0.0.1", "port": backend_port}],
           "health": False}
    path.write_text(json.dumps({"services": [svc], **extra}))


def start(path: Path, log: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "wiregate.relay", "--config", str(path), *extra],
                            stdout=subprocess.DEVNULL, stderr=log.open("w"))


async def until(pred, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while True:
        if await pred():
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_sighup_reloads_keeps_connections_and_refuses_a_bad_file(tmp_path):
    one = await EchoBackend("one", greet=True).start()
    two = await EchoBackend("two", greet=True).start()
    port = local_port()
    cfg, log = tmp_path / "relay.json", tmp_path / "relay.log"
    write(cfg, port, one.port)
    proc = start(cfg, log)
    try:
        await asyncio.to_thread(wait_port, "127.0.0.1", port, 10, proc)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await reader.readline() == b"one\n"

        write(cfg, port, two.port)
        proc.send_signal(signal.SIGHUP)

        async def switched():
            return await greeting(port) == "two"
        await until(switched, what="reload to backend two")
        writer.write(b"old connection")
        assert await reader.readexactly(14) == b"old connection"

        cfg.write_text('{"services": [{"name": "web", "listen": ["127.0.0.1:%d"], "backends": []}]}' % port)
        proc.send_signal(signal.SIGHUP)

        async def refused():
            return "reload refused" in log.read_text()
        await until(refused, what="refusal in the log")
        assert "services[0].backends" in log.read_text()
        assert "Traceback" not in log.read_text()
        assert await greeting(port) == "two"  # still the good config

        proc.send_signal(signal.SIGTERM)  # drain: the open connection keeps working until it ends

        async def draining():  # the listener is closed first: new clients are refused
            try:
                _, w = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                return True
            w.close()
            return False
        await until(draining, what="the drain to start")
        assert proc.poll() is None
        writer.write(b"draining")
        assert await reader.readexactly(8) == b"draining"
        writer.write_eof()
        assert await reader.read(-1) == b""
        writer.close()
        await until(lambda: _async(proc.poll() is not None), what="exit after drain")
        assert proc.returncode == 0
    finally:
        stop(proc)
        await one.stop()
        await two.stop()


async def _async(value):
    return value


async def test_workers_share_the_listeners_with_reuseport_and_all_reload(tmp_path):
    b = await EchoBackend("w", greet=True).start()
    b2 = await EchoBackend("w2", greet=True).start()
    port = local_port()
    cfg, log = tmp_path / "relay.json", tmp_path / "relay.log"
    write(cfg, port, b.port, workers=2)
    proc = start(cfg, log, "-v")  # -v: every connection is logged, with the pid of the worker that took it
    try:
        await asyncio.to_thread(wait_port, "127.0.0.1", port, 10, proc)

        async def both_started():
            return log.read_text().count("event loop, pid") == 2
        await until(both_started, what="both workers started")
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(children) == 2
        assert log.read_text().count("uvloop event loop") == 2  # uvloop is a dependency, so workers run on it
        assert [await greeting(port) for _ in range(20)] == ["w"] * 20
        # the kernel spread the 20 connections over both workers (all on one: probability 2 in a million)
        served = {line.split("[", 1)[1].split("]", 1)[0] for line in log.read_text().splitlines()
                  if " -> " in line and " via " in line}
        assert served == set(children)
        write(cfg, port, b2.port, workers=2)
        proc.send_signal(signal.SIGHUP)  # the supervisor checks the file and passes the signal to every worker

        async def both_switched():
            return log.read_text().count("reloaded") == 2
        await until(both_switched, what="both workers reloaded")
        assert [await greeting(port) for _ in range(20)] == ["w2"] * 20  # whichever worker the kernel picks
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 10)
        assert proc.returncode == 0
        for pid in children:
            assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    finally:
        stop(proc)
        await b.stop()
        await b2.stop()


def test_check_reports_a_bad_file_in_one_line(tmp_path):
    cfg = tmp_path / "relay.toml"
    cfg.write_text('[[services]]\nname = "web"\nlisten = ["127.0.0.1:80"]\n'
                   'backends = [{host = "127.0.0.1", port = 80}]\nbalance = "random"\n')
    r = subprocess.run([sys.executable, "-m", "wiregate.relay", "--config", str(cfg), "--check"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    assert 'services[0].balance: "random": must be one of roundrobin, leastconn, source' in r.stderr
    cfg.write_text(cfg.read_text().replace('"random"', '"source"'))
    r = subprocess.run([sys.executable, "-m", "wiregate.relay", "--config", str(cfg), "--check"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "OK" in r.stdout


def test_run_reports_a_bind_failure_in_one_line(tmp_path):
    import socket
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    cfg = tmp_path / "relay.json"
    write(cfg, busy.getsockname()[1], 9)
    r = subprocess.run([sys.executable, "-m", "wiregate.relay", "--config", str(cfg)],
                       capture_output=True, text=True, timeout=30)
    busy.close()
    assert r.returncode == 2 and "cannot listen on tcp 127.0.0.1:" in r.stderr and "Traceback" not in r.stderr
    assert os.path.exists(cfg)


async def test_running_out_of_descriptors_pauses_accepting_logs_rarely_and_recovers(tmp_path):
    import resource

    b = await EchoBackend("fd", greet=True).start()
    port = local_port()
    cfg, log = tmp_path / "relay.json", tmp_path / "relay.log"
    write(cfg, port, b.port, drain_timeout=0.5)
    proc = subprocess.Popen([sys.executable, "-m", "wiregate.relay", "--config", str(cfg), "-v"],
                            stdout=subprocess.DEVNULL, stderr=log.open("w"),
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64)))
    held = []
    try:
        await asyncio.to_thread(wait_port, "127.0.0.1", port, 10, proc)
        for _ in range(60):  # far more than 64 descriptors allow at 2 per connection: the rest wait in the backlog
            try:
                held.append(await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2))
            except (OSError, asyncio.TimeoutError):
                break

        async def exhausted():
            return len(os.listdir(f"/proc/{proc.pid}/fd")) >= 63
        await until(exhausted, 10, what="the relay to run out of descriptors")
        cpu0, t0, lines0 = cpu_seconds(proc.pid), time.monotonic(), log.read_text().count("accept on")

        async def window():
            return time.monotonic() - t0 >= 3.0
        await until(window, 5, what="the measuring window")
        cpu, lines = cpu_seconds(proc.pid) - cpu0, log.read_text().count("accept on") - lines0
        assert cpu < 0.6, f"{cpu:.2f}s of CPU in 3s while out of descriptors"
        assert lines <= 2, f"{lines} accept log lines in 3s (one per 5 s at most)"  # was one per 0.1 s pause
        for _, w in held:
            w.close()
        held.clear()
        assert proc.poll() is None

        async def served():
            try:
                return await greeting(port, timeout=2) == "fd"
            except (OSError, asyncio.TimeoutError):
                return False
        await until(served, 15, what="a client to be served after descriptors were freed")
        assert [await greeting(port) for _ in range(3)] == ["fd"] * 3
        assert "Traceback" not in log.read_text()
        assert "out of file descriptors (EMFILE)" in log.read_text()
    finally:
        for _, w in held:
            w.close()
        stop(proc)
        await b.stop()


async def test_a_worker_that_dies_is_replaced_and_the_others_keep_serving(tmp_path):
    from wiregate.relay.runner import EARLY_EXIT

    b = await EchoBackend("w", greet=True).start()
    port = local_port()
    cfg, log = tmp_path / "relay.json", tmp_path / "relay.log"
    write(cfg, port, b.port, workers=2)
    proc = start(cfg, log)
    try:
        await asyncio.to_thread(wait_port, "127.0.0.1", port, 10, proc)

        async def workers_started(n: int):
            return log.read_text().count("event loop, pid") == n
        await until(lambda: workers_started(2), what="both workers started")
        seen = time.monotonic()  # both workers were spawned before this (they logged that they run)
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()

        # a worker dying within EARLY_EXIT of its spawn is taken as a start failure (no restart loop): wait past it,
        # counted from when the workers were seen running (a busy machine may take long to spawn them)
        async def past_early_exit():
            return time.monotonic() - seen > EARLY_EXIT + 0.2
        await until(past_early_exit, timeout=EARLY_EXIT + 5, what="EARLY_EXIT to pass")
        os.kill(int(children[0]), signal.SIGKILL)

        async def gone():  # its listening socket leaves the reuse_port group when the process is dead
            try:
                return Path(f"/proc/{children[0]}/stat").read_text().split(") ")[1][0] in "ZX"
            except (OSError, IndexError):
                return True
        await until(gone, what="the killed worker to be dead")
        assert [await greeting(port) for _ in range(10)] == ["w"] * 10  # the other worker takes everyone
        await until(lambda: workers_started(3), timeout=30, what="a replacement worker")
        now = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(now) == 2 and children[0] not in now and children[1] in now
        assert "restarting" in log.read_text()
        assert [await greeting(port) for _ in range(10)] == ["w"] * 10
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 10)
        assert proc.returncode == 0
    finally:
        stop(proc)
        await b.stop()

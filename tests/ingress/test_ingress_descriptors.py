"""Out of file descriptors: the ingress pauses accepting (bounded CPU, a log line per interval) and recovers."""

from __future__ import annotations

import os
import socket
import threading
import time
from socketserver import BaseRequestHandler, ThreadingTCPServer

import pytest

from wiregate.testing.ingress_proc import IngressProcess
from wiregate.testing.peers import free_port

pytestmark = pytest.mark.timeout(60)
NOFILE = 64  # the whole ingress process: the interpreter, listeners, epoll... leaves room for a few dozen sockets


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (from /proc)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.02)


class Hold(BaseRequestHandler):
    """A service that greets, then holds the connection until the client closes it."""

    def handle(self) -> None:
        self.request.sendall(b"hi\n")
        try:
            while self.request.recv(100):
                pass
        except OSError:
            pass


def test_running_out_of_descriptors_pauses_accepting_logs_rarely_and_recovers(tmp_path):
    srv = ThreadingTCPServer(("127.0.0.1", 0), Hold)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port = free_port()
    # clients that connect and stay silent hold a descriptor each while the ingress waits for their first bytes
    cfg = {"listeners": [{"name": "p", "listen": ["127.0.0.1", port], "sniff_timeout": 30,
                          "routes": [{"name": "r", "target": list(srv.server_address)}], "default_route": "r"}]}
    clients: list[socket.socket] = []
    try:
        with IngressProcess(cfg, tmp_path, nofile=NOFILE) as ing:
            pid = ing.proc.pid
            # more silent clients than NOFILE allows; the kernel completes every handshake (the backlog holds the
            # ones the ingress cannot accept), so connect() succeeds either way
            for _ in range(NOFILE + 16):
                clients.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            wait_until(lambda: len(os.listdir(f"/proc/{pid}/fd")) >= NOFILE - 1, 10,
                       "the ingress to run out of descriptors")
            # now measure: with the listener paused, a backlog of unaccepted clients costs (almost) nothing
            cpu0, t0 = cpu_seconds(pid), time.monotonic()
            lines0 = ing.log().count("accept")
            wait_until(lambda: time.monotonic() - t0 >= 3.0, 5, "the measuring window")
            cpu = cpu_seconds(pid) - cpu0
            lines = ing.log().count("accept") - lines0
            # before the fix: the listener fired again at once, 100% of a core and ~20,000 lines a second
            assert cpu < 0.6, f"{cpu:.2f}s of CPU in 3s while out of descriptors"
            assert lines <= 2, f"{lines} accept log lines in 3s:\n{ing.log()[-2000:]}"
            assert ing.proc.poll() is None
            # recovery: free the descriptors and a new client is served
            for c in clients:
                c.close()
            clients.clear()

            def served() -> bool:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
                        c.sendall(b"x")
                        return c.recv(10) == b"hi\n"
                except OSError:
                    return False
            wait_until(served, 15, "a client to be served after descriptors were freed")
            assert "Traceback" not in ing.log()
            line = next(x for x in ing.log().splitlines() if "out of file descriptors" in x)
            assert "EMFILE" in line and "failure(s)" in line  # one line with counts
    finally:
        for c in clients:
            c.close()
        srv.shutdown()
        srv.server_close()


def test_the_ingress_raises_its_soft_descriptor_limit_to_the_hard_one(tmp_path):
    import json
    import resource
    import subprocess
    import sys

    from wiregate.testing.haproxy_pp import wait_listening
    from wiregate.testing.peers import stop

    port = free_port()
    cfg = tmp_path / "ingress.json"
    cfg.write_text(json.dumps({"listeners": [{"name": "p", "listen": ["127.0.0.1", port],
                                              "routes": [{"name": "r", "target": ["127.0.0.1", 9]}],
                                              "default_route": "r"}]}))
    proc = subprocess.Popen([sys.executable, "-m", "wiregate.ingress", "--config", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, 4096)))
    try:
        wait_listening("127.0.0.1", port, 10, proc)
        line = next(x for x in open(f"/proc/{proc.pid}/limits") if x.startswith("Max open files"))
        assert line.split()[3:5] == ["4096", "4096"]  # soft was 256, the default of 1024 cannot hold 10,000
    finally:
        stop(proc)

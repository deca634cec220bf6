"""The standalone ingress runs on uvloop (as `wiregate run` does): a service that resets right after its answer
must still end the client's connection at once. uvloop drops an add_reader() watcher whose socket reports EPOLLERR
without calling it; routed sockets are therefore watched through the data path's private epoll set
(wiregate.datapath.poller.Poller). The same through `wiregate run` home: tests/system/test_uvloop_resets.py."""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest

from wiregate.testing.ingress_proc import IngressProcess
from wiregate.testing.peers import free_port

pytestmark = pytest.mark.timeout(60)


class ResettingService:
    """Answers each connection's first bytes, then closes with SO_LINGER 0 (a TCP RST right after the answer)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.addr = self.sock.getsockname()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            with c:
                c.settimeout(5)
                try:
                    if c.recv(1024):
                        c.sendall(b"answer\n")
                        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass

    def close(self) -> None:
        self.stopping = True
        self.thread.join(2)
        self.sock.close()


def test_a_service_reset_right_after_its_answer_ends_the_client_connection_on_uvloop(tmp_path):
    svc = ResettingService()
    port = free_port()
    # idle_timeout far beyond the test: only passing the reset on can end the client's connection in time
    cfg = {"listeners": [{"name": "p", "listen": ["127.0.0.1", port], "idle_timeout": 600,
                          "routes": [{"name": "r", "target": list(svc.addr)}], "default_route": "r"}]}
    try:
        with IngressProcess(cfg, tmp_path, log_level="DEBUG") as ing:
            for i in range(20):  # the answer and the reset race: several connections see both orders
                with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
                    c.sendall(b"hello\n")
                    got = b""
                    deadline = time.monotonic() + 5
                    while time.monotonic() < deadline:
                        try:
                            chunk = c.recv(1024)
                        except ConnectionResetError:
                            break
                        except TimeoutError:
                            raise AssertionError(f"connection {i}: still open 5 s after the service's reset "
                                                 f"(got {got!r}); log:\n{ing.log()[-2000:]}") from None
                        if not chunk:
                            break
                        got += chunk
                    assert got in (b"", b"answer\n"), got
            assert "uvloop event loop" in ing.log()
    finally:
        svc.close()

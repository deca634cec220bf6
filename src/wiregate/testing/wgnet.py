"""Two WireGuard hosts in network namespaces, for tests and the benchmark.

    with Lab("w") as lab:
        net = WgNet(lab)
        a = net.side("a", "wiregate")        # `wiregate wg up` in its own process
        b = net.side("b", "wireguard-go")    # Debian's wireguard-go, configured with `wg set`
        net.connect(a, b)                    # peers of each other, both endpoints known
        net.start()
        a.ns.run(["ping", "-c1", b.tunnel_ip])

Underlay: a veth pair 192.0.2.1/24 <-> 192.0.2.2/24 (fd00:0:2::1/64 <-> fd00:0:2::2/64 too).
Tunnel: 198.51.100.1/24, 198.51.100.2/24 and fd00:51::1/64, fd00:51::2/64. Interface names are unique per process
because /var/run/wireguard is shared by all namespaces.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from wiregate import hostport
from wiregate.testing.netns import Lab, Netns
from wiregate.testing.peers import which
from wiregate.wireguard.config import PeerSection, WgQuickConfig, write

UAPI_DIR = Path("/var/run/wireguard")
WG_GO_ENV = {"WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1", "LOG_LEVEL": "error"}
_counter = itertools.count()


def keypair() -> tuple[bytes, bytes]:
    """A fresh X25519 (private, public) pair in raw bytes."""
    k = X25519PrivateKey.generate()
    priv = k.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return priv, k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass
class Side:
    kind: str  # "wiregate" or "wireguard-go"
    ns: Netns
    name: str
    index: int  # 1 or 2: picks the addresses
    private_key: bytes
    public_key: bytes
    port: int = 51820
    mtu: int = 1420
    peers: list[PeerSection] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    log: Path | None = None
    profile: Path | None = None  # wiregate only: write a cProfile of the process here on exit
    conf: Path | None = None  # wiregate only: its wg-quick file

    @property
    def underlay_ip(self) -> str:
        return f"192.0.2.{self.index}"

    @property
    def underlay_ip6(self) -> str:
        return f"fd00:0:2::{self.index}"

    @property
    def tunnel_ip(self) -> str:
        return f"198.51.100.{self.index}"

    @property
    def tunnel_ip6(self) -> str:
        return f"fd00:51::{self.index}"

    @property
    def sock(self) -> Path:
        return UAPI_DIR / f"{self.name}.sock"

    def wg(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run `wg ARGS` in this side's namespace (wg finds the interface by its UAPI socket)."""
        return self.ns.run(["wg", *args], check=check, timeout=15)


class WgNet:
    """Builds the two namespaces, the veth link, and starts each side's WireGuard."""

    def __init__(self, lab: Lab, workdir: Path | None = None) -> None:
        self.lab = lab
        self.dir = workdir or Path(tempfile.mkdtemp(prefix="wgnet"))
        self.sides: list[Side] = []
        self.veth: tuple[str, str] | None = None

    def side(self, tag: str, kind: str) -> Side:
        ns = self.lab.netns(tag)
        priv, pub = keypair()
        idx = len(self.sides) + 1
        name = f"wg{os.getpid() % 100000}{tag}{next(_counter)}"[:15]
        s = Side(kind, ns, name, idx, priv, pub)
        self.sides.append(s)
        if len(self.sides) == 2:
            a, b = self.sides
            self.veth = self.lab.link(a.ns, f"{a.underlay_ip}/24", b.ns, f"{b.underlay_ip}/24")
            for s2, ifname in zip(self.sides, self.veth, strict=True):
                s2.ns.run(["ip", "-6", "addr", "add", f"{s2.underlay_ip6}/64", "dev", ifname, "nodad"])
        return s

    def connect(self, a: Side, b: Side, *, endpoint_a: bool = True, endpoint_b: bool = True,
                keepalive: int = 0, v6_underlay: bool = False) -> None:
        """Make a and b peers of each other; endpoint_x: whether the OTHER side knows x's endpoint."""
        def ep(s: Side) -> tuple[str, int]:
            return (s.underlay_ip6 if v6_underlay else s.underlay_ip, s.port)
        a.peers.append(PeerSection(b.public_key, None, (f"{b.tunnel_ip}/32", f"{b.tunnel_ip6}/128"),
                                   ep(b) if endpoint_b else None, keepalive))
        b.peers.append(PeerSection(a.public_key, None, (f"{a.tunnel_ip}/32", f"{a.tunnel_ip6}/128"),
                                   ep(a) if endpoint_a else None, keepalive))

    def config(self, s: Side) -> WgQuickConfig:
        return WgQuickConfig(private_key=s.private_key, listen_port=s.port,
                             addresses=(f"{s.tunnel_ip}/24", f"{s.tunnel_ip6}/64"), mtu=s.mtu,
                             peers=tuple(s.peers))

    def start(self, *sides: Side, timeout: float = 10.0) -> None:
        for s in sides or self.sides:
            (self._start_wiregate if s.kind == "wiregate" else self._start_wggo)(s, timeout)

    def _wait_sock(self, s: Side, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not s.sock.exists():
            if s.proc is not None and s.proc.poll() is not None:
                log = s.log.read_text()[-2000:] if s.log and s.log.exists() else ""
                raise RuntimeError(f"{s.kind} for {s.name} exited with {s.proc.returncode}: {log}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{s.kind} did not open {s.sock} in {timeout}s")
            time.sleep(0.02)

    def _start_wiregate(self, s: Side, timeout: float) -> None:
        path = s.conf = self.dir / f"{s.name}.conf"
        write(path, self.config(s))
        s.log = self.dir / f"{s.name}.log"
        argv = [sys.executable, "-m", "wiregate", "wg", "up", str(path), "--name", s.name]
        if s.profile:
            argv += ["--profile", str(s.profile)]
        with open(s.log, "wb") as log:
            s.proc = self.lab.spawn(s.ns, argv, stdout=log, stderr=subprocess.STDOUT)
        self._wait_sock(s, timeout)
        # the interface is configured before the socket opens; wait until it is up as well
        deadline = time.monotonic() + timeout
        while "UP" not in s.ns.run(["ip", "-br", "link", "show", s.name], check=False).stdout:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{s.name} not up after {timeout}s")
            time.sleep(0.02)

    def _start_wggo(self, s: Side, timeout: float) -> None:
        exe = which("wireguard-go")
        if not exe:
            raise RuntimeError("wireguard-go is not installed")
        s.log = self.dir / f"{s.name}.log"
        with open(s.log, "wb") as log:
            s.proc = self.lab.spawn(s.ns, ["env", *(f"{k}={v}" for k, v in WG_GO_ENV.items()), exe, "-f", s.name],
                                    stdout=log, stderr=subprocess.STDOUT)
        self._wait_sock(s, timeout)
        key = self.dir / f"{s.name}.key"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(_b64(s.private_key) + "\n")
        args = ["set", s.name, "private-key", str(key), "listen-port", str(s.port)]
        for p in s.peers:
            args += ["peer", _b64(p.public_key), "allowed-ips", ",".join(p.allowed_ips)]
            if p.endpoint:
                args += ["endpoint", hostport.format(p.endpoint)]
            if p.persistent_keepalive:
                args += ["persistent-keepalive", str(p.persistent_keepalive)]
        s.wg(*args)
        s.ns.run(["ip", "link", "set", "dev", s.name, "mtu", str(s.mtu)])
        s.ns.run(["ip", "addr", "add", f"{s.tunnel_ip}/24", "dev", s.name])
        s.ns.run(["ip", "-6", "addr", "add", f"{s.tunnel_ip6}/64", "dev", s.name, "nodad"])
        s.ns.run(["ip", "link", "set", "dev", s.name, "up"])

    def stop(self, s: Side) -> None:
        from wiregate.testing.peers import stop
        stop(s.proc)


def _b64(key: bytes) -> str:
    import base64
    return base64.b64encode(key).decode()


_PING = r"""
import os, socket, struct, sys, time
addr, timeout = sys.argv[1], float(sys.argv[2])
v6 = ":" in addr
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_RAW,
                  socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP)
ident, payload = os.getpid() & 0xFFFF, os.urandom(16)
def csum(b):
    n = int.from_bytes(b + b"\0" * (len(b) & 1), "big") % 0xFFFF  # ones' complement sum of 16-bit words
    return (~n) & 0xFFFF
start = time.monotonic()
deadline = start + timeout
seq = 0
while time.monotonic() < deadline:
    seq += 1
    hdr = struct.pack("!BBHHH", 128 if v6 else 8, 0, 0, ident, seq)
    if not v6:
        hdr = struct.pack("!BBHHH", 8, 0, csum(hdr + payload), ident, seq)
    s.sendto(hdr + payload, (addr, 0))
    until = min(deadline, time.monotonic() + 0.5)
    while time.monotonic() < until:
        s.settimeout(max(until - time.monotonic(), 0.001))
        try:
            data = s.recv(2048)
        except socket.timeout:
            break
        if not v6:
            data = data[(data[0] & 15) * 4:]
        if data[0] == (129 if v6 else 0) and data[8:] == payload:
            print(time.monotonic() - start)
            sys.exit(0)
sys.exit(1)
"""


def icmp_ping(ns: Netns, addr: str, timeout: float = 5.0) -> float | None:
    """Send ICMP echo requests to `addr` from `ns` until one is answered; seconds from the first request to
    that answer, or None when `timeout` passes."""
    r = ns.run([sys.executable, "-c", _PING, addr, str(timeout)], check=False, timeout=timeout + 10)
    return float(r.stdout) if r.returncode == 0 else None


_ECHO_SERVER = r"""
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(4)
print("ready", flush=True)
s.settimeout(60)
while True:
    c, _ = s.accept()
    c.settimeout(30)
    while True:
        data = c.recv(65536)
        if not data:
            break
        c.sendall(data)
    c.close()
"""

_ECHO_CLIENT = r"""
import hashlib, os, socket, sys, threading, time
addr, port, n, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
payload = os.urandom(n)
c = socket.create_connection((addr, port), timeout=timeout)
c.settimeout(timeout)
def send():
    c.sendall(payload)
    c.shutdown(socket.SHUT_WR)
t = threading.Thread(target=send, daemon=True)
t.start()
got = hashlib.sha256()
total = 0
while total < n:
    data = c.recv(65536)
    if not data:
        break
    got.update(data)
    total += len(data)
ok = total == n and got.digest() == hashlib.sha256(payload).digest()
print("ok" if ok else f"mismatch {total}/{n}")
sys.exit(0 if ok else 1)
"""


def tcp_echo_server(lab: Lab, ns: Netns, addr: str, port: int) -> subprocess.Popen:
    """Start a TCP echo server in `ns` on addr:port (ended by the lab) and wait until it listens."""
    proc = lab.spawn(ns, [sys.executable, "-c", _ECHO_SERVER, addr, str(port)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None  # stdout=PIPE
    line = proc.stdout.readline()
    if line.strip() != "ready":
        raise RuntimeError(f"echo server on {addr}:{port} did not start")
    return proc


def tcp_echo_check(ns: Netns, addr: str, port: int, nbytes: int, timeout: float = 15.0) -> str:
    """Send `nbytes` random bytes to the echo server and check (sha256) that exactly they come back;
    returns "ok" or what went wrong."""
    r = ns.run([sys.executable, "-c", _ECHO_CLIENT, addr, str(port), str(nbytes), str(timeout)], check=False,
               timeout=timeout + 10)
    if r.returncode == 0:
        return "ok"
    lines = (r.stdout + r.stderr).strip().splitlines()
    return lines[-1] if lines else f"exit {r.returncode}"

"""The whole system in three network namespaces, for `wiregate demo` (and, through wiregate.testing.system, the
end-to-end tests).

    with Lab("e") as lab:
        sl = SystemLab(lab, workdir)
        sl.pair()                          # init gateway -> site add -> join, as a user would
        sl.add_sample_services()           # gateway [[services]] + home [[listeners]] + sample servers at home
        sl.start_gateway(); sl.start_home()
        sl.client.run([...])               # requests from the client namespace to the VPS's public address

client 203.0.113.2 ── 203.0.113.1 vps 198.51.100.1 ── 198.51.100.2 home   ("the internet": documentation ranges)
tunnel: gateway 192.0.2.1, home 192.0.2.2. The gateway endpoint is the name GATEWAY_NAME, resolved at home through
the $WIREGATE_HOSTS override file (so a test can move it). Each `wiregate run` is its own process in its own
namespace, readiness is read from its sd_notify datagram, everything ends by PID when the lab closes.
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from wiregate import hostport
from wiregate.config import pairing
from wiregate.demo.netns import Lab, Netns

CLIENT_IP, VPS_PUBLIC_IP = "203.0.113.2", "203.0.113.1"
VPS_IP, HOME_IP = "198.51.100.1", "198.51.100.2"
GATEWAY_TUNNEL_IP, HOME_TUNNEL_IP = "192.0.2.1", "192.0.2.2"
GATEWAY_NAME = "gateway.wiregate.test"
WG_PORT = 51820
SAMPLE_NAMES = ("a.example", "b.example")
_n = itertools.count()

def gateway_services(public: str, *, https: bool = True, udp: str = "udp-echo") -> str:
    """The sample gateway [[services]] on `public`: https :443 (with `https`), http :80, echo :7000 and UDP :5300
    (named `udp`, PROXY v2 to the home)."""
    text = f"""
[[services]]
name = "https"
listen = ["{hostport.format((public, 443))}"]
""" if https else ""
    return text + f"""
[[services]]
name = "http"
listen = ["{hostport.format((public, 80))}"]

[[services]]
name = "echo"
listen = ["{hostport.format((public, 7000))}"]

[[services]]
name = "{udp}"
protocol = "udp"
listen = ["{hostport.format((public, 5300))}"]
proxy_protocol = "v2"
"""


def home_listeners(service: str = "127.0.0.1", *, https: bool = True, udp: str = "udp-echo",
                   http_routes: str = "", echo_proxy: str = "v2") -> str:
    """The sample home [[listeners]] to the sample services at `service`: https :443 by SNI (with `https`), http :80
    by Host (`www`, then `http_routes`), TCP echo :7000 with PROXY `echo_proxy`, UDP :5300 (named `udp`) with PROXY
    v2."""
    tls = hostport.format((service, 8443))
    text = f"""
[[listeners]]
name = "https"
listen = "tunnel:443"

[[listeners.routes]]
name = "site-a"
sni = ["a.example"]
target = "{tls}"
send_proxy = "v2"

[[listeners.routes]]
name = "site-b"
sni = ["b.example"]
target = "{tls}"
send_proxy = "v2"
""" if https else ""
    return text + f"""
[[listeners]]
name = "http"
listen = "tunnel:80"

[[listeners.routes]]
name = "www"
host = ["www.example"]
target = "{hostport.format((service, 8080))}"
http_headers = true
{http_routes}
[[listeners]]
name = "echo"
listen = "tunnel:7000"
default_route = "echo"

[[listeners.routes]]
name = "echo"
target = "{hostport.format((service, 7007))}"
send_proxy = "{echo_proxy}"

[[listeners]]
name = "{udp}"
listen = "tunnel:5300"
protocol = "udp"

[[listeners.routes]]
name = "{udp}"
target = "{hostport.format((service, 5353))}"
send_proxy = "v2"
"""


GATEWAY_SERVICES = gateway_services(VPS_PUBLIC_IP)
HOME_LISTENERS = home_listeners()


def start_ready(spawn: Callable[[str], subprocess.Popen], note: Path, what: str, log: Path,
                timeout: float) -> subprocess.Popen:
    """`spawn(NOTIFY_SOCKET)` with a datagram socket bound at `note`; returns the process once it sent READY=1.
    RuntimeError when it exits first, TimeoutError after `timeout`, each with the tail of `log` (the process is left
    to its owner); the socket and `note` are removed either way."""
    note.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(str(note))
        proc = spawn(str(note))
        deadline = time.monotonic() + timeout
        sock.settimeout(0.2)
        while True:
            try:
                if b"READY=1" in sock.recv(4096).split(b"\n"):
                    return proc
            except TimeoutError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode}:\n{_tail(log)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not ready after {timeout}s:\n{_tail(log)}")
    finally:
        sock.close()
        note.unlink(missing_ok=True)


def _tail(log: Path, n: int = 3000) -> str:
    return log.read_text(errors="replace")[-n:] if log.exists() else ""


class SystemLab:
    """Three namespaces, the config files of both sides, and the processes (see module docstring)."""

    def __init__(self, lab: Lab, workdir: Path, *, home_mode: str = "builtin", gateway_mode: str = "builtin") -> None:
        self.lab = lab
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        self.home_mode = home_mode
        self.gateway_mode = gateway_mode
        self.client, self.vps, self.home = lab.netns("c"), lab.netns("v"), lab.netns("h")
        lab.link(self.client, f"{CLIENT_IP}/24", self.vps, f"{VPS_PUBLIC_IP}/24")
        self.home_link = lab.link(self.vps, f"{VPS_IP}/24", self.home, f"{HOME_IP}/24")
        tag = f"{os.getpid() % 10000}{next(_n)}"
        self.gw_if, self.home_if = f"wgg{tag}"[:15], f"wgh{tag}"[:15]
        self.gw_dir, self.home_dir = self.dir / "gateway", self.dir / "home"
        self.hosts = self.dir / "hosts"
        self.set_gateway_address(VPS_IP)
        self.gateway_proc: subprocess.Popen | None = None
        self.home_proc: subprocess.Popen | None = None
        self.samples_proc: subprocess.Popen | None = None

    # -- files ---------------------------------------------------------------------------------------------
    def set_gateway_address(self, ip: str) -> None:
        """Point GATEWAY_NAME at `ip` in the hosts override file the home process reads."""
        tmp = self.hosts.with_suffix(".tmp")
        tmp.write_text(f"# wiregate test resolver override ($WIREGATE_HOSTS)\n{ip} {GATEWAY_NAME}\n")
        os.replace(tmp, self.hosts)

    @property
    def gateway_file(self) -> Path:
        return self.gw_dir / pairing.GATEWAY_FILE

    @property
    def home_file(self) -> Path:
        return self.home_dir / pairing.HOME_FILE

    def pair(self, *, resolve_interval: float = 1.0, probe_interval: float = 1.0) -> str:
        """init gateway -> site add home -> join, then point both files at this lab; returns the join token."""
        pairing.init_gateway(self.gw_dir, f"{GATEWAY_NAME}:{WG_PORT}", name=f"gw{self.gw_if[3:]}",
                             interface=self.gw_if)
        token = pairing.site_add(self.gateway_file, "home").token
        pairing.join(token, self.home_dir, name=f"home{self.home_if[3:]}", interface=self.home_if)
        self._edit(self.gateway_file, "[tunnel]\n", f'[tunnel]\nmode = "{self.gateway_mode}"\n')
        self._edit(self.home_file, "[tunnel]\n",
                   f'[tunnel]\nmode = "{self.home_mode}"\n'
                   f"resolve_interval = {resolve_interval}\nprobe_interval = {probe_interval}\n"
                   "persistent_keepalive = 5\n")
        for path, name in ((self.gateway_file, "gw"), (self.home_file, "home")):
            # a short drain: the lab's connections are done when it stops (the default waits up to 30 s)
            self._edit(path, "\n[tunnel]\n", "drain_timeout = 2.0\n\n[tunnel]\n")
            self._edit(path, "[metrics]\n", f'[control]\nsocket = "{self.dir / (name + ".ctl")}"\n\n[metrics]\n')
        return token

    @staticmethod
    def _edit(path: Path, old: str, new: str) -> None:
        text = path.read_text()
        assert old in text, f"{old!r} not in {path}"
        path.write_text(text.replace(old, new, 1))

    def add_sample_services(self, gateway_extra: str = GATEWAY_SERVICES, home_extra: str = HOME_LISTENERS) -> None:
        """The sample services: public ports on the gateway, listeners/routes at home."""
        self.gateway_file.write_text(self.gateway_file.read_text() + gateway_extra)
        self.home_file.write_text(self.home_file.read_text() + home_extra)

    # -- processes -----------------------------------------------------------------------------------------
    def _run_node(self, ns: Netns, path: Path, name: str, timeout: float) -> subprocess.Popen:
        def spawn(note: str) -> subprocess.Popen:
            env = dict(os.environ, NOTIFY_SOCKET=note, WIREGATE_HOSTS=str(self.hosts), PYTHONUNBUFFERED="1")
            with open(self.dir / f"{name}.log", "ab") as log:
                return self.lab.spawn(ns, [sys.executable, "-m", "wiregate", "run", "--access-log", str(path)],
                                      stdout=log, stderr=subprocess.STDOUT, env=env)
        return start_ready(spawn, self.dir / f"notify-{name}", f"wiregate run ({name})", self.dir / f"{name}.log",
                           timeout)

    def log_tail(self, name: str, n: int = 3000) -> str:
        return _tail(self.dir / f"{name}.log", n)

    def node(self, side: str) -> subprocess.Popen:
        """The `wiregate run` process of "gateway" or "home" (from start_gateway / start_home on)."""
        proc = self.gateway_proc if side == "gateway" else self.home_proc
        if proc is None:
            raise RuntimeError(f"the {side} is not started")
        return proc

    def start_gateway(self, timeout: float = 30.0) -> None:
        self.gateway_proc = self._run_node(self.vps, self.gateway_file, "gateway", timeout)

    def start_home(self, timeout: float = 30.0) -> None:
        self.home_proc = self._run_node(self.home, self.home_file, "home", timeout)

    def start_samples(self, *, tls: str = "127.0.0.1:8443", http: str = "127.0.0.1:8080",
                      echo: str = "127.0.0.1:7007", udp: str = "127.0.0.1:5353") -> None:
        """The sample services in the home namespace (see wiregate.demo.samples)."""
        argv = [sys.executable, "-m", "wiregate.demo.samples", "--tls", tls, "--certdir", str(self.dir / "certs"),
                "--names", ",".join(SAMPLE_NAMES), "--http", http, "--echo", echo, "--udp", udp, "--proxy"]
        self.samples_proc = self.lab.spawn(self.home, argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                           text=True)
        out = self.samples_proc.stdout
        assert out is not None  # spawned with stdout=PIPE
        line = out.readline()
        if line.strip() != "ready":
            raise RuntimeError("sample services did not start")

    # -- client side ---------------------------------------------------------------------------------------
    def client_python(self, code: str, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
        """Run a Python snippet in the client namespace."""
        return self.client.run([sys.executable, "-c", code, *args], check=False, timeout=timeout)

    def status(self, side: str) -> dict:
        from wiregate.control import request
        reply = request(self.dir / f"{'gw' if side == 'gateway' else 'home'}.ctl", {"cmd": "status"})
        return reply["status"]


# Requests the client makes; each prints one line: what the service answered.
CLIENT_REQUESTS = r"""
import socket, ssl, sys, time
host = sys.argv[1]
which = sys.argv[2].split(",")
def tls(name):
    ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, 443), timeout=10) as s, ctx.wrap_socket(s, server_hostname=name) as t:
        cn = t.getpeercert(binary_form=True)
        t.sendall(b"hello\n")
        return t.recv(200).decode().strip() + (" cert-ok" if name.encode() in cn else " cert-WRONG")
def http():
    with socket.create_connection((host, 80), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: www.example\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            c = s.recv(4096)
            if not c: break
            data += c
        return data.split(b"\r\n\r\n", 1)[-1].decode().strip()
def echo():
    with socket.create_connection((host, 7000), timeout=10) as s:
        s.sendall(b"ping")
        s.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            c = s.recv(4096)
            if not c: break
            data += c
        return data.decode().replace("\n", " | ")
def udp():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.settimeout(2)
        for _ in range(5):
            u.sendto(b"ping", (host, 5300))
            try:
                return u.recv(2000).decode()
            except socket.timeout:
                pass
        return "no answer"
for w in which:
    fn = {"tls-a": lambda: tls("a.example"), "tls-b": lambda: tls("b.example"), "http": http, "echo": echo,
          "udp": udp}[w]
    try:
        print(f"{w}: {fn()}", flush=True)
    except Exception as e:
        print(f"{w}: FAILED {type(e).__name__}: {e}", flush=True)
"""


def client_requests(sl: SystemLab, which: str = "tls-a,tls-b,http,echo,udp") -> dict[str, str]:
    """Run the sample requests from the client namespace; {request: what the service answered}."""
    r = sl.client_python(CLIENT_REQUESTS, VPS_PUBLIC_IP, which, timeout=90)
    out = {}
    for line in r.stdout.splitlines():
        k, _, v = line.partition(": ")
        out[k] = v
    if not out:
        out["error"] = r.stderr[-2000:]
    return out


def wait_for(cond, timeout: float, interval: float = 0.2) -> float:
    """Poll `cond()` until true; returns the seconds it took, raises TimeoutError after `timeout`."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"condition not met after {timeout}s")
        time.sleep(interval)
    return time.monotonic() - t0

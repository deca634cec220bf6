"""High availability in network namespaces: one home behind two gateways, or one service behind two homes.

    with Lab("f") as lab:
        fl = FailoverLab(lab, tmp_path)       # client, gateway A, gateway B, home; paired with the CLI as a user does
        fl.start()                            # both gateways, the home (two tunnels), the echo service at home
        figures = fl.kill_and_return()        # a request loop through A then B; SIGKILL A; start A again

client 203.0.113.2 ─ 203.0.113.1 A 198.51.100.1 ─ 198.51.100.2   home   (tunnel A: 192.0.2.0/24, init's default)
client 203.0.113.10 ─ 203.0.113.9 B 198.51.100.9 ─ 198.51.100.10 home   (tunnel B: 198.51.100.128/25: a second
                                                                         gateway needs its own tunnel prefix)

Files are what `init gateway` / `site add` / `join` (twice at home) write, plus the user's [[services]] and
[[listeners]]; each host has its own /run (UserHost), so the default control sockets are used. The client tries
A, then B (as curl and browsers do with two A records), from a script whose every request is bounded in time.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from wiregate import hostport
from wiregate.config.model import HomeConfig
from wiregate.testing.netns import Lab
from wiregate.testing.system import wait_for
from wiregate.testing.userhost import UserHost

CLIENT_A, A_PUBLIC, CLIENT_B, B_PUBLIC = "203.0.113.2", "203.0.113.1", "203.0.113.10", "203.0.113.9"
A_IP, HOME_A, B_IP, HOME_B = "198.51.100.1", "198.51.100.2", "198.51.100.9", "198.51.100.10"
B_TUNNEL = "198.51.100.129/25"
PORT = 7000
ECHO = "127.0.0.1:7007"

HOME_LISTENER = f"""
[[listeners]]
name = "echo"
listen = "tunnel:{PORT}"

[[listeners.routes]]
name = "echo"
target = "{ECHO}"
send_proxy = "v2"
"""


def gateway_service(public: str) -> str:
    return f'\n[[services]]\nname = "echo"\nlisten = ["{public}:{PORT}"]\n'


# The client: `workers` threads each make requests in a loop (connect to A, else B; send, wait `hold` seconds so
# requests are in flight when A dies, read the echo); a request that fails after connecting is retried once from
# the next address, as a browser retries an idempotent request. `holders` connections to B stay open and
# exchange a line every 0.2 s. One JSON line per request; a summary line per holder at the end. Bounded: until
# the stop file exists or `limit` seconds pass.
CLIENT = r"""
import json, os, socket, sys, threading, time
addrs, port, workers, hold, holders, stop, limit = (sys.argv[1].split(","), int(sys.argv[2]), int(sys.argv[3]),
                                                    float(sys.argv[4]), int(sys.argv[5]), sys.argv[6],
                                                    float(sys.argv[7]))
end = time.monotonic() + limit
lock = threading.Lock()
def out(rec):
    with lock:
        print(json.dumps(rec), flush=True)
class NoConnection(Exception):
    pass
def attempt(addr):
    try:
        s = socket.create_connection((addr, port), timeout=1.0)
    except OSError as e:  # refused or timed out: the caller tries the next address
        raise NoConnection(repr(e)[:80])
    try:
        s.settimeout(10.0)  # above the relay's connect_timeout (5 s): a gateway retrying another home still answers
        s.sendall(b"ping")
        time.sleep(hold)  # the answer is whole only after the rest is sent: a request in flight, like HTTP's
        s.sendall(b"pong")
        s.shutdown(socket.SHUT_WR)
        data = b""
        while len(data) < 4096:
            c = s.recv(4096)
            if not c:
                break
            data += c
    finally:
        s.close()
    text = data.decode(errors="replace")
    if not (text.startswith("echo client ") and text.endswith("pingpong")):
        raise ConnectionError(f"bad answer {text[:60]!r}")
    return text.split()[2]
def request(order, retry):
    t0 = time.time()
    tried = []
    for addr in order:
        try:
            s = attempt(addr)
        except NoConnection:
            tried.append(addr)
            continue
        except OSError as e:  # the request failed after it had a connection: it was in flight
            return {"t0": t0, "t1": time.time(), "addr": addr, "ok": False, "error": repr(e)[:80],
                    "retry": retry, "tried": tried}
        return {"t0": t0, "t1": time.time(), "addr": addr, "ok": True, "client": s, "retry": retry, "tried": tried}
    return {"t0": t0, "t1": time.time(), "addr": None, "ok": False, "error": "no address answered", "retry": retry,
            "tried": tried}
def worker():
    while time.monotonic() < end and not os.path.exists(stop):
        rec = request(addrs, False)
        out(rec)
        if not rec["ok"] and rec["addr"] is not None:
            rest = addrs[addrs.index(rec["addr"]) + 1:] + addrs[:addrs.index(rec["addr"]) + 1]
            out(request(rest, True))
def holder(i):
    n = errors = 0
    last = None
    try:
        with socket.create_connection((addrs[-1], port), timeout=2) as s:
            s.settimeout(5)
            f = s.makefile("rb")
            head = f.readline()
            while time.monotonic() < end and not os.path.exists(stop):
                s.sendall(b"line %d\n" % n)
                if f.readline() != b"line %d\n" % n:
                    errors += 1
                    break
                n += 1
                last = time.time()
                time.sleep(0.2)
    except OSError as e:
        errors += 1
        last = repr(e)[:80]
    out({"holder": i, "round_trips": n, "errors": errors, "last": last})
threads = [threading.Thread(target=worker) for _ in range(workers)] + \
          [threading.Thread(target=holder, args=(i,)) for i in range(holders)]
for t in threads:
    t.start()
for t in threads:
    t.join()
"""


def _token(out: str) -> str:
    """The join token `site add` printed."""
    m = re.search(r"wgj1\S+", out)
    if m is None:
        raise RuntimeError(f"no join token in the output of `site add`: {out[-500:]}")
    return m.group(0)


def ok(r: subprocess.CompletedProcess) -> str:
    """The output of a CLI run that must succeed."""
    assert r.returncode == 0, r.stderr
    return r.stdout


class FailoverLab:
    """Client, gateways A and B, one home paired with both (see module docstring)."""

    def __init__(self, lab: Lab, workdir: Path, b_endpoint: str = B_IP) -> None:
        """b_endpoint: what gateway B's token names (a DNS name: the home resolves it through the hosts file
        `self.hosts`, $WIREGATE_HOSTS, which `set_hosts` rewrites)."""
        self.lab = lab
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        self.b_endpoint = b_endpoint
        self.hosts = self.dir / "hosts"
        self.hosts.write_text("")
        self.client = lab.netns("c")
        self.a, self.b, self.home = (UserHost.make(lab, n, self.dir) for n in ("a", "b", "h"))
        self.home.env["WIREGATE_HOSTS"] = str(self.hosts)
        lab.link(self.client, f"{CLIENT_A}/29", self.a.ns, f"{A_PUBLIC}/29")
        lab.link(self.client, f"{CLIENT_B}/29", self.b.ns, f"{B_PUBLIC}/29")
        lab.link(self.a.ns, f"{A_IP}/29", self.home.ns, f"{HOME_A}/29")
        lab.link(self.b.ns, f"{B_IP}/29", self.home.ns, f"{HOME_B}/29")
        self.a_dir, self.b_dir, self.home_dir = self.dir / "a", self.dir / "b", self.dir / "home"
        self.procs: dict[str, subprocess.Popen] = {}

    @property
    def home_file(self) -> Path:
        return self.home_dir / "home.toml"

    def pair(self, join_b: bool = True) -> None:
        """As a user: init both gateways (B with its own tunnel prefix), `site add home` on each, `join` A (and B,
        unless join_b is False: then `join_b()` does it later)."""
        ok(self.a.cli("init", "gateway", "--endpoint", A_IP, "--config-dir", str(self.a_dir)))
        ok(self.b.cli("init", "gateway", "--endpoint", self.b_endpoint, "--address", B_TUNNEL, "--config-dir",
                      str(self.b_dir)))
        self.tokens = {}
        for name, host, d, public in (("a", self.a, self.a_dir, A_PUBLIC), ("b", self.b, self.b_dir, B_PUBLIC)):
            out = ok(host.cli("site", "add", "home", "--config-dir", str(d)))
            self.tokens[name] = _token(out)
            gw = d / "gateway.toml"
            gw.write_text(gw.read_text() + gateway_service(public))
        ok(self.home.cli("join", self.tokens["a"], "--config-dir", str(self.home_dir)))
        self.home_file.write_text(self.home_file.read_text() + HOME_LISTENER)
        if join_b:
            self.join_b()

    def join_b(self) -> str:
        """`wiregate join TOKEN_B` on the existing home file (adds a [[gateways]] table); returns its output."""
        return ok(self.home.cli("join", self.tokens["b"], "--config-dir", str(self.home_dir)))

    def start(self, join_b: bool = True, home_mode: str | None = None, tunnel_extra: str = "",
              ready: tuple[str, ...] | None = None) -> None:
        """The echo service at home, both gateways, then the home; returns when a request works through each
        gateway the home has joined. home_mode "external": the home's tunnels are wireguard-go, one per gateway,
        configured from `wiregate export wg-quick` (+ `wg-quick strip`), and wiregate runs the ingress on them."""
        self.pair(join_b)
        if home_mode or tunnel_extra:
            extra = (f'mode = "{home_mode}"\n' if home_mode else "") + tunnel_extra
            text = self.home_file.read_text()
            self.home_file.write_text(text.replace("[tunnel]\n", f"[tunnel]\n{extra}", 1))
        if home_mode == "external":
            self.start_wireguard_go_home()
        samples = self.lab.spawn(self.home.ns, [sys.executable, "-m", "wiregate.testing.samples", "--echo", ECHO,
                                                "--proxy"], stdout=subprocess.PIPE, text=True)
        assert samples.stdout is not None and samples.stdout.readline().strip() == "ready"
        self.start_gateway("a")
        self.start_gateway("b")
        self.procs["home"] = self.home.start_node(self.home_file, self.dir / "home.log")
        for addr in ready if ready is not None else (A_PUBLIC, B_PUBLIC) if join_b else (A_PUBLIC,):
            wait_for(lambda addr=addr: self.one_request(addr), 30, 0.3)

    def set_hosts(self, name: str, ip: str) -> None:
        """Make `name` resolve to `ip` at home (the override file is read at every lookup)."""
        tmp = self.hosts.with_suffix(".tmp")
        tmp.write_text(f"{ip} {name}\n")
        os.replace(tmp, self.hosts)

    def start_wireguard_go_home(self, timeout: float = 10.0) -> None:
        """wireguard-go for each of the home's gateways, from the exported wg-quick files, as a user would run it."""
        from wiregate.config import load
        from wiregate.testing.peers import program
        from wiregate.testing.wgnet import WG_GO_ENV

        exported = self.dir / "wg-quick"
        ok(self.home.cli("export", "wg-quick", str(self.home_file), "-o", str(exported)))
        cfg = load(self.home_file)
        assert isinstance(cfg, HomeConfig)
        for g in cfg.links:
            with open(self.dir / f"wireguard-go-{g.interface}.log", "ab") as log:
                self.home.spawn(["env", *(f"{k}={v}" for k, v in WG_GO_ENV.items()), program("wireguard-go"), "-f",
                                 g.interface], stdout=log, stderr=subprocess.STDOUT)
            sock = f"/var/run/wireguard/{g.interface}.sock"
            wait_for(lambda sock=sock: self.home.run(["test", "-S", sock]).returncode == 0, timeout, 0.05)
            stripped = self.dir / f"{g.interface}.stripped"
            fd = os.open(stripped, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(subprocess.run([program("wg-quick"), "strip", str(exported / f"{g.interface}.conf")],
                                       capture_output=True, text=True, check=True).stdout)
            for argv in (["wg", "setconf", g.interface, str(stripped)], ["ip", "addr", "add", g.address, "dev",
                         g.interface], ["ip", "link", "set", "dev", g.interface, "mtu", str(cfg.tunnel.mtu), "up"]):
                r = self.home.run(argv)
                assert r.returncode == 0, (argv, r.stderr)

    def start_gateway(self, which: str) -> float:
        """`wiregate run` of gateway A or B; returns the time (time.time()) it said READY."""
        host, d = (self.a, self.a_dir) if which == "a" else (self.b, self.b_dir)
        self.procs[which] = host.start_node(d / "gateway.toml", self.dir / f"gateway-{which}.log")
        return time.time()

    def kill(self, which: str) -> float:
        """SIGKILL a node's `wiregate run` (by its PID); returns the time it was sent."""
        proc = self.procs.pop(which)
        t = time.time()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        return t

    def one_request(self, addr: str) -> bool:
        r = self.client.run([sys.executable, "-c", CLIENT, addr, str(PORT), "1", "0", "0", "/nonexistent", "0.01"],
                            check=False, timeout=20)
        return any(json.loads(line).get("ok") for line in r.stdout.splitlines() if line.startswith("{"))

    def log(self, name: str) -> str:
        p = self.dir / f"{name}.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def kill_and_return(self, *, workers: int = 4, hold: float = 0.3, holders: int = 3, before: int = 15,
                        after: int = 15, limit: float = 90.0) -> dict[str, Any]:
        """Run the request loop; SIGKILL gateway A once `before` requests succeeded; start A again once `after`
        requests started after the kill succeeded; stop when `after` requests went through A again. Returns the
        records and the figures (see `figures`)."""
        out, stop = self.dir / "client.jsonl", self.dir / "client.stop"
        stop.unlink(missing_ok=True)
        with open(out, "wb") as f:
            proc = self.lab.spawn(self.client, [sys.executable, "-c", CLIENT, f"{A_PUBLIC},{B_PUBLIC}", str(PORT),
                                                str(workers), str(hold), str(holders), str(stop), str(limit)],
                                  stdout=f)

        def records() -> list[dict]:
            return [json.loads(line) for line in out.read_text().splitlines() if line.startswith("{")
                    and line.endswith("}")]

        def ok_since(t: float, addr: str | None = None) -> int:
            return sum(1 for r in records() if r.get("ok") and r["t0"] >= t and (addr is None or r["addr"] == addr))

        try:
            wait_for(lambda: ok_since(0) >= before, 30, 0.1)
            t_kill = self.kill("a")
            wait_for(lambda: ok_since(t_kill) >= after, 30, 0.1)
            t_ready = self.start_gateway("a")
            wait_for(lambda: ok_since(t_ready, A_PUBLIC) >= after, 40, 0.1)
        finally:
            stop.touch()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        recs = records()
        return {"records": recs, "t_kill": t_kill, "t_ready": t_ready, **figures(recs, t_kill, t_ready)}


def _median(xs: list[float]) -> float | None:
    import statistics

    return round(statistics.median(xs), 3) if xs else None


def figures(recs: list[dict], t_kill: float, t_ready: float) -> dict[str, Any]:
    """What the loop saw: requests and failures by phase, which failures were in flight on A when it died, the
    fail-over time (kill -> first success of a request started after it), A's return time (ready -> first success
    through A), and the holders' round trips through B."""
    reqs = [r for r in recs if "t0" in r]
    first = [r for r in reqs if not r["retry"]]
    failed = [r for r in first if not r["ok"]]
    in_flight = [r for r in failed if r["addr"] == A_PUBLIC and r["t0"] < t_kill <= r["t1"]]
    retries = [r for r in reqs if r["retry"]]
    after_kill = [r for r in first if r["t0"] >= t_kill]
    ok_after = sorted(r["t1"] for r in after_kill if r["ok"])
    back = sorted(r["t1"] for r in first if r["ok"] and r["addr"] == A_PUBLIC and r["t0"] >= t_ready)
    holders = [r for r in recs if "holder" in r]
    seen = {A_PUBLIC: CLIENT_A, B_PUBLIC: CLIENT_B}  # the client address each gateway's side of the client has
    wrong = [r for r in reqs if r["ok"] and hostport.parse(r["client"]).host != seen[r["addr"]]]
    return {
        "wrong_client_address": len(wrong),
        "requests": len(first), "succeeded": sum(1 for r in first if r["ok"]), "failed": len(failed),
        "failed_in_flight_on_a": len(in_flight), "failed_other": len(failed) - len(in_flight),
        "retries": len(retries), "retries_ok": sum(1 for r in retries if r["ok"]),
        "started_after_kill": len(after_kill), "started_after_kill_ok": sum(1 for r in after_kill if r["ok"]),
        "failover_s": round(ok_after[0] - t_kill, 3) if ok_after else None,
        # a request's own time (it holds `hold` s): before the kill through A, after it through B after A refused
        "request_s_median_before_kill": _median([r["t1"] - r["t0"] for r in first if r["ok"] and r["t1"] < t_kill]),
        "request_s_max_after_kill": round(max((r["t1"] - r["t0"] for r in after_kill if r["t1"] < t_ready),
                                              default=0.0), 3),
        "a_back_s": round(back[0] - t_ready, 3) if back else None,
        "holders": len(holders), "holder_errors": sum(r["errors"] for r in holders),
        "holder_round_trips": sum(r["round_trips"] for r in holders),
        "holders_alive_after_kill": sum(1 for r in holders if isinstance(r["last"], float) and r["last"] > t_kill),
    }


class TwoHomesLab:
    """One service behind two homes: client, one gateway, homes 1 and 2 (each paired with `site add` + `join`).

    client 203.0.113.2 ─ 203.0.113.1 gateway 198.51.100.1 ─ 198.51.100.2 home1
                                              198.51.100.9 ─ 198.51.100.10 home2      (tunnel: 192.0.2.0/24)
    The gateway's service names no `sites`, so it balances over both (roundrobin, health checks on: the defaults).
    """

    def __init__(self, lab: Lab, workdir: Path) -> None:
        self.lab = lab
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        self.client = lab.netns("c")
        self.vps, self.h1, self.h2 = (UserHost.make(lab, n, self.dir) for n in ("v", "h1", "h2"))
        lab.link(self.client, f"{CLIENT_A}/29", self.vps.ns, f"{A_PUBLIC}/29")
        lab.link(self.vps.ns, f"{A_IP}/29", self.h1.ns, f"{HOME_A}/29")
        lab.link(self.vps.ns, f"{B_IP}/29", self.h2.ns, f"{HOME_B}/29")
        self.gw_dir = self.dir / "gateway"
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self) -> None:
        # the homes reach the gateway on different addresses of it: each token names the one its home dials
        ok(self.vps.cli("init", "gateway", "--endpoint", A_IP, "--config-dir", str(self.gw_dir)))
        gw = self.gw_dir / "gateway.toml"
        for name, host in (("home1", self.h1), ("home2", self.h2)):
            token = _token(ok(self.vps.cli("site", "add", name, "--config-dir", str(self.gw_dir))))
            d = self.dir / name
            ok(host.cli("join", token, "--config-dir", str(d)))
            home = d / "home.toml"
            text = home.read_text() + HOME_LISTENER
            if name == "home2":
                text = text.replace(f'gateway_endpoint = "{A_IP}:51820"', f'gateway_endpoint = "{B_IP}:51820"')
            home.write_text(text)
        gw.write_text(gw.read_text() + gateway_service(A_PUBLIC))
        for host in (self.h1, self.h2):
            samples = self.lab.spawn(host.ns, [sys.executable, "-m", "wiregate.testing.samples", "--echo", ECHO,
                                               "--proxy"], stdout=subprocess.PIPE, text=True)
            assert samples.stdout is not None and samples.stdout.readline().strip() == "ready"
        self.procs["gateway"] = self.vps.start_node(gw, self.dir / "gateway.log")
        for name, host in (("home1", self.h1), ("home2", self.h2)):
            self.procs[name] = host.start_node(self.dir / name / "home.toml", self.dir / f"{name}.log")
        try:  # generous: on a loaded 2-core machine each request here is a Python start in the client namespace
            wait_for(lambda: all(b["state"] == "up" and b["total"] > 0 for b in self.backends())
                     if self.requests(4) >= 4 else False, 90, 0.3)
        except TimeoutError:
            logs = "\n".join(f"--- {n}.log\n" + (self.dir / f"{n}.log").read_text(errors="replace")[-1500:]
                             for n in ("gateway", "home1", "home2") if (self.dir / f"{n}.log").exists())
            raise TimeoutError(f"both homes not up and used within 90 s; backends: {self.backends()}\n{logs}") \
                from None

    def backends(self) -> list[dict]:
        st = json.loads(self.vps.cli("status", "--json").stdout)
        return st["relay"]["services"]["echo"]["backends"]

    def requests(self, n: int) -> int:
        """n requests one after another from the client; how many succeeded."""
        # a client run may make more than one request before its time limit: count them all, and a failure
        # anywhere counts as not ready
        recs = self.request_records(n)
        return sum(1 for r in recs if r["ok"]) if all(r["ok"] for r in recs) else 0

    def request_records(self, n: int) -> list[dict]:
        recs: list[dict] = []
        for _ in range(n):
            r = self.client.run([sys.executable, "-c", CLIENT, A_PUBLIC, str(PORT), "1", "0", "0", "/nonexistent",
                                 "0.01"], check=False, timeout=30)
            recs += [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
        return recs

    def kill(self, name: str) -> float:
        proc = self.procs.pop(name)
        t = time.time()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        return t

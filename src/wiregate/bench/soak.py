"""`wiregate bench soak`: the whole system under a mixed bounded load while faults are injected on a schedule.

Four network namespaces, set up as `wiregate demo` and the end-to-end tests do (wiregate.testing.system):

    client 203.0.113.2 -- 203.0.113.1 vps 198.51.100.1 -- 198.51.100.2 home (+ 127.0.0.2: the lossy middlebox)
    home fd00:5::1 -- fd00:5::2 service          tunnel: gateway 192.0.2.1, home 192.0.2.2

The two config files are what `wiregate init` / `site add` / `join` write, plus [[services]] (gateway: http :80,
echo :7000, udp :5300) and [[listeners]] (home: by Host with X-Forwarded-For, TCP echo with PROXY v2, UDP with
PROXY v2, all to the service namespace). Each side is one `wiregate run` process.

The load (wiregate.testing.soakload, in the client namespace) mixes short HTTP requests (a new connection each,
one every 0.2 s), keep-alive HTTP (2 connections, a request every 0.2 s, 30 s each), long TCP streams (3, 40 s
each, every echoed byte checked plus a SHA-256) and UDP request/response (4 sockets). Every answer also says which
client address the service was given: it must be the client's own.

Faults, in this order, until the time is up (at least once each): a bad config reload of both sides (refused,
nothing lost), a home SIGHUP reload with changed routes, the home's veth link down for 3 s, 10% loss + 50 ms delay
each way for 6 s, the home's address changing (roaming), the gateway SIGKILLed and restarted. The middlebox (a
userspace UDP relay at home, wiregate.testing.lossy) sits in the tunnel's path for the whole run and drops and
delays only in `loss`. Each fault opens a window that lasts until the last 5 short HTTP and 3 UDP requests started
after the fault ended have succeeded and the gateway has every backend up again, plus QUIET calm seconds.

Counted per window: requests attempted / succeeded / failed per kind, corrupted bytes (must be 0), answers naming
another client (must be 0), established connections lost (must be 0 unless a process on their path was killed),
time to recover; and the RSS and open descriptors of every wiregate process at each window's end (their growth
from the end of the warm-up to the end must stay under RSS_GROWTH_MAX_KB / FD_GROWTH_MAX).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from wiregate import hostport
from wiregate.demo import system as sample
from wiregate.errors import WiregateError

FAULTS = ("bad_reload", "home_reload", "link_down", "loss", "roam", "gateway_kill")
KILLS = {"gateway_kill": ("gateway",)}  # fault -> wiregate processes it kills (their connections may be lost)
KINDS = ("http_short", "http_keep", "stream_open", "udp")
# a fault's window ends once the last requests of these kinds (started after the fault ended) all succeeded and
# the gateway's health checks have every backend up again: recovered, and staying so
STEADY = {"http_short": 5, "udp": 3}
# the lossy middlebox runs in the home namespace on a loopback address (the gateway's own port 51820 is taken on
# the VPS by its wildcard socket): in `loss` the gateway's name points here, and the box forwards to the gateway
BOX_IP = "127.0.0.2"
SERVICE_IP, SERVICE_HOME_IP = "fd00:5::2", "fd00:5::1"
LINK_DOWN_S, LOSS_S, LOSS, DELAY = 3.0, 6.0, 0.10, 0.05
QUIET = 2.0  # calm seconds after each recovery
RECOVER_TIMEOUT = 60.0
FD_GROWTH_MAX = 16
# what the two processes said during a window, counted from their logs (to explain the figures)
LOG_COUNTS = {"backend_down": ("gateway", "is DOWN"), "backend_up": ("gateway", "is UP"),
              "home_new_handshakes": ("home", "starting a new handshake")}
RSS_GROWTH_MAX_KB = 48 * 1024

ALT_ROUTE = """
[[listeners.routes]]
name = "alt"
host = ["alt.example"]
target = "[{svc}]:8080"
http_headers = true
"""


def _pipe(f: IO[str] | None) -> IO[str]:
    """A text pipe a process was spawned with (stdin/stdout=PIPE, text=True)."""
    if f is None:
        raise RuntimeError("bench soak: the process has no such pipe")
    return f


def home_listeners(variant: int) -> str:
    """Variants 0 and 1 differ in routes (a route added to the http listener, the echo route's PROXY version):
    each home reload switches to the other. (Changing the `www` route itself would hit the bug that
    tests/ingress/test_reload_keep_alive.py shows: its open keep-alive connections get 421 and are closed.)"""
    alt = ALT_ROUTE.format(svc=SERVICE_IP) if variant else ""
    return sample.home_listeners(SERVICE_IP, https=False, udp="udp", http_routes=alt,
                                 echo_proxy="v2" if variant == 0 else "v1")


@dataclass
class Window:
    name: str
    t_start: float
    t_inject: float = 0.0
    t_heal: float = 0.0
    t_end: float = 0.0
    kills: tuple[str, ...] = ()
    notes: dict[str, Any] = field(default_factory=dict)


def summarize(events: list[dict], windows: list[Window]) -> list[dict[str, Any]]:
    """Per window: requests by kind, corrupted bytes, wrong client addresses, connections lost, recovery times.

    Pure: `events` are the load's JSON objects, `windows` sorted by start. A request belongs to the window it
    started in, a connection to the window it ended in."""
    def index(t: float) -> int:
        i = 0
        for j, w in enumerate(windows):
            if w.t_start <= t:
                i = j
        return i

    out: list[dict[str, Any]] = []
    for w in windows:
        out.append({"fault": w.name, "kills": list(w.kills), "seconds": round(w.t_end - w.t_start, 2),
                    "outage_s": round(w.t_heal - w.t_inject, 2) if w.name != "baseline" else 0.0,
                    "requests": {k: {"attempted": 0, "succeeded": 0, "failed": 0} for k in KINDS},
                    "errors": {}, "corrupted_bytes": 0, "wrong_client": 0,
                    "connections": {"ended": 0, "lost": 0}, "lost": [], "recovery_s": {}, "notes": w.notes})
    after: dict[tuple[int, str], list[dict]] = {}
    for ev in events:
        if ev.get("k") == "req":
            i = index(ev["t0"])
            r = out[i]["requests"].setdefault(ev["kind"], {"attempted": 0, "succeeded": 0, "failed": 0})
            r["attempted"] += 1
            r["succeeded" if ev["ok"] else "failed"] += 1
            if not ev["ok"]:
                key = f"{ev['kind']}: {ev['err'] or 'bad answer'}"
                out[i]["errors"][key] = out[i]["errors"].get(key, 0) + 1
            # a request still open when the next fault was injected may have failed of that fault: it says
            # nothing about recovering from this one (counted above, left out of the recovery time)
            settled = i + 1 >= len(windows) or ev["t1"] <= windows[i + 1].t_inject
            if ev["t0"] >= windows[i].t_heal and windows[i].name != "baseline" and settled:
                after.setdefault((i, ev["kind"]), []).append(ev)
        elif ev.get("k") == "conn":
            i = index(ev["t1"])
            out[i]["connections"]["ended"] += 1
            if ev["lost"]:
                out[i]["connections"]["lost"] += 1
                out[i]["lost"].append(f"{ev['kind']} open {ev['t1'] - ev['t0']:.1f}s: {ev['err']}")
        else:
            continue
        i = index(ev["t0"] if ev["k"] == "req" else ev["t1"])
        out[i]["corrupted_bytes"] += ev.get("corrupt", 0)
        out[i]["wrong_client"] += bool(ev.get("wrong_client"))
    # recovery: from the end of the fault to the first success after the last failure (of requests started after
    # the end and settled before the next fault), i.e. until that kind of request works and keeps working
    for (i, kind), evs in after.items():
        evs.sort(key=lambda e: e["t0"])
        last_fail = max((k for k, e in enumerate(evs) if not e["ok"]), default=-1)
        good = [e for e in evs[last_fail + 1:] if e["ok"]]
        if good:
            out[i]["recovery_s"][kind] = round(max(min(e["t1"] for e in good) - windows[i].t_heal, 0.0), 2)
    return out


def resources(pid: int) -> dict[str, int] | None:
    """RSS (KB) and open descriptors of a live process, None when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    rss = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return {"rss_kb": rss, "fds": fds}


class Soak:
    """One soak run in `lab` (see module docstring); `run()` returns the `soak` section of the results file."""

    def __init__(self, lab, workdir: Path, minutes: float, say=print) -> None:
        from wiregate.testing.system import SystemLab

        self.lab, self.minutes, self.say = lab, minutes, say
        self.sl = SystemLab(lab, workdir)
        self.service = lab.netns("s")
        self.events: list[dict] = []
        self.lock = threading.Lock()
        self.windows: list[Window] = []
        self.snapshots: dict[str, dict[int, list[dict[str, Any]]]] = {"gateway": {}, "home": {}}
        self.variant = 0
        self.home_ip = "198.51.100.2"
        self.load_proc: subprocess.Popen | None = None  # by start_load(); read through `load`
        self.box_proc: subprocess.Popen | None = None  # by setup(); read through `box`

    @property
    def load(self) -> subprocess.Popen:
        """The load generator (from start_load() on), its stdin and stdout pipes open."""
        if self.load_proc is None:
            raise RuntimeError("bench soak: the load is not started")
        return self.load_proc

    @property
    def box(self) -> subprocess.Popen:
        """The lossy middlebox in the tunnel's path (from setup() on), its stdout a pipe."""
        if self.box_proc is None:
            raise RuntimeError("bench soak: the middlebox is not started")
        return self.box_proc

    # -- setup ---------------------------------------------------------------------------------------------
    def setup(self) -> None:
        from wiregate.testing.system import VPS_IP, VPS_PUBLIC_IP, WG_PORT

        sl = self.sl
        self.lab.link(sl.home, f"{SERVICE_HOME_IP}/64", self.service, f"{SERVICE_IP}/64")
        sl.pair()
        # the tunnel's UDP goes through the middlebox for the whole run (passing it untouched outside `loss`): the
        # gateway's name, looked up through $WIREGATE_HOSTS, points at it
        self.box_proc = self.lab.spawn(sl.home, [sys.executable, "-m", "wiregate.testing.lossy", f"{BOX_IP}:{WG_PORT}",
                                                 f"{VPS_IP}:{WG_PORT}", "--loss", str(LOSS), "--delay",
                                                 str(DELAY), "--off"], stdout=subprocess.PIPE, text=True)
        if _pipe(self.box.stdout).readline().strip() != "ready":
            raise WiregateError("bench soak: the lossy middlebox did not start")
        sl.set_gateway_address(BOX_IP)
        sl.add_sample_services(sample.gateway_services(VPS_PUBLIC_IP, https=False, udp="udp"), home_listeners(0))
        self.good = {"gateway": sl.gateway_file.read_text(), "home": sl.home_file.read_text()}
        proc = self.lab.spawn(self.service, [sys.executable, "-m", "wiregate.testing.soakload", "serve",
                                             "--http", hostport.format((SERVICE_IP, 8080)),
                                             "--echo", hostport.format((SERVICE_IP, 7007)),
                                             "--udp", hostport.format((SERVICE_IP, 5353))],
                                            stdout=subprocess.PIPE, text=True)
        if _pipe(proc.stdout).readline().strip() != "ready":
            raise WiregateError("bench soak: the soak services did not start")
        sl.start_gateway()
        sl.start_home()
        self._wait(self._echo_ok, 40, "the tunnel to come up (an echo through it)")
        self._wait(self._backends_up, 30, "the gateway's health checks to mark every backend up")

    def _backends_up(self) -> bool:
        services = self.sl.status("gateway").get("relay", {}).get("services", {})
        return all(b.get("state") == "up" for name in ("http", "echo") for b in services.get(name, {}).get(
            "backends", [{}]))

    def _echo_ok(self) -> bool:
        from wiregate.testing.system import CLIENT_IP, VPS_PUBLIC_IP

        r = self.sl.client_python("import socket,sys; s=socket.create_connection((sys.argv[1],7000),timeout=5); "
                                  "print(s.makefile().readline().strip())", VPS_PUBLIC_IP, timeout=20)
        return r.stdout.split() == ["client", CLIENT_IP]

    def _wait(self, cond, timeout: float, what: str, interval: float = 0.2) -> float:
        t0 = time.monotonic()
        while not cond():
            if time.monotonic() - t0 > timeout:
                raise WiregateError(f"bench soak: gave up after {timeout:.0f}s waiting for {what}")
            time.sleep(interval)
        return time.monotonic() - t0

    # -- load ----------------------------------------------------------------------------------------------
    def start_load(self, seconds: float) -> None:
        from wiregate.testing.system import CLIENT_IP, VPS_PUBLIC_IP

        self.load_proc = self.lab.spawn(self.sl.client, [sys.executable, "-m", "wiregate.testing.soakload", "load",
                                                         VPS_PUBLIC_IP, "--client", CLIENT_IP, "--seconds",
                                                         str(seconds)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self._read_events, daemon=True).start()
        self._wait(lambda: any(e.get("k") == "start" for e in self._events()), 30, "the load to start", 0.05)

    def _read_events(self) -> None:
        for line in _pipe(self.load.stdout):
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                self.events.append(ev)

    def _events(self) -> list[dict]:
        with self.lock:
            return list(self.events)

    def stop_load(self) -> None:
        try:
            stdin = _pipe(self.load.stdin)
            stdin.write("stop\n")
            stdin.close()
        except OSError:
            pass
        self._wait(lambda: any(e.get("k") == "done" for e in self._events()) or self.load.poll() is not None,
                   90, "the load to finish its streams")
        self.load.wait(30)

    def recovered(self, t_heal: float) -> bool:
        """The last STEADY requests of each kind started after `t_heal` succeeded, and every backend is up."""
        if self.load.poll() is not None:
            raise WiregateError("bench soak: the load generator exited early")
        evs = sorted((e for e in self._events() if e.get("k") == "req" and e["t0"] >= t_heal), key=lambda e: e["t0"])
        for kind, n in STEADY.items():
            mine = [e for e in evs if e["kind"] == kind][-n:]
            if len(mine) < n or not all(e["ok"] for e in mine):
                return False
        return self._backends_up()

    # -- processes and their resources ---------------------------------------------------------------------
    def snapshot(self, tag: str) -> None:
        for side, proc in (("gateway", self.sl.gateway_proc), ("home", self.sl.home_proc)):
            if proc is not None and proc.poll() is None and (r := resources(proc.pid)):
                self.snapshots[side].setdefault(proc.pid, []).append(dict(r, at=tag))

    def reloads(self, side: str) -> dict[str, int]:
        return dict(self.sl.status(side)["reloads"])

    # -- faults --------------------------------------------------------------------------------------------
    def fault(self, name: str) -> Window:
        w = Window(name, time.monotonic(), kills=KILLS.get(name, ()))
        marks = self._log_marks()
        w.t_inject = time.monotonic()
        getattr(self, f"f_{name}")(w)
        w.t_heal = time.monotonic()
        self._wait(lambda: self.recovered(w.t_heal), RECOVER_TIMEOUT, f"requests to succeed again after {name}",
                   0.1)
        w.notes["recovered_after_s"] = round(time.monotonic() - w.t_heal, 2)
        time.sleep(QUIET)
        w.notes.update(self._log_counts(marks))
        return w

    def _log_marks(self) -> dict[str, int]:
        return {side: (self.sl.dir / f"{side}.log").stat().st_size for side in ("gateway", "home")}

    def _log_counts(self, marks: dict[str, int]) -> dict[str, int]:
        texts = {}
        for side, start in marks.items():
            with open(self.sl.dir / f"{side}.log", "rb") as f:
                f.seek(start)
                texts[side] = f.read(16 << 20).decode(errors="replace")  # bounded: a window logs far less
        return {key: texts[side].count(pattern) for key, (side, pattern) in LOG_COUNTS.items()}

    def f_bad_reload(self, w: Window) -> None:
        sl = self.sl
        before = {s: self.reloads(s) for s in ("gateway", "home")}
        sl.gateway_file.write_text(self.good["gateway"].replace(":7000\"]", ":99999\"]", 1))
        sl.home_file.write_text(sl.home_file.read_text().replace(":7007\"", ":99999\"", 1))
        sl.node("gateway").send_signal(signal.SIGHUP)
        sl.node("home").send_signal(signal.SIGHUP)
        for side in ("gateway", "home"):
            want = before[side].get("refused", 0) + 1
            self._wait(lambda s=side, n=want: self.reloads(s).get("refused", 0) == n, 20,
                       f"the {side} to refuse the file")
        sl.gateway_file.write_text(self.good["gateway"])
        sl.home_file.write_text(self.good["home"])
        log = sl.log_tail("gateway", 200000) + sl.log_tail("home", 200000)
        w.notes.update(refused={s: self.reloads(s).get("refused", 0) for s in ("gateway", "home")},
                       named_the_key="99999" in log and "port out of range" in log)

    def f_home_reload(self, w: Window) -> None:
        sl = self.sl
        old, self.variant = self.variant, self.variant ^ 1
        text = self.good["home"].replace(home_listeners(old), home_listeners(self.variant))
        assert text != self.good["home"]
        sl.home_file.write_text(text)
        self.good["home"] = text
        want = self.reloads("home").get("ok", 0) + 1
        sl.node("home").send_signal(signal.SIGHUP)
        self._wait(lambda: self.reloads("home").get("ok", 0) == want, 20, "the home to reload")
        route = sl.status("home")["ingress"]["echo"]["routes"]["echo"]
        w.notes.update(echo_send_proxy=route.get("send_proxy"), alt_route="alt" in
                       sl.status("home")["ingress"]["http"]["routes"], reloads_ok=want)

    def f_link_down(self, w: Window) -> None:
        dev = self.sl.home_link[1]
        self.sl.home.run(["ip", "link", "set", "dev", dev, "down"])
        time.sleep(LINK_DOWN_S)
        self.sl.home.run(["ip", "link", "set", "dev", dev, "up"])
        w.notes["down_s"] = LINK_DOWN_S

    def f_loss(self, w: Window) -> None:
        self.box.send_signal(signal.SIGUSR1)  # the middlebox in the tunnel's path starts dropping and delaying
        time.sleep(LOSS_S)
        self.box.send_signal(signal.SIGUSR2)  # and stops: it prints what it did meanwhile
        out = _pipe(self.box.stdout)
        ready, _, _ = select.select([out], [], [], 10)
        try:
            counts = json.loads(out.readline().strip().replace("'", '"')) if ready else {}
        except ValueError:
            counts = {}
        w.notes.update(loss=LOSS, delay_s=DELAY, lossy_s=LOSS_S, middlebox=counts)

    def f_roam(self, w: Window) -> None:
        dev = self.sl.home_link[1]
        new = "198.51.100.20" if self.home_ip == "198.51.100.2" else "198.51.100.2"
        # the old address goes first (deleting a primary address would take a secondary of its subnet with it)
        self.sl.home.run(["ip", "addr", "del", f"{self.home_ip}/24", "dev", dev])
        self.sl.home.run(["ip", "addr", "add", f"{new}/24", "dev", dev])
        w.notes.update(moved_from=self.home_ip, moved_to=new)
        self.home_ip = new

        def followed() -> bool:
            (peer,) = self.sl.status("gateway")["tunnel"]["peers"]
            return (peer["endpoint"] or "").startswith(new + ":")
        w.notes["gateway_followed_s"] = round(self._wait(followed, 30, "the gateway to follow the home"), 2)

    def f_gateway_kill(self, w: Window) -> None:
        sl = self.sl
        self.snapshot("before kill")
        sl.node("gateway").kill()  # SIGKILL: no clean shutdown
        sl.node("gateway").wait(10)
        t0 = time.monotonic()
        sl.start_gateway()
        w.notes["restart_to_ready_s"] = round(time.monotonic() - t0, 2)

    # -- the run -------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        total = self.minutes * 60
        t_begin = time.monotonic()
        self.snapshot("start")
        self.start_load(total + 300)  # a hard bound for the generator; it is stopped long before
        base = Window("baseline", time.monotonic())
        self.windows.append(base)
        time.sleep(5 if total <= 90 else 10)
        self._wait(lambda: self.recovered(base.t_start), RECOVER_TIMEOUT, "the first requests to succeed")
        base.t_end = time.monotonic()
        self.snapshot("warm")
        cycles = 0
        while cycles == 0 or time.monotonic() - t_begin <= total - 12:
            for name in FAULTS:  # every fault runs once, however short the soak; then only while there is time
                spent = time.monotonic() - t_begin
                if cycles and spent > total - 12:
                    break
                self.say(f"soak {spent:5.0f}s: {name}")
                w = self.fault(name)
                self.windows.append(w)
                w.t_end = time.monotonic()
                self.snapshot(name)
            cycles += 1
        self.stop_load()
        t_stop = time.monotonic()
        if self.windows:
            self.windows[-1].t_end = t_stop
        # descriptors: measured once the load's connections are closed everywhere (bounded wait)
        drained = self._drained_within(30)
        self.snapshot("end")
        return self.report(time.monotonic() - t_begin, drained, cycles)

    def _drained_within(self, timeout: float) -> float | None:
        def tcp_open() -> int:
            gw = self.sl.status("gateway").get("relay", {}).get("services", {})
            home = self.sl.status("home").get("ingress", {})
            return (sum(gw.get(n, {}).get("open", 0) for n in ("http", "echo"))
                    + sum((home.get(n, {}).get("open") or 0) for n in ("http", "echo")))
        try:
            return round(self._wait(lambda: tcp_open() == 0, timeout, "open connections to close"), 2)
        except WiregateError:
            return None

    def report(self, duration: float, drained: float | None, cycles: int) -> dict[str, Any]:
        events = self._events()
        per = summarize(events, self.windows)
        res: dict[str, Any] = {}
        growth_ok = True
        for side, pids in self.snapshots.items():
            res[side] = []
            for pid, snaps in pids.items():
                warm = next((s for s in snaps if s["at"] not in ("start",)), snaps[0])
                last = snaps[-1]
                g = {"rss_kb": last["rss_kb"] - warm["rss_kb"], "fds": last["fds"] - warm["fds"]}
                bounded = g["rss_kb"] <= RSS_GROWTH_MAX_KB and g["fds"] <= FD_GROWTH_MAX
                growth_ok &= bounded
                res[side].append({"pid": pid, "first": snaps[0], "warm": warm, "last": last, "growth": g,
                                  "bounded": bounded, "snapshots": len(snaps)})
        totals = {k: {"attempted": 0, "succeeded": 0, "failed": 0} for k in KINDS}
        for w in per:
            for k, r in w["requests"].items():
                for f in ("attempted", "succeeded", "failed"):
                    totals.setdefault(k, {"attempted": 0, "succeeded": 0, "failed": 0})[f] += r[f]
        corrupted = sum(w["corrupted_bytes"] for w in per)
        wrong = sum(w["wrong_client"] for w in per)
        lost_not_killed = sum(w["connections"]["lost"] for w in per if not w["kills"])
        lost_killed = sum(w["connections"]["lost"] for w in per if w["kills"])
        stream_bytes = sum(e["bytes"] for e in events if e.get("k") == "conn" and e["kind"] == "stream")
        alive = {"home": self.sl.home_proc is not None and self.sl.home_proc.poll() is None,
                 "gateway": self.sl.gateway_proc is not None and self.sl.gateway_proc.poll() is None}
        invariants = {"corrupted_bytes": corrupted, "wrong_client_address": wrong,
                      "lost_connections_not_killed": lost_not_killed, "resources_bounded": growth_ok,
                      "processes_alive": all(alive.values()),
                      "bad_reloads_refused": all(w["notes"].get("named_the_key") for w in per
                                                 if w["fault"] == "bad_reload")}
        ok = (not corrupted and not wrong and not lost_not_killed and growth_ok and all(alive.values())
              and invariants["bad_reloads_refused"])
        return {
            "ok": ok, "invariants": invariants, "minutes": self.minutes, "duration_s": round(duration, 1),
            "fault_cycles": cycles, "faults": [w["fault"] for w in per[1:]],
            "totals": totals, "stream_bytes_checked": stream_bytes, "lost_connections_killed": lost_killed,
            "recovery_s_max": {f: max((max(w["recovery_s"].values(), default=0) for w in per if w["fault"] == f),
                                      default=None) for f in FAULTS},
            "drained_after_s": drained, "windows": per, "resources": res,
            "bounds": {"rss_growth_kb": RSS_GROWTH_MAX_KB, "fd_growth": FD_GROWTH_MAX},
            "load": {"http_short_every_s": 0.2, "http_keep_connections": 2, "streams": 3, "udp_sockets": 4},
        }


def soak(minutes: float, workdir: Path | None = None, say=print) -> dict[str, Any]:
    """Run one soak of `minutes` (faults at least once each, however short) and return its results."""
    from wiregate.testing.netns import Lab, can_use_netns

    reason = can_use_netns()
    if reason:
        raise WiregateError(f"bench soak: {reason}")
    with tempfile.TemporaryDirectory(prefix="wiregate-soak-") as tmp, Lab("k") as lab:
        s = Soak(lab, Path(workdir or tmp), minutes, say)
        try:
            s.setup()
            return s.run()
        except BaseException:
            for side in ("gateway", "home"):
                say(f"--- {side} log (tail) ---\n{s.sl.log_tail(side, 4000)}")
            raise


def run(args) -> dict[str, Any]:
    """The `soak` section of the results file."""
    minutes = 1.0 if getattr(args, "quick", False) else float(getattr(args, "minutes", None) or 5.0)
    result = soak(minutes)
    verdict = "ok" if result["ok"] else "INVARIANTS BROKEN"
    print(f"bench soak: {verdict}: {json.dumps(result['invariants'])}")
    return result

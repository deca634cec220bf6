"""Network namespaces and veth links for the demo, tests and benchmarks, always cleaned up.

    with Lab("r") as lab:                   # names start with "wgt" + tag
        a, b = lab.netns("a"), lab.netns("b")
        lab.link(a, "192.0.2.1/24", b, "192.0.2.2/24")
        proc = lab.spawn(b, ["iperf3", "-s"])  # ended by PID when the lab closes
        a.run(["ping", "-c1", "192.0.2.2"])

Use documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, fd00::/8) inside namespaces.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from dataclasses import dataclass, field

from wiregate.demo.procs import stop

_counter = itertools.count()


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@dataclass
class Netns:
    name: str

    def cmd(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: list[str], check: bool = True, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(self.cmd(argv), check=check, timeout=timeout, **kw)


@dataclass
class Lab:
    """A set of namespaces, links and processes that is torn down in reverse order on exit."""

    tag: str = ""
    namespaces: list[Netns] = field(default_factory=list)
    procs: list[subprocess.Popen] = field(default_factory=list)
    links: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # short, unique per process and lab, so several test runs on one machine do not collide
        self.prefix = f"wgt{self.tag}{os.getpid() % 100000}x{next(_counter)}"

    def __enter__(self) -> "Lab":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def netns(self, name: str) -> Netns:
        ns = Netns(f"{self.prefix}{name}")
        _ip("netns", "add", ns.name)
        self.namespaces.append(ns)
        ns.run(["ip", "link", "set", "lo", "up"])
        return ns

    def link(self, a: Netns | None, a_addr: str | None, b: Netns | None, b_addr: str | None,
             mtu: int | None = None) -> tuple[str, str]:
        """A veth pair between two namespaces (None = this host's namespace); returns the two link names."""
        n = next(_counter)
        ia, ib = f"wgt{n}a{os.getpid() % 10000}"[:15], f"wgt{n}b{os.getpid() % 10000}"[:15]
        _ip("link", "add", ia, "type", "veth", "peer", "name", ib)
        self.links.append(ia)
        for ifname, ns, addr in ((ia, a, a_addr), (ib, b, b_addr)):
            if ns is not None:
                _ip("link", "set", ifname, "netns", ns.name)
            run = ns.run if ns is not None else (lambda argv, **k: subprocess.run(argv, check=True))
            if mtu:
                run(["ip", "link", "set", ifname, "mtu", str(mtu)])
            if addr:
                run(["ip", "addr", "add", addr, "dev", ifname] + (["nodad"] if ":" in addr else []))
            run(["ip", "link", "set", ifname, "up"])
        return ia, ib

    def spawn(self, ns: Netns | None, argv: list[str], **kw) -> subprocess.Popen:
        """Start a process (in `ns`, or here when None) that is ended by its PID when the lab closes."""
        kw.setdefault("stdout", subprocess.DEVNULL)
        kw.setdefault("stderr", subprocess.DEVNULL)
        proc = subprocess.Popen(ns.cmd(argv) if ns else argv, **kw)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in reversed(self.procs):
            try:
                stop(proc)
            except Exception:  # noqa: BLE001 - cleanup must go on
                pass
        self.procs.clear()
        for ln in self.links:
            _ip("link", "del", ln, check=False)  # gone already when its namespace went; harmless
        self.links.clear()
        for ns in reversed(self.namespaces):
            _ip("netns", "del", ns.name, check=False)
        self.namespaces.clear()


def can_use_netns() -> str | None:
    """None when namespaces can be made here, else a one-line reason."""
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    probe = f"wgtprobe{os.getpid()}"
    r = _ip("netns", "add", probe, check=False)
    if r.returncode != 0:
        return f"cannot create network namespaces: {r.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None

"""A real DNS server for tests: Debian's BIND 9 (`named`) with zones and a TSIG key the test writes.

    key = TsigKey.new("wiregate.")
    named = Named(lab, ns, workdir, "198.51.100.53", zones={"example.org": zone_text("example.org", ...)},
                  tsig=key, update_zones=("example.org",))
    named.start()            # ended by PID when the lab closes
    dig(ns, "198.51.100.53", "_acme-challenge.example.org", "TXT")

named runs in the foreground (-g) in the test's namespace, with its own directory for config, zones, journals and
pid file; no control channel, no DNSSEC validation. With `recursion=True` it also resolves for clients, starting
from its own zones (it is authoritative for the root too, so it never asks the real root servers).
"""

from __future__ import annotations

import base64
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from wiregate.testing.netns import Lab, Netns
from wiregate.testing.peers import which

NAMED = "/usr/sbin/named"


@dataclass(frozen=True)
class TsigKey:
    name: str
    secret: str  # base64
    algorithm: str = "hmac-sha256"

    @classmethod
    def new(cls, name: str = "wiregate.", algorithm: str = "hmac-sha256") -> TsigKey:
        return cls(name, base64.b64encode(os.urandom(32)).decode(), algorithm)

    def write_secret(self, path: Path, mode: int = 0o600) -> Path:
        """The secret as wiregate reads it (base64 text), in a file of `mode`."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as f:
            f.write(self.secret + "\n")
        os.chmod(path, mode)
        return path


def zone_text(origin: str, ns: dict[str, str], records: str = "", serial: int = 1) -> str:
    """A zone file: SOA, the NS set `ns` {name: address, names relative to the origin or absolute with a dot},
    the nameservers' A records when they are in the zone, then `records` (zone-file lines)."""
    first = next(iter(ns))
    mname = first if first.endswith(".") else f"{first}.{origin}."
    lines = ["$TTL 60", f"$ORIGIN {origin}.",
             f"@ IN SOA {mname} hostmaster.{origin}. {serial} 3600 600 86400 1"]
    for name, ip in ns.items():
        lines.append(f"@ IN NS {name}")
        if ip and not name.endswith("."):
            lines.append(f"{name} IN A {ip}")
    return "\n".join(lines) + "\n" + records.strip() + "\n"


@dataclass
class Named:
    """One named process (see module docstring)."""

    lab: Lab
    ns: Netns
    workdir: Path
    address: str
    zones: dict[str, str] = field(default_factory=dict)  # primary zones: name -> zone file text
    secondaries: dict[str, str] = field(default_factory=dict)  # zone -> primary's address
    tsig: TsigKey | None = None
    update_zones: tuple[str, ...] = ()  # zones the TSIG key may update (RFC 2136)
    update_names: tuple[str, ...] = ()  # when set, only these names (TXT), as README's update-policy example
    recursion: bool = False
    notify_to: tuple[str, ...] = ()  # secondaries told at once when a primary zone changes
    port: int = 53
    proc: subprocess.Popen | None = None

    def config(self) -> str:
        d = self.workdir
        out = [
            "options {",
            f'  directory "{d}";',
            f'  pid-file "{d}/named.pid";',
            f'  session-keyfile "{d}/session.key";',
            f'  managed-keys-directory "{d}";',
            f"  listen-on port {self.port} {{ {self.address}; }};",
            "  listen-on-v6 { none; };",
            f"  recursion {'yes' if self.recursion else 'no'};",
            "  allow-recursion { any; };" if self.recursion else "",
            "  allow-query { any; };",
            "  allow-transfer { any; };",
            "  dnssec-validation no;",
            "  qname-minimization off;",
            f"  notify explicit; also-notify {{ {' '.join(a + ';' for a in self.notify_to)} }}; notify-delay 0; "
            f"notify-source {self.address};" if self.notify_to else "  notify no;",
            "  min-ncache-ttl 0;",
            "  max-cache-ttl 1;",
            "  max-ncache-ttl 1;",
            "};",
            "controls { };",
        ]
        if self.tsig:
            out.append(f'key "{self.tsig.name}" {{ algorithm {self.tsig.algorithm}; secret "{self.tsig.secret}"; }};')
        if self.recursion and "." not in self.zones:
            # authoritative for the root: resolution starts from our zones, never from the internet's roots
            self.zones = {".": ("$TTL 60\n. IN SOA ns.root.invalid. hostmaster.root.invalid. 1 3600 600 86400 1\n"
                                f". IN NS ns.root.invalid.\nns.root.invalid. IN A {self.address}\n"), **self.zones}
        for name, text in self.zones.items():
            fname = "root" if name == "." else name
            (d / f"{fname}.zone").write_text(text)
            upd = ""
            if self.tsig and name in self.update_zones:  # what a user writes: one grant per challenge name
                grants = " ".join(f"grant {self.tsig.name} name {n}. TXT;" for n in self.update_names) or \
                    f"grant {self.tsig.name} subdomain {name}. ANY;"
                upd = f" update-policy {{ {grants} }};"
            out.append(f'zone "{name}" {{ type primary; file "{fname}.zone";{upd} }};')
        for name, primary in self.secondaries.items():
            out.append(f'zone "{name}" {{ type secondary; primaries {{ {primary}; }}; file "{name}.sec.zone"; }};')
        return "\n".join(x for x in out if x) + "\n"

    def start(self, timeout: float = 30.0) -> None:
        exe = which("named") or NAMED
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "named.conf"
        conf.write_text(self.config())
        chk = which("named-checkconf")
        if chk:
            r = subprocess.run([chk, str(conf)], capture_output=True, text=True, check=False)
            if r.returncode:
                raise RuntimeError(f"named-checkconf {conf}: {r.stdout}{r.stderr}")
        log = self.workdir / "named.log"
        with open(log, "ab") as f:
            self.proc = self.lab.spawn(self.ns, [exe, "-g", "-n", "1", "-c", str(conf)], stdout=f,
                                       stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while b"running" not in log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"named did not start:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.05)

    def log(self) -> str:
        p = self.workdir / "named.log"
        return p.read_text(errors="replace") if p.exists() else ""


def dig(ns: Netns, server: str, name: str, rdtype: str, *, recurse: bool = False, port: int = 53) -> tuple[str,
                                                                                                          list[str]]:
    """Ask `server` with dig(1) from namespace `ns`: (status, answer lines as `+short` prints them)."""
    argv = [which("dig") or "dig", f"@{server}", "-p", str(port), name, rdtype, "+time=2", "+tries=2",
            "+recurse" if recurse else "+norecurse", "+noall", "+comments", "+answer"]
    r = ns.run(argv, check=False, timeout=30)
    status = ""
    answers = []
    for line in r.stdout.splitlines():
        if "status:" in line:
            status = line.split("status:")[1].split(",")[0].strip()
        elif line and not line.startswith(";"):
            parts = line.split(None, 4)
            if len(parts) == 5:
                answers.append(f"{parts[3]} {parts[4]}")
    return status, answers

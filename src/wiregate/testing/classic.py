"""The classic stack run from wiregate's own exports, in the namespaces of a SystemLab (tests of `wiregate export`).

    sl = SystemLab(lab, workdir); sl.pair(); sl.add_sample_services()
    wireguard_go(sl, "gateway")            # the gateway's tunnel: wireguard-go + `export wg-quick` (wg-quick strip)
    haproxy(sl)                            # the gateway's relay: HAProxy on `export haproxy`
    nginx(sl, "home")                      # or nginx on `export nginx`, Traefik on `export traefik`

Each program runs in the foreground in its side's namespace, on the exported files as they are (the only additions
are on the command line: foreground, pid file and logs in the lab's directory), and is ended by its PID when the lab
closes. Each start waits until the program listens on the addresses of the file, bounded in time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from wiregate.config import load
from wiregate.config.export import export
from wiregate.testing.peers import which
from wiregate.testing.system import GATEWAY_NAME, SystemLab
from wiregate.testing.wgnet import WG_GO_ENV


def _exe(prog: str) -> str:
    path = which(prog)
    if path is None:
        raise RuntimeError(f"{prog} is not installed")
    return path


def _side(sl: SystemLab, side: str):
    return (sl.vps, sl.gateway_file) if side == "gateway" else (sl.home, sl.home_file)


def _write(workdir: Path, files: dict[str, str], secret: bool = False) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        fd = os.open(workdir / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(text)


def _spawn(sl: SystemLab, ns, argv: list[str], log: Path, cwd: Path | None = None) -> subprocess.Popen:
    with open(log, "ab") as out:
        return sl.lab.spawn(ns, argv, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)


def wait_listening(sl: SystemLab, side: str, addrs: list[str], proc: subprocess.Popen, log: Path, name: str,
                   timeout: float = 20.0) -> None:
    """Wait until the side's namespace has a TCP listening socket on every host:port in `addrs` (read with
    `ss`, not by connecting: a probe connection would reach the services as a client)."""
    ns, _ = _side(sl, side)
    deadline = time.monotonic() + timeout
    while True:
        out = ns.run(["ss", "-Hltn"], check=False).stdout
        listening = {line.split()[3] for line in out.splitlines() if len(line.split()) >= 4}
        missing = [a for a in addrs if a not in listening]
        if not missing:
            return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{name}: not listening on {', '.join(missing)} (exit {proc.poll()}):\n"
                               f"{log.read_text(errors='replace')[-3000:] if log.exists() else ''}")
        time.sleep(0.05)


def wireguard_go(sl: SystemLab, side: str, timeout: float = 10.0) -> subprocess.Popen:
    """The side's tunnel as wireguard-go configured from `export wg-quick` the way wg-quick does it: `wg-quick
    strip` then `wg setconf`, then Address and MTU on the link."""
    ns, path = _side(sl, side)
    cfg = load(path)
    iface = cfg.tunnel.interface
    workdir = sl.dir / f"classic-{side}"
    files = export("wg-quick", cfg)
    # wg(8) cannot resolve through the lab's hosts override file: give it the address the name has now
    files = {k: v.replace(f"Endpoint = {GATEWAY_NAME}", f"Endpoint = {sl._hosts_ip()}") for k, v in files.items()}
    _write(workdir, files, secret=True)
    log = workdir / "wireguard-go.log"
    proc = _spawn(sl, ns, ["env", *(f"{k}={v}" for k, v in WG_GO_ENV.items()), _exe("wireguard-go"), "-f", iface],
                  log)
    sock = Path(f"/var/run/wireguard/{iface}.sock")
    deadline = time.monotonic() + timeout
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"wireguard-go did not start: {log.read_text(errors='replace')}")
        time.sleep(0.02)
    stripped = subprocess.run([_exe("wg-quick"), "strip", str(workdir / f"{iface}.conf")], capture_output=True,
                              text=True, check=True).stdout
    _write(workdir, {f"{iface}.stripped": stripped}, secret=True)
    ns.run([_exe("wg"), "setconf", iface, str(workdir / f"{iface}.stripped")])
    ns.run(["ip", "addr", "add", cfg.tunnel.address, "dev", iface])
    ns.run(["ip", "link", "set", "dev", iface, "mtu", str(cfg.tunnel.mtu), "up"])
    if side == "home":
        sl.wggo_proc = proc
    return proc


def haproxy(sl: SystemLab) -> subprocess.Popen:
    """HAProxy on the gateway file's `export haproxy`, in the VPS namespace."""
    cfg = load(sl.gateway_file)
    workdir = sl.dir / "classic-gateway"
    _write(workdir, export("haproxy", cfg))
    log = workdir / "haproxy.log"
    proc = _spawn(sl, sl.vps, [_exe("haproxy"), "-db", "-f", str(workdir / "haproxy.cfg")], log)
    wait_listening(sl, "gateway", _tcp_listens(cfg), proc, log, "haproxy")
    return proc


def nginx(sl: SystemLab, side: str) -> subprocess.Popen:
    """nginx on the side's `export nginx` (a whole nginx.conf), in the foreground with its pid and error log here."""
    ns, path = _side(sl, side)
    cfg = load(path)
    workdir = sl.dir / f"classic-{side}"
    _write(workdir, export("nginx", cfg))
    log = workdir / "nginx.log"
    proc = _spawn(sl, ns, [_exe("nginx"), "-c", str(workdir / "nginx.conf"), "-g",
                           f"daemon off; pid {workdir}/nginx.pid; error_log {workdir}/error.log info;"], log)
    wait_listening(sl, side, _tcp_listens(cfg), proc, workdir / "error.log", "nginx")
    return proc


def traefik(sl: SystemLab) -> subprocess.Popen:
    """Traefik v3 on the home file's `export traefik` (static traefik.toml naming dynamic.toml beside it)."""
    cfg = load(sl.home_file)
    workdir = sl.dir / "classic-home"
    _write(workdir, export("traefik", cfg, workdir))
    log = workdir / "traefik.log"
    proc = _spawn(sl, sl.home, [_exe("traefik"), f"--configFile={workdir / 'traefik.toml'}"], log, cwd=sl.dir)
    wait_listening(sl, "home", _tcp_listens(cfg), proc, log, "traefik")
    return proc


def _tcp_listens(cfg) -> list[str]:
    from wiregate.config.model import GatewayConfig
    from wiregate import hostport

    if isinstance(cfg, GatewayConfig):
        return [hostport.format((h, p)) for s in cfg.services if s.protocol == "tcp" for h, p in s.listen
                if h not in ("0.0.0.0", "::")]
    return [hostport.format(ln.listen) for ln in cfg.listeners if ln.protocol == "tcp"]


def start_samples(sl: SystemLab, *extra: str) -> None:
    """The SystemLab sample services at home (127.0.0.1: TLS 8443, HTTP 8080, echo 7007, UDP 5353), with extra
    flags (e.g. --show-headers)."""
    argv = [sys.executable, "-m", "wiregate.testing.samples", "--tls", "127.0.0.1:8443", "--certdir",
            str(sl.dir / "certs"), "--names", "a.example,b.example", "--http", "127.0.0.1:8080", "--echo",
            "127.0.0.1:7007", "--udp", "127.0.0.1:5353", "--proxy", *extra]
    sl.samples_proc = sl.lab.spawn(sl.home, argv, stdout=subprocess.PIPE, text=True)
    assert sl.samples_proc.stdout is not None
    if sl.samples_proc.stdout.readline().strip() != "ready":
        raise RuntimeError("sample services did not start")


# A client that sends, then shuts its write side (half-close), and reads the whole answer until the server closes.
HALF_CLOSE_CLIENT = r"""
import socket, sys
host, port, data = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode().decode("unicode_escape").encode("latin-1")
with socket.create_connection((host, port), timeout=15) as s:
    s.settimeout(15)
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    got = b""
    while len(got) < 65536:
        c = s.recv(4096)
        if not c:
            break
        got += c
print(repr(got.decode("latin-1")))
"""


def half_close(sl: SystemLab, host: str, port: int, data: str, timeout: float = 30.0) -> str:
    """From the client namespace: send `data` (Python escapes allowed), shut the write side, return all that came
    back before the server closed ('' when nothing)."""
    import ast

    r = sl.client_python(HALF_CLOSE_CLIENT, host, str(port), data, timeout=timeout)
    if r.returncode != 0:
        return f"FAILED {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}"
    return ast.literal_eval(r.stdout.strip())

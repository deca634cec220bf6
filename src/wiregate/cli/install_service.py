"""`wiregate install-service FILE`: write a systemd unit that runs `wiregate run FILE` (Type=notify)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

HELP = "write a systemd unit for `wiregate run FILE` (Type=notify, reload by SIGHUP, hardened)"


def unit_name(name: str) -> str:
    """The systemd unit `install-service` writes for the instance `name` (what `systemctl reload` takes)."""
    return f"wiregate-{name}.service"


def unit_text(config: Path, name: str, exe: str, mode: str, nofile: int = 65536) -> str:
    """The unit file text for a node; the capabilities depend on what the tunnel mode must do."""
    # external: `wg show` / `wg set` on the user's interface need CAP_NET_ADMIN (netlink), no TUN device is made
    caps = "CAP_NET_ADMIN CAP_NET_BIND_SERVICE" if mode == "external" else \
        "CAP_NET_ADMIN CAP_NET_BIND_SERVICE CAP_NET_RAW"
    # the UAPI socket directory is shared with wg-quick/wireguard-go: made (as root, outside the sandbox) when
    # missing, never removed; ProtectSystem=strict would otherwise leave /run read-only for the mkdir
    uapi_dir = "" if mode == "external" else "ExecStartPre=+/bin/mkdir -p -m 0755 /run/wireguard\n"
    return f"""# written by `wiregate install-service`; see docs/system.md
[Unit]
Description=wiregate {name} ({config})
Documentation=file://{config}
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
NotifyAccess=main
{uapi_dir}ExecStartPre={exe} check {config}
ExecStart={exe} run {config}
ExecReload=/bin/kill -HUP $MAINPID
KillSignal=SIGTERM
TimeoutStopSec=45
Restart=on-failure
RestartSec=2
# descriptors for the configured limits (3 per TCP connection, 1 per UDP flow, see wiregate.limits)
LimitNOFILE={nofile}
RuntimeDirectory=wiregate
RuntimeDirectoryMode=0750
RuntimeDirectoryPreserve=restart

# hardening: only what a tunnel + proxy needs
AmbientCapabilities={caps}
CapabilityBoundingSet={caps}
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths=/run/wiregate -/run/wireguard
ProtectHome=yes
PrivateTmp=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK
DeviceAllow=/dev/net/tun rw
UMask=0077

[Install]
WantedBy=multi-user.target
"""


# what the unit's sandbox hides from the service (see unit_text): these directories are empty or private inside it
HIDDEN_BY_UNIT = {
    "/home": "ProtectHome=yes", "/root": "ProtectHome=yes", "/run/user": "ProtectHome=yes",
    "/tmp": "PrivateTmp=yes", "/var/tmp": "PrivateTmp=yes",
}


def hidden_by_unit(path: Path) -> str | None:
    """The unit setting that hides `path` (symlinks followed) from the service, or None when the service sees it."""
    real = Path(os.path.realpath(path))
    for top, setting in HIDDEN_BY_UNIT.items():
        if real == Path(top) or Path(top) in real.parents:
            return setting
    return None


def _interpreter(exe: Path) -> Path | None:
    """The program named on a script's `#!` line (None for a binary or an unreadable file)."""
    try:
        with open(exe, "rb") as f:
            first = f.read(256).split(b"\n", 1)[0]
    except OSError:
        return None
    words = first[2:].split() if first.startswith(b"#!") else []
    return Path(os.fsdecode(words[0])) if words else None


def unit_problems(cfg, config: Path, exe: str) -> list[str]:
    """What the unit's service could not reach: the program, the config file and every file the config names."""
    files: list[tuple[str, Path | None]] = [("the wiregate program (--exe)", Path(exe)), ("the config file", config),
                                            ("tunnel.private_key_file", cfg.tunnel.private_key_file)]
    if hasattr(cfg, "sites"):
        files += [(f"sites[{i}].preshared_key_file", s.preshared_key_file) for i, s in enumerate(cfg.sites)]
    else:
        files.append(("tunnel.preshared_key_file", cfg.tunnel.preshared_key_file))
        for g in cfg.gateways:  # a home's further gateways: their key files
            files += [(f"{g.where}.private_key_file", g.private_key_file),
                      (f"{g.where}.preshared_key_file", g.preshared_key_file)]
        for i, ln in enumerate(cfg.listeners):
            for j, r in enumerate(ln.routes):
                files += [(f"listeners[{i}].routes[{j}].tls_cert", r.tls_cert),
                          (f"listeners[{i}].routes[{j}].tls_key", r.tls_key)]
    interpreter = _interpreter(Path(exe))
    if interpreter is not None:  # a venv's python is often a link into the user's home (pyenv, uv, conda)
        files.insert(1, ("the wiregate program's interpreter", interpreter))
    out = []
    for what, path in files:
        setting = path is not None and hidden_by_unit(path)
        if setting:
            out.append(f"{what}: {str(path)!r}: hidden from the service by {setting} (it sees "
                       f"{'an empty directory' if setting.startswith('ProtectHome') else 'a private, empty /tmp'}); "
                       "move it, e.g. to /etc/wiregate")
    sock = cfg.control_socket
    if sock.parent != Path("/run/wiregate"):
        out.append(f"control.socket: {str(sock)!r}: the service may write only in /run/wiregate "
                   "(ProtectSystem=strict); leave control.socket empty")
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, help="gateway or home TOML file")
    p.add_argument("--unit-dir", type=Path, default=Path("/etc/systemd/system"), help="default /etc/systemd/system")
    p.add_argument("--exe", default=None, help="path of the wiregate program (default: this one)")


def run(args: argparse.Namespace) -> int:
    from wiregate.config import load
    from wiregate.config.model import write_text
    from wiregate.errors import ConfigError

    cfg = load(args.file)
    config = args.file.resolve()
    beside = Path(sys.executable).parent / "wiregate"  # the console script of this installation (venv or system)
    exe = args.exe or (str(beside) if beside.exists() else shutil.which("wiregate"))
    if not exe:
        raise ConfigError("install-service: cannot find the wiregate program; give --exe PATH")
    unit = args.unit_dir / unit_name(cfg.name)
    from wiregate.limits import unit_nofile

    write_text(unit, unit_text(config, cfg.name, exe, cfg.tunnel.mode, nofile=unit_nofile(cfg)))
    print(f"wrote {unit}")
    problems = unit_problems(cfg, config, exe)
    for p in problems:  # the unit is written (files may be moved next), but it would not start as things are
        print(f"wiregate: warning: {unit.name} will not start: {p}", file=sys.stderr)
    print(f"next: systemctl daemon-reload && systemctl enable --now {unit.stem}")
    return 0

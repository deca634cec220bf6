"""`wiregate install-service FILE`: write a systemd unit that runs `wiregate run FILE` (Type=notify)."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

HELP = "write a systemd unit for `wiregate run FILE` (Type=notify, reload by SIGHUP, hardened)"


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
    unit = args.unit_dir / f"wiregate-{cfg.name}.service"
    from wiregate.limits import unit_nofile

    write_text(unit, unit_text(config, cfg.name, exe, cfg.tunnel.mode, nofile=unit_nofile(cfg)))
    print(f"wrote {unit}")
    print(f"next: systemctl daemon-reload && systemctl enable --now wiregate-{cfg.name}")
    return 0

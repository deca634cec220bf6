"""wg-quick configuration files: read, validate and write them.

The format is wg-quick(8)'s INI: `[Interface]` and `[Peer]` sections, `Key = Value` lines, `#` comments, keys and
section names case-insensitive, whitespace around keys and values ignored, list values comma-separated (and
repeatable lines add to the list). Errors name the file, the line and the key.

wiregate applies PrivateKey, ListenPort, FwMark (SO_MARK on the UDP socket), Address and MTU of the interface and
every peer key.
`Table = off` turns off the routes for AllowedIPs, as in wg-quick; another Table value is ignored with a note (routes
go to the main table). DNS, PreUp/PostUp/PreDown/PostDown and SaveConfig are accepted and ignored, with a note:
wiregate does not change the resolver or run hook commands.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from wiregate import hostport
from wiregate.errors import ConfigError
from wiregate.wireguard.keys import decode_key, encode_key

__all__ = ["PeerSection", "WgQuickConfig", "parse", "load", "write", "format_config", "check_secret_file",
           "decode_key", "encode_key"]
# keys that wg-quick understands but that wiregate does not act on (see module docstring)
IGNORED_INTERFACE_KEYS = {"dns", "preup", "postup", "predown", "postdown", "saveconfig"}


@dataclass(frozen=True, slots=True)
class PeerSection:
    """One [Peer] section. `endpoint` is (host, port) where host may be a DNS name (resolved at run time)."""

    public_key: bytes
    preshared_key: bytes | None = None
    allowed_ips: tuple[str, ...] = ()
    endpoint: tuple[str, int] | None = None
    persistent_keepalive: int = 0


@dataclass(frozen=True, slots=True)
class WgQuickConfig:
    """A whole wg-quick file. `notes` lists what was accepted but ignored (for a log line)."""

    private_key: bytes
    listen_port: int | None = None
    fwmark: int = 0
    addresses: tuple[str, ...] = ()  # interface addresses with prefix length, e.g. "198.51.100.1/24"
    mtu: int | None = None
    dns: tuple[str, ...] = ()
    peers: tuple[PeerSection, ...] = ()
    routes: bool = True  # False for `Table = off`: no routes for the peers' AllowedIPs
    notes: tuple[str, ...] = field(default=(), compare=False)


def _int(value: str, lo: int, hi: int) -> int:
    if not value.isdigit() or not lo <= int(value) <= hi:
        raise ValueError(f"expected an integer {lo}..{hi}, got {value!r}")
    return int(value)


def _mark(value: str) -> int:
    try:
        n = int(value, 0)  # decimal or 0x hex, as wg accepts
    except ValueError:
        raise ValueError(f"expected a number (decimal or 0x hex) or off, got {value!r}") from None
    if not 0 <= n <= 0xFFFFFFFF:
        raise ValueError(f"out of range 0..0xffffffff: {value}")
    return n


def _prefixes(value: str, interface: bool) -> list[str]:
    out = []
    for item in (v.strip() for v in value.split(",")):
        if not item:
            continue
        try:
            if interface:  # an interface address keeps its host bits: 198.51.100.1/24
                out.append(str(ipaddress.ip_interface(item)))
            else:
                out.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ValueError(f"not an IP prefix: {item!r}") from None
    return out


def parse(text: str, source: str = "<config>") -> WgQuickConfig:
    """Parse wg-quick text; `source` names the file in error messages (`file:line: key: reason`)."""
    section: str | None = None
    iface: dict = {}
    iface_seen = False
    peers: list[dict] = []
    notes: list[str] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{source}:{lineno}"
        if line.startswith("["):
            name = line.lower()
            if name == "[interface]":
                if iface_seen:
                    raise ConfigError(f"{where}: a second [Interface] section")
                iface_seen, section = True, "interface"
            elif name == "[peer]":
                section = "peer"
                peers.append({"_line": lineno, "allowed_ips": []})
            else:
                raise ConfigError(f"{where}: unknown section {line}")
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise ConfigError(f"{where}: expected 'Key = Value', got {raw.strip()!r}")
        lkey = key.lower()
        if section is None:
            raise ConfigError(f"{where}: {key}: outside of an [Interface] or [Peer] section")
        try:
            if section == "interface":
                if lkey == "privatekey":
                    iface["private_key"] = decode_key(value, "PrivateKey")
                elif lkey == "listenport":
                    iface["listen_port"] = _int(value, 0, 65535)
                elif lkey == "fwmark":
                    iface["fwmark"] = 0 if value == "off" else _mark(value)
                elif lkey == "address":
                    iface.setdefault("addresses", []).extend(_prefixes(value, interface=True))
                elif lkey == "mtu":
                    iface["mtu"] = _int(value, 576, 65535)
                elif lkey == "dns":
                    iface.setdefault("dns", []).extend(v.strip() for v in value.split(",") if v.strip())
                    notes.append(f"{where}: DNS is ignored (wiregate does not change the resolver)")
                elif lkey == "table":
                    iface["routes"] = value.lower() != "off"
                    if value.lower() not in ("off", "auto", "main"):
                        notes.append(f"{where}: Table = {value}: routes go to the main table")
                elif lkey in IGNORED_INTERFACE_KEYS:
                    notes.append(f"{where}: {key} is ignored by wiregate")
                else:
                    raise ValueError("unknown key in [Interface]")
            else:
                peer = peers[-1]
                if lkey == "publickey":
                    peer["public_key"] = decode_key(value, "PublicKey")
                elif lkey == "presharedkey":
                    peer["preshared_key"] = decode_key(value, "PresharedKey")
                elif lkey == "allowedips":
                    peer["allowed_ips"].extend(_prefixes(value, interface=False))
                elif lkey == "endpoint":
                    peer["endpoint"] = hostport.parse(value, what="Endpoint")
                elif lkey == "persistentkeepalive":
                    peer["persistent_keepalive"] = 0 if value == "off" else _int(value, 0, 65535)
                else:
                    raise ValueError("unknown key in [Peer]")
        except (ValueError, ConfigError) as exc:
            msg = str(exc)
            # decode_key already names the key; do not say it twice
            prefix = "" if isinstance(exc, ConfigError) else f"{key}: "
            raise ConfigError(f"{where}: {prefix}{msg}") from None
    if not iface_seen:
        raise ConfigError(f"{source}: no [Interface] section")
    if "private_key" not in iface:
        raise ConfigError(f"{source}: [Interface] has no PrivateKey")
    out_peers = []
    seen: set[bytes] = set()
    for p in peers:
        line = p.pop("_line")
        if "public_key" not in p:
            raise ConfigError(f"{source}:{line}: [Peer] has no PublicKey")
        if p["public_key"] in seen:
            raise ConfigError(f"{source}:{line}: PublicKey: the same peer appears twice")
        seen.add(p["public_key"])
        p["allowed_ips"] = tuple(dict.fromkeys(p["allowed_ips"]))
        out_peers.append(PeerSection(**p))
    return WgQuickConfig(
        private_key=iface["private_key"], listen_port=iface.get("listen_port"), fwmark=iface.get("fwmark", 0),
        addresses=tuple(iface.get("addresses", ())), mtu=iface.get("mtu"), dns=tuple(iface.get("dns", ())),
        peers=tuple(out_peers), routes=iface.get("routes", True), notes=tuple(notes),
    )


def check_secret_file(path: Path) -> None:
    """Refuse a file holding secrets when group or others may read or write it (it must be 0600 or stricter)."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    if stat.S_IMODE(mode) & 0o077:
        raise ConfigError(
            f"{path}: holds a private key but its mode is {stat.S_IMODE(mode):04o}; run: chmod 600 {path}"
        )


def load(path: str | os.PathLike) -> WgQuickConfig:
    """Read a wg-quick file, refusing it when group/world readable (it holds the private key)."""
    p = Path(path)
    check_secret_file(p)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from None
    if len(data) > 1 << 20:
        raise ConfigError(f"{p}: larger than 1 MiB; not a wg-quick file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text") from None
    return parse(text, str(p))


def format_config(cfg: WgQuickConfig) -> str:
    """The config as wg-quick text (round-trips through parse)."""
    lines = ["[Interface]", f"PrivateKey = {encode_key(cfg.private_key)}"]
    if cfg.listen_port is not None:
        lines.append(f"ListenPort = {cfg.listen_port}")
    if cfg.fwmark:
        lines.append(f"FwMark = {cfg.fwmark}")
    if cfg.addresses:
        lines.append(f"Address = {', '.join(cfg.addresses)}")
    if cfg.mtu is not None:
        lines.append(f"MTU = {cfg.mtu}")
    if cfg.dns:
        lines.append(f"DNS = {', '.join(cfg.dns)}")
    if not cfg.routes:
        lines.append("Table = off")
    for p in cfg.peers:
        lines += ["", "[Peer]", f"PublicKey = {encode_key(p.public_key)}"]
        if p.preshared_key is not None:
            lines.append(f"PresharedKey = {encode_key(p.preshared_key)}")
        if p.allowed_ips:
            lines.append(f"AllowedIPs = {', '.join(p.allowed_ips)}")
        if p.endpoint is not None:
            lines.append(f"Endpoint = {hostport.format(p.endpoint)}")
        if p.persistent_keepalive:
            lines.append(f"PersistentKeepalive = {p.persistent_keepalive}")
    return "\n".join(lines) + "\n"


def write(path: str | os.PathLike, cfg: WgQuickConfig) -> None:
    """Write the config to `path` with mode 0600 from the start (never briefly readable by others)."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(format_config(cfg))
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

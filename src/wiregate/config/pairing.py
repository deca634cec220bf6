"""Pairing in three commands: `init gateway` (VPS), `site add NAME` (VPS, prints a token), `join TOKEN` (home).

Files are written as commented TOML text (not re-serialised), so a user's comments and layout survive `site add`,
which appends one `[[sites]]` table and checks the result before keeping it. Keys go to separate files created
with mode 0600; config files get 0644 (they hold public keys only).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path

from wiregate import hostport
from wiregate.config import model, token
from wiregate.config.schema import (
    endpoint_parser,
    fail,
    p_ifname,
    p_interface,
    p_name,
)
from wiregate.errors import ConfigError
from wiregate.wireguard import keys

GATEWAY_FILE = "gateway.toml"
GATEWAY_KEY = "gateway.key"
HOME_FILE = "home.toml"
HOME_KEY = "home.key"


def _q(s: str) -> str:
    return json.dumps(s)  # a TOML basic string is a JSON string for the characters we write


def _make_dir(config_dir: Path) -> None:
    try:
        config_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{config_dir}: cannot create the directory ({exc.strerror or exc})") from None


def _refuse_overwrite(paths: list[Path], force: bool) -> None:
    if force:
        return
    for p in paths:
        if p.exists():
            raise ConfigError(f"{p}: exists already; use --force to replace it (the old key would be lost)")


def default_interface(name: str) -> str:
    """The tunnel interface `init`/`join` write for an instance: `wg-NAME` (cut to Linux's 15 characters). Instance
    names are unique on a host already (they name the control socket), so a gateway and a home, or two homes, on
    one host get different interfaces (and UAPI sockets) without the user choosing."""
    return f"wg-{name}"[:15]


def gateway_text(name: str, endpoint: tuple[str, int], address: str, listen_port: int, key_file: str,
                 interface: str | None = None) -> str:
    """A fresh gateway file (no sites yet, one commented example service)."""
    return f"""# wiregate gateway (VPS side). Reference: docs/config.md; check with: wiregate check THIS_FILE
role = "gateway"
name = {_q(name)}

[tunnel]
# mode = "auto"          # builtin | kernel | external | auto (kernel WireGuard when present, else builtin)
interface = {_q(interface or default_interface(name))}   # one per node on a host
endpoint = {_q(hostport.format(endpoint))}   # what homes dial; goes into join tokens
listen_port = {listen_port}
address = {_q(address)}          # gateway tunnel address; sites get the next free ones
private_key_file = {_q(key_file)}

[metrics]
listen = "127.0.0.1:9851"

# A public port forwarded to every site (PROXY v2 header first, so home sees the client address):
# [[services]]
# name = "https"
# listen = ["0.0.0.0:443", "[::]:443"]
#
# [[services]]
# name = "dns"
# protocol = "udp"
# listen = ["0.0.0.0:53"]

# Sites are appended below by `wiregate site add NAME`.
"""


def init_gateway(config_dir: Path, endpoint: str, *, name: str = "gateway", address: str = "192.0.2.1/24",
                 listen_port: int | None = None, interface: str | None = None, force: bool = False) -> Path:
    """Write gateway.toml and gateway.key (0600) into `config_dir`; returns the config path."""
    ep = endpoint_parser(51820)("--endpoint", endpoint)
    p_name("--name", name)
    interface = p_ifname("--interface", interface or default_interface(name))
    address = p_interface("--address", address)
    cfg_path, key_path = config_dir / GATEWAY_FILE, config_dir / GATEWAY_KEY
    _refuse_overwrite([cfg_path, key_path], force)
    _make_dir(config_dir)
    private = keys.generate_private_key()
    model.write_secret(key_path, keys.encode_key(private) + "\n")
    model.write_text(cfg_path, gateway_text(name, ep, address, listen_port or ep[1], GATEWAY_KEY, interface))
    model.load(cfg_path)  # what we wrote must pass our own check
    return cfg_path


@dataclass(frozen=True, slots=True)
class SiteAdded:
    token: str
    address: str
    public_key: str

    def __repr__(self) -> str:  # the token holds the site's private key
        return f"SiteAdded(address={self.address!r}, public_key={self.public_key!r})"


def next_free_address(cfg: model.GatewayConfig) -> str:
    """The lowest host address of the tunnel prefix not used by the gateway or a site."""
    iface = ipaddress.ip_interface(cfg.tunnel.address)
    used = {iface.ip} | {ipaddress.ip_address(s.address) for s in cfg.sites}
    for i, host in enumerate(iface.network.hosts()):
        if host not in used:
            return str(host)
        if i > 1 << 16:
            break
    raise ConfigError(f"tunnel.address: {cfg.tunnel.address!r}: no free address left for a new site")


def site_add(config_path: Path, name: str, *, address: str | None = None) -> SiteAdded:
    """Append a site with a fresh key pair to the gateway file and return its join token.

    The site's private key exists only in the returned token; the file keeps the public key."""
    cfg = model.load(config_path)
    if not isinstance(cfg, model.GatewayConfig):
        raise ConfigError(f"{config_path}: is a {cfg.role} file; run 'site add' on the gateway")
    p_name("NAME", name)
    if any(s.name == name for s in cfg.sites):
        raise fail("NAME", name, f"is already a site in {config_path} (remove its [[sites]] table first)")
    net = ipaddress.ip_interface(cfg.tunnel.address).network
    if address is None:
        address = next_free_address(cfg)
    else:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            raise fail("--address", address, "not an IP address") from None
        if ip not in net:
            raise fail("--address", address, f"is outside the tunnel prefix {net}")
    gw_private = model.read_key(cfg.tunnel.private_key_file, "tunnel.private_key_file")
    site_private = keys.generate_private_key()
    site_public = keys.encode_key(keys.public_key(site_private))
    block = (f"\n[[sites]]\nname = {_q(name)}\npublic_key = {_q(site_public)}\naddress = {_q(address)}\n")
    original = config_path.read_text()
    text = original if original.endswith("\n") else original + "\n"
    model.write_text(config_path, text + block, mode=config_path.stat().st_mode & 0o777)
    try:
        model.load(config_path)
    except ConfigError:
        model.write_text(config_path, original, mode=config_path.stat().st_mode & 0o777)  # keep the good file
        raise
    tok = token.encode(token.JoinToken(
        gateway_public_key=keys.public_key(gw_private), site_private_key=site_private,
        site_address=f"{address}/{net.prefixlen}", gateway_address=cfg.tunnel.ip, endpoint=cfg.tunnel.endpoint,
        site_name=name))
    return SiteAdded(token=tok, address=address, public_key=site_public)


def home_text(tok: token.JoinToken, name: str, key_file: str, interface: str | None = None) -> str:
    """A fresh home file for a decoded join token, with a commented example listener."""
    return f"""# wiregate home side. Reference: docs/config.md; check with: wiregate check THIS_FILE
role = "home"
name = {_q(name)}

[tunnel]
# mode = "auto"          # builtin | kernel | external | auto
interface = {_q(interface or default_interface(name))}   # one per node on a host
address = {_q(tok.site_address)}
gateway_endpoint = {_q(hostport.format(tok.endpoint))}
gateway_public_key = {_q(keys.encode_key(tok.gateway_public_key))}
gateway_address = {_q(tok.gateway_address)}
private_key_file = {_q(key_file)}

[metrics]
listen = "127.0.0.1:9852"

# What arrives through the tunnel on a port, and where it goes at home. The gateway sends a PROXY header, so
# each route's target learns the real client address (send_proxy = "v2", or http_headers = true for HTTP).
# [[listeners]]
# name = "https"
# listen = "tunnel:443"
#
# [[listeners.routes]]
# name = "web"
# sni = ["www.example.org"]
# target = "192.168.1.10:443"
# send_proxy = "v2"
"""


@dataclass(frozen=True, slots=True)
class GatewayAdded:
    """What `join` on an existing home file did: the gateway's name, interface and the new key file."""

    path: Path
    name: str
    interface: str
    key_file: Path
    home: str  # the home's instance name (its unit is wiregate-HOME)


def _numbered(base: str, n: int, taken: set[str], limit: int) -> str:
    """`base` + the first free number from n on, cut so the whole fits `limit` characters."""
    while True:
        suffix = str(n)
        cand = base[:limit - len(suffix)] + suffix
        if cand not in taken:
            return cand
        n += 1


def add_gateway(tok_text: str, cfg_path: Path, *, name: str | None = None,
                interface: str | None = None) -> GatewayAdded:
    """Append a [[gateways]] table for a further gateway to an existing home file, its key in a new 0600 file.

    Refused (the file unchanged) when the token's gateway is joined already, when its tunnel prefix overlaps
    another gateway's, or when the result does not pass `wiregate check`."""
    tok = token.decode(tok_text)
    cfg = model.load(cfg_path)
    if not isinstance(cfg, model.HomeConfig):
        raise ConfigError(f"{cfg_path}: is a {cfg.role} file; run 'join' on the home")
    links = cfg.links
    gw_key = keys.encode_key(tok.gateway_public_key)
    for g in links:
        if g.gateway_public_key == gw_key:
            raise ConfigError(f"TOKEN: the gateway with key {gw_key} ({hostport.format(tok.endpoint)}) is already "
                              f"gateway {g.name!r} of {cfg_path} ({g.where}.gateway_public_key): each gateway is "
                              "joined once")
    net = ipaddress.ip_interface(tok.site_address).network
    for g in links:
        other = ipaddress.ip_interface(g.address).network
        if other.version == net.version and other.overlaps(net):
            raise ConfigError(f"TOKEN: the gateway at {hostport.format(tok.endpoint)} gives this home "
                              f"{tok.site_address}, which overlaps {g.address} of gateway {g.name!r} "
                              f"({g.where}.address): each gateway needs its own tunnel prefix; give the new gateway "
                              "another one (tunnel.address in its file, e.g. \"10.78.0.1/24\", and the [[sites]] "
                              "addresses with it), then `site add` again")
    names = {g.name for g in links}
    if name is None:
        name = _numbered("gateway", len(links) + 1, names, 32)
    p_name("--gateway-name", name)
    if name in names:
        raise fail("--gateway-name", name, f"is a gateway of {cfg_path} already")
    ifaces = {g.interface for g in links}
    interface = p_ifname("--interface", interface or _numbered(cfg.tunnel.interface, len(links) + 1, ifaces, 15))
    if interface in ifaces:
        raise fail("--interface", interface, f"is the interface of another gateway in {cfg_path}")
    key_name = f"{Path(HOME_KEY).stem}-{name}.key"
    key_path = cfg_path.parent / key_name
    _refuse_overwrite([key_path], False)
    block = f"""
# a further gateway (wiregate join): its own interface, key and tunnel address; README "Several gateways"
[[gateways]]
name = {_q(name)}
interface = {_q(interface)}
address = {_q(tok.site_address)}
gateway_endpoint = {_q(hostport.format(tok.endpoint))}
gateway_public_key = {_q(gw_key)}
gateway_address = {_q(tok.gateway_address)}
private_key_file = {_q(key_name)}
"""
    original = cfg_path.read_text()
    text = original if original.endswith("\n") else original + "\n"
    mode = cfg_path.stat().st_mode & 0o777
    model.write_secret(key_path, keys.encode_key(tok.site_private_key) + "\n")
    model.write_text(cfg_path, text + block, mode=mode)
    try:
        model.load(cfg_path)
    except ConfigError:
        model.write_text(cfg_path, original, mode=mode)  # keep the good file
        key_path.unlink(missing_ok=True)
        raise
    return GatewayAdded(path=cfg_path, name=name, interface=interface, key_file=key_path, home=cfg.name)


def join(tok_text: str, config_dir: Path, *, name: str | None = None, interface: str | None = None,
         force: bool = False) -> Path:
    """Write home.toml and home.key (0600) from a join token; returns the config path. (On an existing home file,
    `add_gateway` adds a further gateway instead: see the CLI.)"""
    tok = token.decode(tok_text)
    name = name or tok.site_name
    p_name("--name", name)
    interface = p_ifname("--interface", interface or default_interface(name))
    cfg_path, key_path = config_dir / HOME_FILE, config_dir / HOME_KEY
    _refuse_overwrite([cfg_path, key_path], force)
    _make_dir(config_dir)
    model.write_secret(key_path, keys.encode_key(tok.site_private_key) + "\n")
    model.write_text(cfg_path, home_text(tok, name, HOME_KEY, interface))
    model.load(cfg_path)
    return cfg_path

"""The tunnel under a node, in one of three modes, behind one small interface.

- `builtin`: wiregate's own WireGuard (`wiregate.wireguard.interface.WireGuardInterface`) on a TUN device.
- `kernel`: Linux's WireGuard, created and configured over netlink (pyroute2), removed on close.
- `external`: the interface exists already (wg-quick, wireguard-go...); wiregate only reads its state (`wg show`).

`auto` picks kernel when the kernel can make a WireGuard link, else builtin.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from wiregate import hostport
from wiregate.errors import ConfigError, WiregateError
from wiregate.wireguard.keys import encode_key

log = logging.getLogger("wiregate.tunnel")
WG_SHOW_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class PeerSpec:
    public_key: bytes
    allowed_ips: tuple[str, ...]
    preshared_key: bytes | None = None
    endpoint: tuple[str, int] | None = None  # an IP address: names are resolved by the node
    persistent_keepalive: int = 0
    label: str = ""

    def __repr__(self) -> str:  # keep the preshared key out of logs
        return f"PeerSpec({self.label or encode_key(self.public_key)[:8]}, endpoint={self.endpoint})"


@dataclass(frozen=True, slots=True)
class TunnelSpec:
    mode: str
    interface: str
    private_key: bytes
    address: str
    listen_port: int
    mtu: int
    peers: tuple[PeerSpec, ...]

    def __repr__(self) -> str:  # keep the private key out of logs
        return f"TunnelSpec({self.mode}, {self.interface}, {self.address}, peers={self.peers})"


def kernel_has_wireguard(sys_module: Path = Path("/sys/module"), lib_modules: Path = Path("/lib/modules"),
                         release: str | None = None) -> bool:
    """True when this kernel has WireGuard: loaded or built in (/sys/module/wireguard), or a loadable module listed
    in /lib/modules/RELEASE/modules.dep (creating the link loads it).

    No netlink probe: pyroute2's sockets, opened from a thread with a running event loop (uvloop), leave a task
    behind that dies with `invalid family 16` and is logged as an ERROR traceback at every start."""
    if (sys_module / "wireguard").is_dir():
        return True
    release = release or os.uname().release
    for name in ("modules.builtin", "modules.dep"):
        try:
            with open(lib_modules / release / name, "rb") as f:
                data = f.read(1 << 22)
        except OSError:
            continue
        if re.search(rb"(^|/)wireguard\.ko(\.[a-z]+)?(:|$)", data, re.MULTILINE):
            return True
    return False


def resolve_mode(mode: str) -> str:
    """The concrete mode for a configured one (`auto` -> kernel or builtin)."""
    if mode != "auto":
        return mode
    return "kernel" if kernel_has_wireguard() else "builtin"


def make_tunnel(spec: TunnelSpec) -> Tunnel:
    """The tunnel for the spec's mode (`auto` resolved here: the tunnel's `mode` is the concrete one, its `spec.mode`
    stays the configured one, so a reload of the same file compares like with like)."""
    mode = resolve_mode(spec.mode)
    cls = {"builtin": BuiltinTunnel, "kernel": KernelTunnel}.get(mode, ExternalTunnel)
    tunnel = cls(spec)
    tunnel.mode = mode
    return tunnel


class Tunnel:
    """Common surface: start, close, update (peers / endpoints), status."""

    def __init__(self, spec: TunnelSpec) -> None:
        self.spec = spec  # as configured (mode may be "auto")
        self.mode = spec.mode  # the concrete mode (make_tunnel resolves "auto")

    async def start(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def update(self, spec: TunnelSpec) -> None:
        """Apply a new spec to the running tunnel (peers added/removed/changed); ConfigError if it needs a restart."""
        raise NotImplementedError

    def status(self) -> dict[str, Any]:
        """The tunnel's state as last read (never blocks: see refresh)."""
        raise NotImplementedError

    async def refresh(self) -> None:
        """Read the interface's state for status(), off the event loop where that takes a program (`wg show`)."""

    # what restart_handshake does, for the log line
    REPAIR = "starting a new handshake"

    async def restart_handshake(self) -> bool:
        """Drop the peers' sessions so the next packet starts a handshake at once; False when not ours to do."""
        return False

    # what a running tunnel cannot change: the device is made with these (the private key, the listen port and
    # the peers are applied in place: Device.set_private_key expires the sessions and the peers handshake again)
    RESTART_ONLY = ("interface", "address", "mode", "mtu")

    def _check_same(self, spec: TunnelSpec) -> None:
        for what in self.RESTART_ONLY:
            if getattr(spec, what) != getattr(self.spec, what):
                raise ConfigError(f"tunnel.{what}: changed from {getattr(self.spec, what)!r} to "
                                  f"{getattr(spec, what)!r}; restart wiregate to apply it (reload keeps the old one)")

    def failed(self) -> asyncio.Event | None:
        """An event set when the tunnel device stops working under us (None: nothing to watch)."""
        return None


# -- builtin ----------------------------------------------------------------------------------------------------
class BuiltinTunnel(Tunnel):
    def _wgquick(self, spec: TunnelSpec):
        from wiregate.wireguard.config import PeerSection, WgQuickConfig

        return WgQuickConfig(
            private_key=spec.private_key, listen_port=spec.listen_port or None, addresses=(spec.address,),
            mtu=spec.mtu,
            peers=tuple(PeerSection(public_key=p.public_key, preshared_key=p.preshared_key,
                                    allowed_ips=p.allowed_ips, endpoint=p.endpoint,
                                    persistent_keepalive=p.persistent_keepalive) for p in spec.peers))

    async def start(self) -> None:
        from wiregate.wireguard.interface import WireGuardInterface

        self.iface = WireGuardInterface(self.spec.interface, self._wgquick(self.spec), mtu=self.spec.mtu)
        await self.iface.start()

    async def close(self) -> None:
        await self.iface.close()

    def failed(self) -> asyncio.Event | None:
        return self.iface.failed

    async def update(self, spec: TunnelSpec) -> None:
        self._check_same(spec)
        self.iface.update(self._wgquick(spec))
        self.spec = spec

    async def restart_handshake(self) -> bool:
        # removing and re-adding the peers forgets their sessions; endpoints and allowed IPs come back as configured
        self.iface.update(self._wgquick(replace(self.spec, peers=())))
        self.iface.update(self._wgquick(self.spec))
        return True

    def status(self) -> dict[str, Any]:
        st = self.iface.status()
        labels = {encode_key(p.public_key): p.label for p in self.spec.peers}
        peers = [{"name": labels.get(p["public_key"], ""), "public_key": p["public_key"], "endpoint": p["endpoint"],
                  "last_handshake": p["last_handshake"], "rx_bytes": p["rx_bytes"], "tx_bytes": p["tx_bytes"]}
                 for p in st["peers"]]
        return {"mode": "builtin", "interface": self.spec.interface, "address": self.spec.address,
                "listen_port": st.get("listen_port"), "peers": peers}


# -- reading any interface with `wg show` (kernel and external modes) ------------------------------------------
def wg_show_dump(interface: str) -> dict[str, Any]:
    """An interface's state from `wg show IF dump` (kernel or userspace); raises WiregateError when unavailable."""
    wg = shutil.which("wg") or "/usr/bin/wg"
    try:
        r = subprocess.run([wg, "show", interface, "dump"], capture_output=True, text=True,
                           timeout=WG_SHOW_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise WiregateError(f"tunnel: cannot run `wg show {interface} dump`: {exc}") from None
    if r.returncode != 0:
        raise WiregateError(f"tunnel: `wg show {interface}`: {r.stderr.strip() or 'failed'}")
    lines = r.stdout.splitlines()
    if not lines:
        raise WiregateError(f"tunnel: `wg show {interface}` printed nothing")
    head = lines[0].split("\t")
    peers = []
    for line in lines[1:]:
        f = line.split("\t")
        if len(f) < 8:
            continue
        hs = int(f[4]) if f[4].isdigit() else 0
        peers.append({"public_key": f[0], "endpoint": None if f[2] == "(none)" else f[2],
                      "last_handshake": hs or None, "rx_bytes": int(f[5]), "tx_bytes": int(f[6])})
    return {"listen_port": int(head[2]) if len(head) > 2 and head[2].isdigit() else None, "peers": peers}


class _WgShowCache:
    """`wg show IF dump`, run in a thread and cached: status() is called from the event loop (control socket,
    metrics) and must not wait up to WG_SHOW_TIMEOUT for a program while the relay's connections wait too."""

    def __init__(self, interface: str) -> None:
        self.interface = interface
        self.state: dict[str, Any] = {"error": "not read yet", "peers": []}
        self._pending: asyncio.Future | None = None

    async def refresh(self) -> None:
        if self._pending is None or self._pending.done():
            self._pending = asyncio.get_running_loop().run_in_executor(None, self._read)
        await asyncio.shield(self._pending)

    def _read(self) -> None:
        try:
            self.state = wg_show_dump(self.interface)
        except WiregateError as exc:
            self.state = {"error": str(exc), "peers": []}


def _wg_status(spec: TunnelSpec, mode: str, cache: _WgShowCache) -> dict[str, Any]:
    st = {k: (list(v) if k == "peers" else v) for k, v in cache.state.items()}
    labels = {encode_key(p.public_key): p.label for p in spec.peers}
    st["peers"] = [dict(p, name=labels.get(p["public_key"], "")) for p in st["peers"]]
    return {"mode": mode, "interface": spec.interface, "address": spec.address, **st}


class ExternalTunnel(Tunnel):
    """An interface someone else runs; wiregate checks that it exists and reports its state."""

    def __init__(self, spec: TunnelSpec) -> None:
        super().__init__(spec)
        self.cache = _WgShowCache(spec.interface)

    async def refresh(self) -> None:
        await self.cache.refresh()

    async def start(self) -> None:
        if not Path(f"/sys/class/net/{self.spec.interface}").exists():
            raise WiregateError(f"tunnel.interface: {self.spec.interface!r}: no such interface (mode external "
                                "expects it up already, e.g. from wg-quick)")
        ip = str(ipaddress.ip_interface(self.spec.address).ip)
        argv = ["ip", "-o", "addr", "show", "dev", self.spec.interface]
        out = (await asyncio.get_running_loop().run_in_executor(None, lambda: subprocess.run(
            argv, capture_output=True, text=True, timeout=5, check=False))).stdout
        if f" {ip}/" not in out:
            log.warning("tunnel: %s does not carry the configured address %s", self.spec.interface, ip)
        await self.refresh()

    async def close(self) -> None:
        pass

    async def update(self, spec: TunnelSpec) -> None:
        """Keys and peers are the external program's business; only a peer endpoint that moved (the gateway's DNS
        name now resolves elsewhere) is pushed with `wg set`, as wireguard-tools' reresolve-dns.sh would."""
        self._check_same(spec)
        old = {p.public_key: p.endpoint for p in self.spec.peers}
        moved = [(p, p.endpoint) for p in spec.peers
                 if p.endpoint and p.public_key in old and old[p.public_key] != p.endpoint]
        self.spec = spec
        for p, ep in moved:
            await asyncio.get_running_loop().run_in_executor(None, self._set_endpoint, p, ep)

    REPAIR = "setting the gateway endpoint again (a fresh source address)"

    async def restart_handshake(self) -> bool:
        """The sessions are the external program's; but setting a peer's endpoint again makes wireguard-go and the
        kernel forget the source address they stuck to, which is what keeps a home that changed address silent
        until their own 15 s handshake retry."""
        peers = [(p, p.endpoint) for p in self.spec.peers if p.endpoint]
        for p, ep in peers:
            await asyncio.get_running_loop().run_in_executor(None, self._set_endpoint, p, ep)
        return bool(peers)

    def _set_endpoint(self, p: PeerSpec, endpoint: tuple[str, int]) -> None:
        wg = shutil.which("wg") or "/usr/bin/wg"
        ep = hostport.format(endpoint)
        try:
            r = subprocess.run([wg, "set", self.spec.interface, "peer", encode_key(p.public_key), "endpoint", ep],
                               capture_output=True, text=True, timeout=WG_SHOW_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("tunnel: cannot run `wg set` to move peer %s to %s: %s", p.label, ep, exc)
            return
        if r.returncode != 0:
            log.warning("tunnel: `wg set %s peer ... endpoint %s` failed: %s", self.spec.interface, ep,
                        r.stderr.strip())
        else:
            log.info("tunnel: peer %s endpoint set to %s on %s", p.label, ep, self.spec.interface)

    def status(self) -> dict[str, Any]:
        return _wg_status(self.spec, "external", self.cache)


# -- kernel -----------------------------------------------------------------------------------------------------
class KernelTunnel(Tunnel):
    """Linux WireGuard over netlink (pyroute2): the link is created at start and deleted at close."""

    created = False  # only a link this object made is ever deleted (never someone else's wg0)

    def __init__(self, spec: TunnelSpec) -> None:
        super().__init__(spec)
        self.cache = _WgShowCache(spec.interface)

    async def refresh(self) -> None:
        await self.cache.refresh()

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._start)

    def _start(self) -> None:
        from pyroute2 import IPRoute

        s = self.spec
        iface = ipaddress.ip_interface(s.address)
        with IPRoute() as ipr:
            try:
                ipr.link("add", ifname=s.interface, kind="wireguard")
            except Exception as exc:  # noqa: BLE001 - pyroute2 raises NetlinkError
                raise WiregateError(f"tunnel: cannot create kernel WireGuard link {s.interface!r}: {exc} "
                                    "(mode = \"builtin\" works without the kernel module)") from None
            self.created = True
            idx = ipr.link_lookup(ifname=s.interface)[0]
            try:
                ipr.addr("add", index=idx, address=str(iface.ip), prefixlen=iface.network.prefixlen)
                ipr.link("set", index=idx, mtu=s.mtu)
                self._configure(s, replace_peers=True)
                ipr.link("set", index=idx, state="up")
            except BaseException:
                ipr.link("del", index=idx)
                self.created = False
                raise

    def _configure(self, s: TunnelSpec, replace_peers: bool = False, remove: tuple[bytes, ...] = ()) -> None:
        from pyroute2 import WireGuard

        with WireGuard() as wg:
            wg.set(s.interface, private_key=encode_key(s.private_key), listen_port=s.listen_port or None)
            for key in remove:
                wg.set(s.interface, peer={"public_key": encode_key(key), "remove": True})
            for p in s.peers:
                peer: dict[str, Any] = {"public_key": encode_key(p.public_key), "allowed_ips": list(p.allowed_ips),
                                        "persistent_keepalive": p.persistent_keepalive,
                                        "replace_allowed_ips": True}
                if p.preshared_key:
                    peer["preshared_key"] = encode_key(p.preshared_key)
                if p.endpoint:
                    peer["endpoint_addr"], peer["endpoint_port"] = p.endpoint
                wg.set(s.interface, peer=peer)

    async def close(self) -> None:
        if not self.created:
            return

        def down() -> None:
            from pyroute2 import IPRoute

            with IPRoute() as ipr:
                idx = ipr.link_lookup(ifname=self.spec.interface)
                if idx:
                    ipr.link("del", index=idx[0])
        await asyncio.get_running_loop().run_in_executor(None, down)
        self.created = False

    async def update(self, spec: TunnelSpec) -> None:
        self._check_same(spec)
        gone = tuple({p.public_key for p in self.spec.peers} - {p.public_key for p in spec.peers})
        await asyncio.get_running_loop().run_in_executor(None, lambda: self._configure(spec, remove=gone))
        self.spec = spec

    async def restart_handshake(self) -> bool:
        keys = tuple(p.public_key for p in self.spec.peers)
        await asyncio.get_running_loop().run_in_executor(None, lambda: self._configure(self.spec, remove=keys))
        return True

    def status(self) -> dict[str, Any]:
        return _wg_status(self.spec, "kernel", self.cache)  # `wg show` reads kernel interfaces too


def describe_endpoint(ep: tuple[str, int] | None) -> str:
    """An endpoint for logs."""
    return "-" if ep is None else hostport.format(ep)

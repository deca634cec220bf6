"""A running WireGuard interface: the sans-I/O Device driven from a TUN device, a UDP socket and the event loop.

    iface = WireGuardInterface("wg0", wgquick_config)
    await iface.start()      # TUN up with addresses and routes, UDP bound, UAPI socket open
    iface.status()           # peers: endpoint, last handshake, rx/tx bytes
    iface.update(new_cfg)    # peers added/removed/changed in place; sessions of unchanged peers survive
    await iface.close()

The loop holds no protocol decisions: readable TUN -> Device.send_packets -> datagrams out; readable UDP ->
Device.receive_datagrams -> packets to TUN and datagrams out (handshake answers); one call_at timer for
Device.next_deadline(); ResolveEndpoint events -> getaddrinfo in the executor -> Device.set_endpoint.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from pathlib import Path
from typing import Any

from wiregate import hostport
from wiregate.errors import ConfigError, WiregateError
from wiregate.wireguard import uapi
from wiregate.wireguard.config import PeerSection, WgQuickConfig
from wiregate.wireguard.device import Device, PeerConfig
from wiregate.wireguard.events import HandshakeComplete, HandshakeGaveUp, PeerRoamed, ResolveEndpoint
from wiregate.wireguard.keys import encode_key, public_key
from wiregate.wireguard.tun import Tun
from wiregate.wireguard.udp import UdpSocket

log = logging.getLogger(__name__)

UAPI_DIR = Path("/var/run/wireguard")
DEFAULT_MTU = 1420
# packets handled per wake-up before yielding to the loop (keeps UAPI and timers responsive under load)
TUN_BATCH = 128
UDP_BATCH = 256
RESOLVE_RETRY = 5.0  # seconds before a failed endpoint lookup is tried again
MAX_UAPI_CLIENTS = 16


def _is_ip(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        return True
    except OSError:
        return False


def peer_config(p: PeerSection) -> PeerConfig:
    """The core's PeerConfig for a wg-quick [Peer]; a DNS endpoint is left for the Device to ask us to resolve."""
    endpoint = endpoint_host = None
    if p.endpoint is not None:
        host, port = p.endpoint
        if _is_ip(host):
            endpoint = (host, port)
        else:
            endpoint_host = hostport.format((host, port))
    return PeerConfig(public_key=p.public_key, preshared_key=p.preshared_key, allowed_ips=p.allowed_ips,
                      endpoint=endpoint, endpoint_host=endpoint_host, persistent_keepalive=p.persistent_keepalive)


class WireGuardInterface:
    """One WireGuard interface in this process (see module docstring)."""

    def __init__(self, name: str, config: WgQuickConfig, *, mtu: int = DEFAULT_MTU, uapi_dir: Path = UAPI_DIR,
                 uapi_socket: bool = True) -> None:
        self.name = name
        self.config = config
        self.mtu = config.mtu or mtu
        self.uapi_path = uapi_dir / f"{name}.sock"
        self._want_uapi = uapi_socket
        # set by start(): read them through the properties below, which say so when the interface is not started
        self._device: Device | None = None
        self._tun: Tun | None = None
        self._udp: UdpSocket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._uapi_server: asyncio.AbstractServer | None = None
        self._uapi_clients = 0
        self._resolving: set[bytes] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._routes: set[str] = set()
        self.fwmark = config.fwmark
        self.failed = asyncio.Event()  # set when the TUN device stops working; the owner should close()

    @property
    def device(self) -> Device:
        """The sans-I/O Device (from start() on)."""
        if self._device is None:
            raise RuntimeError(f"{self.name}: the interface is not started")
        return self._device

    @property
    def tun(self) -> Tun:
        """The TUN device (from start() until close())."""
        if self._tun is None:
            raise RuntimeError(f"{self.name}: the interface has no TUN device (not started, or closed)")
        return self._tun

    @property
    def udp(self) -> UdpSocket:
        """The UDP socket (from start() until close())."""
        if self._udp is None:
            raise RuntimeError(f"{self.name}: the interface has no UDP socket (not started, or closed)")
        return self._udp

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop start() ran in."""
        if self._loop is None:
            raise RuntimeError(f"{self.name}: the interface is not started")
        return self._loop

    # -- life cycle -------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Create the TUN device and UDP socket, configure the link, open the UAPI socket, start the loop hooks."""
        loop = self._loop = asyncio.get_running_loop()
        device = self._device = Device(self.config.private_key, mtu=self.mtu)
        for p in self.config.peers:
            device.add_peer(peer_config(p))
        if self._want_uapi:
            self._claim_uapi_path()  # before touching the system: a live socket means the name is taken
        try:
            udp = self._udp = UdpSocket(self.config.listen_port or 0)
        except OSError as exc:
            raise WiregateError(f"{self.name}: cannot bind UDP port {self.config.listen_port}: {exc.strerror}") \
                from None
        try:
            if self.fwmark:
                udp.set_mark(self.fwmark)
            tun = self._tun = Tun(self.name)
            tun.set_mtu(self.mtu)
            for addr in self.config.addresses:
                tun.add_address(addr)
            tun.up()
            self._sync_routes()
            loop.add_reader(tun.fd, self._on_tun)
            loop.add_reader(udp.fileno(), self._on_udp)
            if self._want_uapi:
                await self._open_uapi()
        except BaseException:
            self._close_io()
            raise
        self._after_io()
        log.info("%s: up, listening on UDP port %d, %d peer(s)", self.name, udp.port, len(self.config.peers))

    async def close(self) -> None:
        """Stop the loop hooks, close the UAPI socket, remove the interface."""
        if self._uapi_server is not None:
            self._uapi_server.close()
            self._uapi_server = None
            try:
                self.uapi_path.unlink()
            except FileNotFoundError:
                pass
        for t in list(self._tasks):
            t.cancel()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._close_io()

    def _close_io(self) -> None:
        loop = self._loop
        if self._tun is not None:
            if loop is not None and self._tun.fd >= 0:
                loop.remove_reader(self._tun.fd)
            self._tun.close()
            self._tun = None
        if self._udp is not None:
            if loop is not None:
                loop.remove_reader(self._udp.fileno())
            self._udp.close()
            self._udp = None

    # -- data path -----------------------------------------------------------------------------------------
    def _on_tun(self) -> None:
        try:
            packets = self.tun.read_batch(TUN_BATCH)
        except OSError as exc:  # EBADFD/EIO: the interface was deleted or broke; reading again would spin
            log.error("%s: TUN device failed: %s", self.name, exc.strerror)
            self.loop.remove_reader(self.tun.fd)
            self.failed.set()
            return
        if packets:
            self.device.send_packets(packets, self.loop.time())
            self._after_io()

    def _on_udp(self) -> None:
        datagrams = self.udp.recv_batch(UDP_BATCH)
        if datagrams:
            self.device.receive_datagrams(datagrams, self.loop.time())
            self._after_io()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = float("inf")
        self.device.handle_timer(self.loop.time())
        self._after_io()

    def _after_io(self) -> None:
        """Flush what the Device produced and re-arm the timer if its next deadline moved earlier."""
        dev = self.device
        out = dev.take_datagrams()
        if out:
            self.udp.send_batch(out)
        packets = dev.take_packets()
        if packets:
            self.tun.write_batch(packets)
        events = dev.take_events()
        if events:
            self._on_events(events)
        deadline = dev.next_deadline()
        if deadline is not None and deadline < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_events(self, events: list[object]) -> None:
        for ev in events:
            if isinstance(ev, ResolveEndpoint):
                self._resolve(ev.peer_key, ev.host, ev.port)
            elif isinstance(ev, HandshakeComplete):
                log.debug("%s: handshake with peer %s", self.name, encode_key(ev.peer_key)[:8])
            elif isinstance(ev, HandshakeGaveUp):
                log.info("%s: no handshake with peer %s; giving up until there is traffic for it", self.name,
                         encode_key(ev.peer_key)[:8])
            elif isinstance(ev, PeerRoamed):
                log.info("%s: peer %s moved to %s", self.name, encode_key(ev.peer_key)[:8],
                         hostport.format(ev.new))

    # -- DNS endpoints -------------------------------------------------------------------------------------
    def _resolve(self, peer_key: bytes, host: str, port: int) -> None:
        if peer_key in self._resolving:
            return
        self._resolving.add(peer_key)
        task = self.loop.create_task(self._resolve_task(peer_key, host, port))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve_task(self, peer_key: bytes, host: str, port: int) -> None:
        try:
            while peer_key in self.device.peers:  # a removed peer needs no address
                try:
                    infos = await self.loop.run_in_executor(
                        None, lambda: socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM))
                except (socket.gaierror, UnicodeError) as exc:
                    log.warning("%s: cannot resolve endpoint %s: %s; retrying", self.name, host, exc)
                    await asyncio.sleep(RESOLVE_RETRY)
                    continue
                # the resolver's order (RFC 6724), less what our socket cannot reach
                usable = [i for i in infos if i[0] == socket.AF_INET or self.udp.family == socket.AF_INET6]
                if not usable:
                    log.warning("%s: endpoint %s has no address this host can reach; retrying", self.name, host)
                    await asyncio.sleep(RESOLVE_RETRY)
                    continue
                ip, ip_port = usable[0][4][:2]
                assert isinstance(ip, str) and isinstance(ip_port, int)  # AF_INET/AF_INET6: (host, port, ...)
                if peer_key in self.device.peers:
                    self.device.set_endpoint(peer_key, (ip, ip_port))
                    self._after_io()
                return
        finally:
            self._resolving.discard(peer_key)

    # -- configuration -------------------------------------------------------------------------------------
    def _sync_routes(self) -> None:
        """Route every peer's AllowedIPs into the tunnel (default routes excepted: that is wg-quick's policy
        routing, which wiregate leaves to the system layer)."""
        want = {a for p in self.device.peers.values() for a in p.allowed_ips
                if not a.endswith("/0")} if self.config.routes else set()
        for prefix in sorted(want - self._routes):
            try:
                self.tun.add_route(prefix)
                self._routes.add(prefix)
            except WiregateError as exc:
                log.warning("%s: %s", self.name, exc)
        for prefix in sorted(self._routes - want):
            try:
                self.tun.del_route(prefix)
            except WiregateError as exc:  # already gone (e.g. removed by hand): nothing to undo
                log.debug("%s: %s", self.name, exc)
            self._routes.discard(prefix)

    def update(self, config: WgQuickConfig) -> None:
        """Apply a new config to the running interface: peers are added, removed or changed in place (sessions of
        unchanged peers survive), the listen port is rebound, a new private key expires every session.
        Addresses and MTU are set at start only. On error (e.g. the new port is taken) nothing is changed."""
        dev = self.device
        own = public_key(config.private_key)
        if any(p.public_key == own for p in config.peers):
            raise ConfigError(f"{self.name}: a [Peer] has this interface's own public key")
        port = config.listen_port or 0
        if port not in (0, self.udp.port):
            self._rebind(port)  # first: the only step that can fail
        if config.private_key != dev.private_key:
            dev.set_private_key(config.private_key)
        configs = [peer_config(p) for p in config.peers]
        existing = set(dev.peers)
        dev.sync_peers(configs)  # unchanged peers keep their sessions (tests/wireguard/test_scale.py)
        for cfg in configs:
            if cfg.public_key in existing and cfg.endpoint is None and cfg.endpoint_host:
                peer = dev.peers[cfg.public_key]
                if peer.endpoint_host is not None:  # set from cfg.endpoint_host by sync_peers
                    self._resolve(cfg.public_key, peer.endpoint_host, peer.endpoint_port)
        self.config = config
        if config.fwmark != self.fwmark:
            self._set_fwmark(config.fwmark)
        self._sync_routes()
        self._after_io()

    def _set_fwmark(self, mark: int) -> None:
        try:
            self.udp.set_mark(mark)
        except OSError as exc:  # needs CAP_NET_ADMIN
            log.warning("%s: cannot set fwmark %d: %s", self.name, mark, exc.strerror)
            return
        self.fwmark = mark

    def _rebind(self, port: int) -> None:
        try:
            new = UdpSocket(port)
        except OSError as exc:
            raise WiregateError(f"{self.name}: cannot bind UDP port {port}: {exc.strerror}") from None
        if self.fwmark:
            new.set_mark(self.fwmark)
        self.loop.remove_reader(self.udp.fileno())
        self.udp.close()
        self._udp = new
        self.loop.add_reader(new.fileno(), self._on_udp)

    def status(self) -> dict[str, Any]:
        """Interface and per-peer state: public key, endpoint, last handshake (epoch seconds), rx/tx bytes."""
        peers = []
        for key, p in self.device.peers.items():
            peers.append({
                "public_key": encode_key(key),
                "endpoint": None if p.endpoint is None else hostport.format(p.endpoint),
                "last_handshake": p.last_handshake or None,
                "rx_bytes": p.rx_bytes,
                "tx_bytes": p.tx_bytes,
                "persistent_keepalive": p.persistent_keepalive,
                "allowed_ips": list(p.allowed_ips),
            })
        return {"name": self.name, "listen_port": self._udp.port if self._udp else None, "mtu": self.mtu,
                "addresses": list(self.config.addresses), "peers": peers}

    # -- UAPI ----------------------------------------------------------------------------------------------
    def _claim_uapi_path(self) -> None:
        self.uapi_path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        if self.uapi_path.exists():
            # a socket nobody answers on is left over from a crash; a live one means the name is taken
            probe = socket.socket(socket.AF_UNIX)
            try:
                probe.connect(str(self.uapi_path))
                raise WiregateError(f"{self.name}: {self.uapi_path} is in use by another process")
            except (ConnectionRefusedError, FileNotFoundError):
                self.uapi_path.unlink(missing_ok=True)
            finally:
                probe.close()

    async def _open_uapi(self) -> None:
        old = os.umask(0o077)
        try:
            self._uapi_server = await asyncio.start_unix_server(self._uapi_client, str(self.uapi_path))
        finally:
            os.umask(old)
        os.chmod(self.uapi_path, 0o600)

    def _device_status(self) -> uapi.DeviceStatus:
        peers = tuple(
            uapi.PeerStatus(public_key=key, preshared_key=p.preshared_key, endpoint=p.endpoint,
                            last_handshake=p.last_handshake or None, rx_bytes=p.rx_bytes, tx_bytes=p.tx_bytes,
                            persistent_keepalive=p.persistent_keepalive, allowed_ips=tuple(p.allowed_ips))
            for key, p in self.device.peers.items())
        return uapi.DeviceStatus(private_key=self.device.private_key, listen_port=self.udp.port,
                                 fwmark=self.fwmark, peers=peers)

    async def _uapi_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._uapi_clients >= MAX_UAPI_CLIENTS:
            writer.close()
            return
        self._uapi_clients += 1
        conn = uapi.UapiConnection()
        try:
            while not conn.closed:
                data = await asyncio.wait_for(reader.read(65536), 30)
                if not data:
                    break
                for req in conn.feed(data):
                    if isinstance(req, uapi.GetRequest):
                        writer.write(uapi.format_get(self._device_status()).encode())
                    elif isinstance(req, uapi.SetRequest):
                        writer.write(uapi.format_errno(self.apply_set(req)).encode())
                    else:
                        log.warning("%s: UAPI: %s", self.name, req)
                        writer.write(uapi.format_errno(req.code).encode())
                await writer.drain()
        except (asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            self._uapi_clients -= 1
            writer.close()

    def apply_set(self, req: uapi.SetRequest) -> int:
        """Apply a UAPI set request (as `wg set` sends it); returns the errno to answer (0 = done).
        The request was validated whole by the parser; the port rebind, the only step that can fail, goes first."""
        dev = self.device
        if req.listen_port is not None and req.listen_port != self.udp.port:
            try:
                self._rebind(req.listen_port)
            except WiregateError as exc:
                log.warning("%s: UAPI: %s", self.name, exc)
                return uapi.IPC_ERROR_PORT_IN_USE
        if req.private_key is not None and req.private_key != dev.private_key:
            dev.set_private_key(req.private_key)
        if req.fwmark is not None and req.fwmark != self.fwmark:
            self._set_fwmark(req.fwmark)
        if req.replace_peers:
            for key in list(dev.peers):
                dev.remove_peer(key)
        for p in req.peers:
            if p.public_key == dev.public_key:  # wireguard-go ignores a peer that is this device itself
                continue
            if p.remove:
                dev.remove_peer(p.public_key)
                continue
            psk = p.preshared_key
            if psk is not None and not any(psk):  # `wg set ... preshared-key /dev/null` sends zeros: none
                psk = None
            try:
                if p.public_key in dev.peers:
                    kw: dict[str, Any] = {}
                    if p.preshared_key is not None:
                        kw["preshared_key"] = psk
                    if p.replace_allowed_ips:
                        kw["allowed_ips"] = p.allowed_ips
                    elif p.allowed_ips:
                        kw["allowed_ips"] = (*dev.peers[p.public_key].allowed_ips, *p.allowed_ips)
                    dev.update_peer(p.public_key, endpoint=p.endpoint,
                                    persistent_keepalive=p.persistent_keepalive, **kw)
                elif not p.update_only:
                    dev.add_peer(PeerConfig(public_key=p.public_key, preshared_key=psk, allowed_ips=p.allowed_ips,
                                            endpoint=p.endpoint, persistent_keepalive=p.persistent_keepalive or 0))
            except ConfigError as exc:  # the parser checked every field, so this is unexpected; report it
                log.warning("%s: UAPI: %s", self.name, exc)
                return uapi.IPC_ERROR_INVALID
        self._sync_routes()
        self._after_io()
        return 0

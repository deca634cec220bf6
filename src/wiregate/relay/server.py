"""The Relay: owns listeners and service runtimes on one event loop; start, reload, drain, status."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
from typing import Union

from wiregate.datapath.halves import CHUNK, HAVE_SPLICE, PipePool
from wiregate.datapath.loop import loop_name
from wiregate.datapath import pump as cpump
from wiregate.datapath.poller import HAVE_EPOLL, Poller
from wiregate.errors import ConfigError, WiregateError
from wiregate.limits import fit_warning, nofile, udp_flow_caps
from wiregate.relay.config import RelayConfig, TCPService, UDPService, format_addr
from wiregate.relay.tcp import TCPListener, TCPRuntime, bind_socket
from wiregate.relay.udp import UDPListener, UDPRuntime

log = logging.getLogger("wiregate.relay")
Runtime = Union[TCPRuntime, UDPRuntime]
Listener = Union[TCPListener, UDPListener]


def _listen_key(kind: str, host: str, port: int) -> tuple:
    return (kind, ipaddress.ip_address(host), port)


class Relay:
    """Gateway relay for one event loop. With workers > 1 the runner starts one Relay per process (reuse_port)."""

    def __init__(self, config: RelayConfig, *, reuse_port: bool = False) -> None:
        if not isinstance(config, RelayConfig):
            raise ConfigError(f"relay: expected a RelayConfig, got {type(config).__name__}")
        config.validate()
        self.config = config
        self.reuse_port = reuse_port
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # set by start()
        self.io: Poller | asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # set by start()
        self.services: dict[str, Runtime] = {}
        self.retired: list[TCPRuntime] = []  # services removed by a reload, kept until their connections end
        self.listeners: dict[tuple, Listener] = {}
        self.pipes = PipePool()
        self.pump: cpump.Pump | None = None  # the C data path (set by start() where built and wanted)
        self.scratch = memoryview(bytearray(CHUNK))
        self.closing = False
        self.started = False
        self._drained: asyncio.Event | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    def _make_io(self) -> "Poller | asyncio.AbstractEventLoop":
        """Where connection sockets are watched: a private epoll set on Linux (wiregate.datapath.poller), else the
        loop."""
        if HAVE_EPOLL and os.environ.get("WIREGATE_RELAY_POLLER", "epoll") != "loop":
            return Poller(self.loop)
        return self.loop

    @property
    def event_loop(self) -> str:
        """Which event loop runs this relay: "uvloop" or "asyncio" (the stock one)."""
        return loop_name(self.loop)

    @property
    def pipe_bytes_held(self) -> int:
        """Bytes parked in splice pipes for slow destinations now, across all connections (either data path)."""
        return self.pipes.held + (self.pump.stats["held"] if self.pump is not None else 0)

    @property
    def pump_name(self) -> str:
        """Which data path moves TCP connections: "c" (wiregate.datapath._pump) or "python"."""
        return "c" if self.pump is not None else "python"

    @property
    def use_splice(self) -> bool:
        """True when new connections take the zero-copy path."""
        return self.config.splice and HAVE_SPLICE

    # -- start / reload ------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind every listener and start health checks; WiregateError naming the address when a bind fails."""
        if self.started:
            raise WiregateError("relay: already started")
        self.loop = asyncio.get_running_loop()
        self.io = self._make_io()
        if self.use_splice and isinstance(self.io, Poller) and cpump.wanted():
            self.pump = cpump.attach(self.loop)
        self._drained = asyncio.Event()
        try:
            await self._apply(self.config)
        except BaseException:
            if isinstance(self.io, Poller):  # nothing else was set up: _apply binds all or nothing
                self.io.close()
            if self.pump is not None:
                cpump.detach(self.loop, self.pump)
                self.pump = None
            raise
        self.started = True
        self._arm_sweeper()
        log.info("relay: %d service(s), %s data path, %s event loop, pid %d, %s pump", len(self.services),
                 "splice" if self.use_splice else "buffered", self.event_loop, os.getpid(), self.pump_name)

    async def reload(self, config: RelayConfig) -> None:
        """Switch to `config` without dropping open connections; on any error the running config stays."""
        if not isinstance(config, RelayConfig):
            raise ConfigError(f"reload: expected a RelayConfig, got {type(config).__name__}")
        if not self.started or self.closing:
            raise WiregateError("reload: relay is not running")
        config.validate()
        await self._apply(config, ConfigError)  # a listener we cannot bind makes the new config unusable here
        self.config = config
        self._arm_sweeper()
        log.info("relay: reloaded, %d service(s)", len(self.services))

    async def _resolve(self, config: RelayConfig) -> dict[str, list[tuple]]:
        out: dict[str, list[tuple]] = {}
        for si, svc in enumerate(config.services):
            kind = socket.SOCK_STREAM if isinstance(svc, TCPService) else socket.SOCK_DGRAM
            addrs = []
            for bi, b in enumerate(svc.backends):
                try:
                    ip = ipaddress.ip_address(b.host)
                    addrs.append((b.host, b.port, 0, 0) if ip.version == 6 else (b.host, b.port))
                    continue
                except ValueError:
                    pass
                try:
                    infos = await self.loop.getaddrinfo(b.host, b.port, type=kind)
                except OSError as exc:
                    raise ConfigError(f"services[{si}].backends[{bi}].host: {b.host!r} does not resolve "
                                      f"({exc.strerror or exc})") from None
                addrs.append(infos[0][4])  # type: ignore[arg-type]  # (host, port[, flow, scope]) for TCP/UDP
            out[svc.name] = addrs
        return out

    async def _apply(self, config: RelayConfig, bind_error: type[WiregateError] = WiregateError) -> None:
        """Resolve, bind what is new (all or nothing), then switch services and listeners over."""
        resolved = await self._resolve(config)
        wanted: dict[tuple, str] = {}
        for svc in config.services:
            kind = "tcp" if isinstance(svc, TCPService) else "udp"
            for host, port in svc.listen:
                wanted[_listen_key(kind, host, port)] = svc.name
        fresh: dict[tuple, socket.socket] = {}
        try:
            for si, svc in enumerate(config.services):
                kind = "tcp" if isinstance(svc, TCPService) else "udp"
                for host, port in svc.listen:
                    key = _listen_key(kind, host, port)
                    if key in self.listeners or key in fresh:
                        continue
                    try:
                        fresh[key] = bind_socket(socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM,
                                                 host, port, self.reuse_port)
                    except OSError as exc:
                        raise bind_error(f"services[{si}] {svc.name!r}: cannot listen on {kind} "
                                            f"{format_addr((host, port))}: {exc.strerror or exc}") from None
        except BaseException:
            for sock in fresh.values():
                sock.close()
            raise
        # -- nothing below can fail on bad input: commit
        old = self.services
        new: dict[str, Runtime] = {}
        for svc in config.services:
            rt = old.get(svc.name)
            if rt is not None and isinstance(svc, TCPService) == isinstance(rt, TCPRuntime):
                rt.stop_health()
                rt.update(svc, resolved[svc.name])  # type: ignore[arg-type]
            else:
                rt = (TCPRuntime(self, svc, resolved[svc.name]) if isinstance(svc, TCPService)
                      else UDPRuntime(self, svc, resolved[svc.name]))
            rt.listeners = []
            new[svc.name] = rt
        for name, rt in old.items():
            if new.get(name) is not rt:
                self._retire(rt)
        for key in list(self.listeners):
            if key not in wanted:
                self.listeners.pop(key).close()
        for key, sock in fresh.items():
            self.listeners[key] = (TCPListener(self, sock, key) if key[0] == "tcp" else UDPListener(self, sock, key))
        for key, lst in self.listeners.items():
            rt = new[wanted[key]]
            lst.service = rt
            rt.listeners.append(lst)  # type: ignore[arg-type]
        self.services = new
        self._fit_descriptors()
        for rt in new.values():
            if isinstance(rt, TCPRuntime):
                if rt.limits.full():
                    rt.pause_all()
                else:
                    rt.resume_all()
            else:
                for lst in rt.listeners:
                    lst.resume()
            rt.start_health()

    def _fit_descriptors(self) -> None:
        """Hold UDP flows to what the descriptor limit leaves after the TCP services' max_connections (see
        wiregate.limits): a datagram flood must not take the descriptors TCP connections need."""
        limit = nofile()[0]
        tcp = sum(rt.config.max_connections for rt in self.services.values() if isinstance(rt, TCPRuntime))
        udp = [rt for rt in self.services.values() if isinstance(rt, UDPRuntime)]
        wanted = [rt.config.max_flows for rt in udp]
        warning = fit_warning(limit, tcp, sum(wanted))
        if warning is not None:
            log.warning("relay: %s", warning)
        for rt, cap in zip(udp, udp_flow_caps(limit, tcp, wanted), strict=True):  # one cap per UDP service
            rt.set_cap(cap)
            if cap < rt.config.max_flows:
                log.warning("%s: at most %d UDP flows (max_flows %d does not fit the descriptor limit %d)",
                            rt.config.name, cap, rt.config.max_flows, limit)

    def _retire(self, rt: Runtime) -> None:
        rt.retired = True
        rt.stop_health()
        if isinstance(rt, UDPRuntime):
            rt.close_flows()
        elif rt.connections:
            self.retired.append(rt)

    # -- housekeeping --------------------------------------------------------------------------------------
    def _arm_sweeper(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        timeouts = [s.idle_timeout for s in self.config.services if isinstance(s, TCPService)]
        # a quarter of the shortest idle timeout: a connection is closed between 1x and 1.25x its timeout
        self._period = min(1.0, max(0.02, min(timeouts, default=4.0) / 4))
        self._sweeper = self.loop.call_later(self._period, self._sweep)

    def _sweep(self) -> None:
        now = self.loop.time()
        for rt in [*self.services.values(), *self.retired]:
            if not isinstance(rt, TCPRuntime):
                continue
            limit = rt.config.idle_timeout
            idle = []
            for conn in rt.connections:
                if conn.active:
                    conn.active = False
                    conn.idle_since = now
                elif now - conn.idle_since >= limit:
                    idle.append(conn)
            for conn in idle:
                log.debug("%s: %s idle for %.0fs, closing", rt.config.name, format_addr(conn.client), limit)
                conn.close()
        self.retired = [rt for rt in self.retired if rt.connections]
        self._sweeper = self.loop.call_later(self._period, self._sweep)

    def open_connections(self) -> int:
        """TCP connections open now, across current and retired services."""
        return sum(len(rt.connections) for rt in [*self.services.values(), *self.retired]
                   if isinstance(rt, TCPRuntime))

    def connection_ended(self) -> None:
        """Called by a runtime when a connection closes; wakes close() when the drain is complete."""
        if self.closing and self._drained is not None and self.open_connections() == 0:
            self._drained.set()

    # -- stop ----------------------------------------------------------------------------------------------
    async def close(self, drain_timeout: float | None = None) -> None:
        """Stop accepting, let open connections finish up to the deadline, then close what is left."""
        if self.closing or not self.started:
            self.closing = True
            return
        self.closing = True
        deadline = self.config.drain_timeout if drain_timeout is None else drain_timeout
        for lst in self.listeners.values():
            if isinstance(lst, TCPListener):
                lst.close()
        for rt in self.services.values():
            rt.stop_health()
            if isinstance(rt, UDPRuntime):  # datagrams have no end to wait for
                rt.close_flows()
        for key in [k for k, lst in self.listeners.items() if isinstance(lst, UDPListener)]:
            self.listeners[key].close()
        self.listeners.clear()
        n = self.open_connections()
        if n:
            log.info("relay: draining %d connection(s) for up to %.1fs", n, deadline)
            assert self._drained is not None
            try:
                await asyncio.wait_for(self._drained.wait(), deadline)
            except asyncio.TimeoutError:
                left = self.open_connections()
                log.info("relay: drain deadline reached, closing %d connection(s)", left)
        for rt in [*self.services.values(), *self.retired]:
            if isinstance(rt, TCPRuntime):
                for conn in list(rt.connections):
                    conn.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self.pipes.close()
        if isinstance(self.io, Poller):
            self.io.close()
        if self.pump is not None:  # (kept: its stats still answer; a closed pump takes no connection)
            cpump.detach(self.loop, self.pump)

    # -- status --------------------------------------------------------------------------------------------
    def status(self) -> dict:
        """Per service: listeners, backends with health state, open connections, totals."""
        return {
            "pid": os.getpid(),
            "data_path": "splice" if self.use_splice else "buffered",
            "pump": self.pump_name,
            "event_loop": self.event_loop if self.started else None,
            "closing": self.closing,
            "open_connections": self.open_connections() if self.started else 0,
            "services": {name: rt.status() for name, rt in self.services.items()},
            "retired": {rt.config.name: rt.status() for rt in self.retired},
        }


__all__ = ["Relay", "UDPService"]

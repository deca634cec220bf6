"""Descriptor budget and the out-of-descriptors back-off, shared by the relay and the ingress (sans-I/O).

A TCP connection costs two sockets, plus a pipe's share when splicing (HAProxy reserves a pipe per four
connections: `maxpipes = maxconn / 4`); a UDP flow costs one socket. `needed()` turns configured limits into the
descriptor count a process needs; `raise_nofile()` raises the soft RLIMIT_NOFILE to the hard one at start (the
soft default of 1024 cannot hold 10,000 connections); `udp_flow_caps()` keeps UDP flows to a share of the limit
so a datagram flood cannot take the descriptors TCP needs.

When accept() (or socket() for a UDP flow) fails with EMFILE/ENFILE anyway, `Backoff` says how long to stop
accepting (growing from 50 ms to 1 s while failures continue, as HAProxy pauses a listener at its limit instead of
retrying at once) and when to log: once per interval, with the counts since the last line.
"""

from __future__ import annotations

import errno
import resource
from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

# descriptors outside any connection: listeners, epoll sets, the event loop's self-pipe, the tunnel device and
# its UDP socket, the control and metrics sockets, log files, pooled splice pipes (ingress keeps 128 pairs)
BASE_FDS = 512
FDS_PER_TCP = 3  # two sockets, and with splice a pipe (two descriptors) per four connections: 2 + 2/4, rounded up
FDS_PER_FLOW = 1
UDP_SHARE = 4  # when everything does not fit, UDP flows may use at most 1/UDP_SHARE of the descriptors
MIN_UDP_FLOWS = 16
NO_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
BACKOFF_FIRST = 0.05
BACKOFF_MAX = 1.0
LOG_EVERY = 5.0


def needed(tcp_connections: int, udp_flows: int) -> int:
    """Descriptors a process needs to hold `tcp_connections` TCP connections and `udp_flows` UDP flows at once."""
    return BASE_FDS + FDS_PER_TCP * tcp_connections + FDS_PER_FLOW * udp_flows


def nofile() -> tuple[int, int]:
    """(soft, hard) RLIMIT_NOFILE of this process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft, hard


def raise_nofile() -> int:
    """Raise the soft descriptor limit to the hard one (allowed without privileges); returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == resource.RLIM_INFINITY:
        want = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    else:
        want = hard
    if want > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):  # e.g. over fs.nr_open: keep what we have
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def udp_flow_caps(limit: int, tcp_connections: int, flows: list[int]) -> list[int]:
    """Per UDP service/listener, the flows it may hold under a descriptor `limit`.

    When everything configured fits, each keeps its own `max_flows`. Otherwise UDP flows together get at most
    1/UDP_SHARE of what the limit leaves after BASE_FDS (shared in proportion to their max_flows, at least
    MIN_UDP_FLOWS each): TCP keeps the rest, and TCP stops accepting (back-off) rather than fail when it runs out."""
    if not flows or needed(tcp_connections, sum(flows)) <= limit:
        return list(flows)
    room = max(0, limit - BASE_FDS) // UDP_SHARE if tcp_connections else max(0, limit - BASE_FDS)
    total = sum(flows)
    return [max(MIN_UDP_FLOWS, min(f, room * f // total)) for f in flows]


def fit_warning(limit: int, tcp_connections: int, udp_flows: int) -> str | None:
    """A one-line warning when the configured limits do not fit `limit` descriptors (None when they do)."""
    need = needed(tcp_connections, udp_flows)
    if need <= limit:
        return None
    tcp_fit = max(0, limit - BASE_FDS) // FDS_PER_TCP
    udp = ", and UDP flows are held to a quarter of the limit" if udp_flows and tcp_connections else ""
    return (f"the configured limits ({tcp_connections} TCP connections, {udp_flows} UDP flows) need about {need} "
            f"file descriptors but this process may open {limit} (RLIMIT_NOFILE): about {tcp_fit} TCP connections "
            f"fit{udp}; raise LimitNOFILE / `ulimit -n` or lower max_connections and max_flows")


@dataclass(slots=True)
class Backoff:
    """Out-of-descriptors pacing for one listener: how long to pause, and whether to log (sans-I/O: fed the time).

    `failed(now)` after EMFILE/ENFILE returns the pause; `succeeded()` after a good accept resets the growth.
    `take_log(now)` returns the line to log (at most one per LOG_EVERY seconds, with counts) or None."""

    delay: float = 0.0
    failures: int = 0  # since the last log line
    pauses: int = 0  # since the last log line
    total: int = 0
    last_log: float = float("-inf")
    last_error: str = ""

    def failed(self, now: float, error: str = "") -> float:
        self.failures += 1
        self.pauses += 1
        self.total += 1
        self.last_error = error or self.last_error
        self.delay = BACKOFF_FIRST if self.delay == 0.0 else min(BACKOFF_MAX, self.delay * 2)
        return self.delay

    def succeeded(self) -> None:
        self.delay = 0.0

    def take_log(self, now: float) -> str | None:
        if self.failures == 0 or now - self.last_log < LOG_EVERY:
            return None
        first = self.last_log == float("-inf")
        line = (f"out of file descriptors ({self.last_error or 'EMFILE'}): {self.failures} failure(s), paused "
                f"{self.pauses} time(s) (now {self.delay:.2f}s){'' if first else f' in the last {LOG_EVERY:.0f}s'}"
                f", {self.total} in all; accepting again when descriptors free up")
        self.last_log = now
        self.failures = 0
        self.pauses = 0
        return line


class Limited(Protocol):
    """A gateway service or a home listener, as far as its limits go."""

    @property
    def protocol(self) -> str: ...
    @property
    def max_connections(self) -> int: ...
    @property
    def max_flows(self) -> int: ...


@runtime_checkable
class _Gateway(Protocol):
    @property
    def services(self) -> Sequence[Limited]: ...


class _Home(Protocol):
    @property
    def listeners(self) -> Sequence[Limited]: ...


def config_demand(cfg: _Gateway | _Home) -> tuple[int, int]:
    """(TCP connections, UDP flows) a wiregate gateway or home config may hold at once, from its limits."""
    if isinstance(cfg, _Gateway):  # has `services` (a runtime-checkable protocol is a hasattr test)
        parts = [(s.protocol, s.max_connections, s.max_flows) for s in cfg.services]
    else:
        parts = [(ln.protocol, ln.max_connections, ln.max_flows) for ln in cfg.listeners]
    return (sum(c for p, c, _ in parts if p == "tcp"), sum(f for p, _, f in parts if p == "udp"))


def unit_nofile(cfg: _Gateway | _Home) -> int:
    """LimitNOFILE for a node's systemd unit: what its limits need, and never below 65536 (reloads may add)."""
    return max(65536, needed(*config_demand(cfg)))

"""One ingress listener's running state, shared by the server (`server`) and the parts it hands a connection or
a datagram to (`tls`, `udp`); they read and count here and never import the server."""

from __future__ import annotations

import asyncio
import collections
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any

from wiregate.hostport import unmap
from wiregate.ingress.config import Listener
from wiregate.ingress.policy import Rules
from wiregate.limits import Backoff


@dataclass
class Runtime:
    """One listener's running state; its config (rules) can be swapped by a reload."""

    listener: Listener
    rules: Rules
    tls: dict[str, ssl.SSLContext]
    sock: socket.socket | None = None
    open: int = 0
    accepted: int = 0
    refused: collections.Counter = field(default_factory=collections.Counter)
    health_checks: int = 0
    links: set = field(default_factory=set)
    pending: set = field(default_factory=set)  # driven by callbacks, before the link: _HeadWait, _FastConnect
    tasks: set = field(default_factory=set)
    udp: object = None  # UdpRuntime for protocol "udp"
    backoff: Backoff = field(default_factory=Backoff)  # out of descriptors: accept pauses, growing, logged rarely
    fd_timer: asyncio.TimerHandle | None = None  # set while accepting is paused for lack of descriptors
    ifindex: frozenset[int] | None = None  # TCP with trusted_interface: trusted peers count only when they came in
    # on one of these interfaces
    wrong_if_logged: float = float("-inf")
    local: tuple[str, int] | None = None  # the bound address when it is not a wildcard (no getsockname per client)
    # the C pump's fast route for this listener (wiregate.datapath._pump.Fast) and its callback object, when the
    # pump is in use: connections it takes are counted there, not in `open` / `accepted`
    fast: Any = None
    fast_owner: object = None

    def connections(self) -> int:
        """Open connections, both those Python handles and those on the fast route."""
        return self.open + (self.fast.open if self.fast is not None else 0)

    def routed(self) -> int:
        """Connections routed to a target that answered, ever (both paths)."""
        return self.accepted + (self.fast.accepted if self.fast is not None else 0)

    def fast_links(self) -> list:
        return self.fast.links() if self.fast is not None else []

    def key(self) -> tuple[str, str, int]:
        return (self.listener.protocol, *self.listener.listen)

    def keys(self) -> set[tuple[str, str, int]]:
        """The configured address, and the bound one (they differ for port 0)."""
        out = {self.key()}
        if self.sock is not None:
            out.add((self.listener.protocol, *unmap(self.sock.getsockname())))
        return out

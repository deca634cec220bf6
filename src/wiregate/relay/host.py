"""What the relay's listeners, service runtimes and connections (`tcp`, `udp`) may use of the Relay that owns them.

The children depend on this interface, not on `server.Relay`: the Relay imports them, they never import it (no
import cycle), and everything they may touch or report is named here. `server.Relay` provides it.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from wiregate.datapath.halves import PipePool
from wiregate.datapath.pump import Pump
from wiregate.datapath.poller import Poller


class RelayHost(Protocol):
    """The shared state of one relay (one event loop) and the one report a child makes back to it."""

    loop: asyncio.AbstractEventLoop
    io: Poller | asyncio.AbstractEventLoop  # where connection sockets are watched
    pipes: PipePool  # splice pipes, shared by every connection
    pump: Pump | None  # the C data path, where built and wanted (then new TCP connections take it)
    scratch: memoryview  # the copy buffer of the buffered data path
    closing: bool  # set once close() started: no resuming, no new connections

    @property
    def use_splice(self) -> bool:
        """True when new connections take the zero-copy path."""
        ...

    def connection_ended(self) -> None:
        """A runtime reports that one of its connections closed (the relay finishes a drain on the last one)."""
        ...

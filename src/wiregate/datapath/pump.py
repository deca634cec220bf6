"""The C pump (`wiregate.datapath._pump`): the short-connection hot path of both parts, where it was built.

One connection on the pump costs Python a few calls (accept a batch, decide, `Pump.connect`, one callback when
it ends) instead of the socket objects, halves, Poller entries and callbacks of the Python data path
(`poller` + `halves`), which stays for everything else: where the extension did not build (it is optional in
pyproject.toml), without splice, for bytes that Python must see (TLS, HTTP rewriting), and with
`WIREGATE_DATAPATH=python`. Both follow the same rules (docs/datapath.md); the tests run the relay's and the
ingress's data-path suites on both (tests/datapath/test_pump.py for the pump alone).

The owner of a Link is told twice at most, by method: `_pump_connected(err)` when a connect that did not
complete at once ends (0: connected, the bytes are moving; an errno, or -1 for the pump's own timeout: the
backend socket is closed, the client's is the owner's again), and `_pump_closed()` once both sockets are closed.
"""

from __future__ import annotations

import asyncio
import os

from wiregate.datapath.halves import HAVE_SPLICE, PIPE_POOL_MAX, PIPE_SIZE

try:
    from wiregate.datapath._pump import Fast, Link, Pump
except ImportError:  # not built here (optional extension): the Python data path does everything
    Fast = Link = Pump = None  # type: ignore[assignment,misc]

__all__ = ["Fast", "Link", "Pump", "available", "wanted", "fast_wanted", "attach", "detach", "TIMED_OUT",
           "MAX_TRUSTED", "MAX_INTERFACES"]

TIMED_OUT = -1  # `_pump_connected(err)`: the pump's own connect deadline passed
MAX_TRUSTED = 256  # a Fast route matches at most this many trusted networks (more: Python decides each client)
MAX_INTERFACES = 64  # and checks at most this many trusted_interface indexes


def available() -> bool:
    """True when the extension is built and splice(2) exists here."""
    return Pump is not None and HAVE_SPLICE


def wanted() -> bool:
    """True when new connections should take the C pump (`WIREGATE_DATAPATH=python` turns it off)."""
    return available() and os.environ.get("WIREGATE_DATAPATH", "c") != "python"


def fast_wanted() -> bool:
    """True when listeners may route in C without Python (`Fast`); `WIREGATE_DATAPATH=c-nofast` keeps the pump
    but leaves every decision to Python (the tests run the ingress's suite that way too)."""
    return wanted() and os.environ.get("WIREGATE_DATAPATH", "c") != "c-nofast"


def attach(loop: asyncio.AbstractEventLoop, keep: int = PIPE_POOL_MAX) -> "Pump":
    """A new pump watched by `loop`; errors in owners' callbacks go to the loop's exception handler."""
    def on_error(exc: BaseException | None) -> None:
        loop.call_exception_handler({"message": "data path: error in a connection callback", "exception": exc})

    pump = Pump(pipe_size=PIPE_SIZE, keep=keep, on_error=on_error)
    loop.add_reader(pump.fileno(), pump.run)
    return pump


def detach(loop: asyncio.AbstractEventLoop, pump: "Pump") -> None:
    """Stop watching `pump` and close it (its links must all have closed)."""
    loop.remove_reader(pump.fileno())
    try:
        pump.close()
    except RuntimeError:  # links still open (a bug elsewhere): leave the descriptors to process exit
        pass

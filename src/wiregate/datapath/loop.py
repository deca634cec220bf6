"""The one place that chooses the event loop of every wiregate process that moves bytes.

`wiregate run` (gateway and home), `wiregate wg`, `python -m wiregate.relay` (each worker), `python -m
wiregate.ingress`, the demo's sample services and the benchmarks (which start those programs) all call `run()`.

The choice: uvloop when it is installed (fewer microseconds per event), else the stock asyncio loop. `WIREGATE_LOOP=
asyncio` forces the stock loop (for comparisons); the older `WIREGATE_RELAY_LOOP` / `WIREGATE_INGRESS_LOOP` are read
as the same switch.

uvloop is safe for the data path because connection sockets are not given to it: they are watched through the
shared `Poller` (`wiregate.datapath.poller`), a private epoll set. uvloop's own watchers (libuv poll handles) are
stopped, without their callback, when epoll reports EPOLLERR together with other events (a reset or an ICMP error
arriving with data, measured with uvloop 0.23): a connection waiting for its peer would then wait for its idle
timeout, a UDP flow whose service once refused a datagram would never read a reply again. The loop itself only
watches listening sockets, the Poller's descriptor, the tunnel's sockets and signals.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
_SWITCHES = ("WIREGATE_LOOP", "WIREGATE_RELAY_LOOP", "WIREGATE_INGRESS_LOOP")


def wanted(env: dict[str, str] | os._Environ[str] | None = None) -> str:
    """"asyncio" when the environment asks for the stock loop, else "uvloop" (used when installed)."""
    env = os.environ if env is None else env
    return "asyncio" if any(env.get(k) == "asyncio" for k in _SWITCHES) else "uvloop"


def loop_factory(env: dict[str, str] | os._Environ[str] | None = None) -> Callable[[], asyncio.AbstractEventLoop]:
    """What makes the event loop: uvloop's when installed and not switched off, else asyncio's."""
    if wanted(env) == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError:  # optional: the stock loop works, only slower per event
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """"uvloop" or "asyncio": which loop runs (for log lines and status)."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to its end on a new loop from `loop_factory()` (what asyncio.run does, with our choice)."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)

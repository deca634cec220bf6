"""A UDP middlebox that drops and delays datagrams both ways (what `tc netem loss 10% delay 100ms` does, for
kernels without netem). Run it where the gateway's endpoint should be:

    python -m wiregate.testing.lossy LISTEN_IP:PORT TARGET_IP:PORT --loss 0.1 --delay 0.1 [--seed 1] [--off]

Datagrams from a client go to TARGET from one upstream socket; replies go back to the client that sent last
(one client, as a home behind NAT). Counters are printed on SIGTERM.
With --off it starts passing everything untouched; SIGUSR1 turns the loss and delay on, SIGUSR2 off again (and
prints the counters since SIGUSR1, then zeroes them): the soak keeps one box in the path and faults it at will.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
from typing import Any, Callable

from wiregate import hostport


class Box:
    def __init__(self, target: tuple[str, int], loss: float, delay: float, seed: int) -> None:
        self.target, self.loss, self.delay = target, loss, delay
        self.rng = random.Random(seed)
        self.client: tuple[str, int] | None = None
        self.front: asyncio.DatagramTransport | None = None
        self.back: asyncio.DatagramTransport | None = None
        self.counts = {"in": 0, "out": 0, "dropped": 0}

        self.on = True

    def _later(self, send: Callable[[bytes, Any], None], data: bytes, addr: Any) -> None:
        if not self.on:
            send(data, addr)
            return
        if self.rng.random() < self.loss:
            self.counts["dropped"] += 1
            return
        asyncio.get_running_loop().call_later(self.delay, send, data, addr)

    def from_client(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.back is None:  # the upstream socket is not open yet: as if lost
            return
        self.client = addr
        self.counts["in"] += 1
        self._later(self.back.sendto, data, self.target)

    def from_target(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.client is not None and self.front is not None:
            self.counts["out"] += 1
            self._later(self.front.sendto, data, self.client)


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, handler: Callable[[bytes, tuple[str, int]], None]) -> None:
        self.handler = handler

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.handler(data, addr)

    def error_received(self, exc: Exception) -> None:
        pass


async def main(args: argparse.Namespace) -> None:
    box = Box(hostport.parse(args.target, what="target"), args.loss, args.delay, args.seed)
    loop = asyncio.get_running_loop()
    listen = hostport.parse(args.listen, names=False, what="listen")
    box.front, _ = await loop.create_datagram_endpoint(lambda: _Proto(box.from_client), local_addr=listen)
    box.back, _ = await loop.create_datagram_endpoint(lambda: _Proto(box.from_target), family=2)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    box.on = not args.off

    def turn_on() -> None:
        box.counts = {"in": 0, "out": 0, "dropped": 0}
        box.on = True

    def turn_off() -> None:
        box.on = False
        print(box.counts, flush=True)
    loop.add_signal_handler(signal.SIGUSR1, turn_on)
    loop.add_signal_handler(signal.SIGUSR2, turn_off)
    print("ready", flush=True)
    await stop.wait()
    print(box.counts, flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("listen")
    p.add_argument("target")
    p.add_argument("--loss", type=float, default=0.0)
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--off", action="store_true", help="start passing everything untouched (SIGUSR1: on)")
    asyncio.run(main(p.parse_args()))

"""`wiregate bench PART`: measure wiregate beside the real peer it replaces, in the same run."""

from __future__ import annotations

import argparse
import importlib

HELP = ("benchmark a part against its real peer (relay: HAProxy, ingress: nginx, wireguard: wireguard-go, "
        "system: the seed stack, acme: pebble + Caddy), soak the whole system under load and faults (soak), or time "
        "a gateway fail-over (failover)")
# part -> module whose run(args) returns the dict written under the part's section of the results file
PARTS: dict[str, str] = {
    "relay": "wiregate.bench.relay",
    "ingress": "wiregate.bench.ingress",
    "wireguard": "wiregate.bench.wireguard",
    "system": "wiregate.bench.system",
    "soak": "wiregate.bench.soak",
    "scale": "wiregate.bench.scale",  # 1,000 sites on the built-in WireGuard, sans-I/O (issue 15)
    "flood": "wiregate.bench.flood",  # HTTP through a built-in tunnel under a valid-MAC1 initiation flood
    "acme": "wiregate.bench.acme",
    "failover": "wiregate.bench.failover",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("part", choices=[*PARTS, "all"], help="which part to measure")
    p.add_argument("--quick", action="store_true", help="short runs (a smoke check, not figures to quote)")
    p.add_argument("--repeat", type=int, default=3, help="runs per measurement; medians are reported")
    p.add_argument("--minutes", type=float, default=5.0, help="soak: how long the load and faults run (default 5)")
    p.add_argument("--flood-rate", type=float, default=20_000,
                   help="flood: valid-MAC1 initiations per second (default 20000)")
    p.add_argument("--sources", type=int, default=64, help="flood: source addresses the flood comes from")
    p.add_argument("--out", default=None, help="directory for <UTC date>.json (default bench/results)")


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def run(args: argparse.Namespace) -> int:
    import signal
    from pathlib import Path

    from wiregate.bench.results import read_section, write_section
    from wiregate.errors import WiregateError

    # SIGTERM (a timeout, a CI job cancelled) unwinds like Ctrl-C: every part's `finally` stops its processes and
    # removes its namespaces instead of leaving them running
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    parts = list(PARTS) if args.part == "all" else [args.part]
    for part in parts:
        try:
            mod = importlib.import_module(PARTS[part])
        except ModuleNotFoundError as exc:
            raise WiregateError(f"bench {part}: not available yet ({exc.name})") from None
        data = mod.run(args)
        root = Path(args.out) if args.out else None
        section = getattr(mod, "SECTION", part)
        if section != part:  # a part adding keys to a section others write too (failover -> scale): keep theirs
            data = {**read_section(section, root), **data}
            data.pop("measured_at", None)
        path = write_section(section, data, root)
        print(f"bench {part}: results written to {path}")
    return 0

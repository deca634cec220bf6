"""`wiregate bench failover`: how long new connections take to move when one of a home's two gateways dies.

The scene of tests/system/test_failover.py (wiregate.testing.multigw.FailoverLab): client, gateways A and B, one
home joined to both. A client loop (4 workers, each request holding 0.3 s so some are in flight; the client tries
A, then B, as curl and browsers do with two A records) runs while gateway A is SIGKILLed and, once requests flow
through B, started again. Repeated `--repeat` times (1 with --quick); medians are reported. The figures go under
the `scale` section of the results file, next to the keys other parts write there (see cli/bench.py: SECTION).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from wiregate.bench.results import median
from wiregate.errors import WiregateError

SECTION = "scale"  # shared with the 1,000-site measurements: cli/bench.py merges the keys


def one_run(workdir: Path) -> dict[str, Any]:
    from wiregate.testing.multigw import FailoverLab
    from wiregate.testing.netns import Lab

    with Lab("fo") as lab:
        fl = FailoverLab(lab, workdir)
        fl.start()
        res = fl.kill_and_return()
    return {k: v for k, v in res.items() if k not in ("records", "t_kill", "t_ready")}


def run(args) -> dict[str, Any]:
    """The failover keys of the `scale` section."""
    from wiregate.testing.netns import can_use_netns

    reason = can_use_netns()
    if reason:
        raise WiregateError(f"bench failover: {reason}")
    runs = []
    for i in range(1 if getattr(args, "quick", False) else max(1, args.repeat)):
        with tempfile.TemporaryDirectory(prefix="wiregate-failover-") as tmp:
            runs.append(one_run(Path(tmp)))
        print(f"bench failover: run {i + 1}: {json.dumps(runs[-1])}")

    def med(key: str) -> float | None:
        xs = [r[key] for r in runs if r.get(key) is not None]
        return round(median(xs), 3) if xs else None

    before, after = med("request_s_median_before_kill"), med("request_s_max_after_kill")
    return {"failover": {
        "what": "home joined to gateways A and B; client tries A then B; gateway A SIGKILLed, then started again",
        "runs": len(runs),
        # the fail-over time of a new connection: what a request started after the kill takes beyond one before
        # it (its refused connect to A, then B); each request holds 0.3 s itself
        "new_connection_extra_s": round(after - before, 3) if after is not None and before is not None else None,
        "request_s_before_kill": before,
        "request_s_max_after_kill": after,
        # kill -> end of the first request started after it (includes the in-flight failures' retries first)
        "first_success_after_kill_s": med("failover_s"),
        "gateway_back_s": med("a_back_s"),  # A ready again -> first request through A answered
        "requests": sum(r["requests"] for r in runs),
        "failed": sum(r["failed"] for r in runs),
        "failed_in_flight_on_a": sum(r["failed_in_flight_on_a"] for r in runs),
        "failed_other": sum(r["failed_other"] for r in runs),
        "retries_ok": f"{sum(r['retries_ok'] for r in runs)}/{sum(r['retries'] for r in runs)}",
        "held_connections_through_b_lost": sum(r["holder_errors"] for r in runs),
        "per_run": runs,
    }}

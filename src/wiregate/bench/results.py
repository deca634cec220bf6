"""bench/results/<UTC date>.json: one file per day; each part writes its own top-level section."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
from pathlib import Path
from typing import Any


def results_path(root: Path | None = None) -> Path:
    day = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
    base = root or Path(os.environ.get("WIREGATE_BENCH_DIR", Path.cwd() / "bench" / "results"))
    return base / f"{day}.json"


def read_section(section: str, root: Path | None = None) -> dict[str, Any]:
    """Today's `section` as written so far ({} when none), for a part that adds keys to a shared section."""
    path = results_path(root)
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    data = doc.get(section) if isinstance(doc, dict) else None
    return dict(data) if isinstance(data, dict) else {}


def write_section(section: str, data: dict[str, Any], root: Path | None = None) -> Path:
    """Merge `data` under `section` into today's results file (other sections are kept)."""
    path = results_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {}
    if path.exists():
        try:
            doc = json.loads(path.read_text())
        except json.JSONDecodeError:
            doc = {}
    doc.setdefault("machine", {}).update(
        {"cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version()}
    )
    data = dict(data, measured_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    doc[section] = data
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def ratio(ours: float, theirs: float) -> float:
    return round(ours / theirs, 3) if theirs else float("nan")

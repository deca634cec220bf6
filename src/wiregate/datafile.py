"""Reading the standalone part files (`wiregate ingress FILE`, `python -m wiregate.relay --config FILE`)."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from wiregate.errors import ConfigError

T = TypeVar("T")


def load_file(path: str | Path, build: Callable[[Any], T]) -> T:
    """Parse a .toml file (any other name is JSON) and `build` it; every ConfigError is prefixed with the file."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read ({exc.strerror})") from None
    toml = p.suffix == ".toml"
    try:
        data = tomllib.loads(text) if toml else json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{p}: not valid {'TOML' if toml else 'JSON'}: {exc}") from None
    try:
        return build(data)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None

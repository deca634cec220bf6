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
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text (byte {exc.start})") from None
    toml = p.suffix == ".toml"
    try:
        data = tomllib.loads(text) if toml else json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{p}: not valid {'TOML' if toml else 'JSON'}: {exc}") from None
    except RecursionError:  # the parsers recurse per nesting level: `a = [[[[...` a few thousand deep
        raise ConfigError(f"{p}: not valid {'TOML' if toml else 'JSON'}: nested too deeply") from None
    try:
        return build(data)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None

"""The one base class for errors wiregate reports to users (the CLI prints them without a traceback)."""

import json


class WiregateError(Exception):
    """An error with a message fit for a user: it says what was wrong and where."""


class ConfigError(WiregateError):
    """A configuration file or option is invalid; the message names the key path and the value at fault."""


def show(value: object) -> str:
    """A value as it appears in an error message `path: value: why` (JSON-like: strings in double quotes)."""
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return repr(value)

"""wiregate's configuration: the TOML schema, loading and checking, pairing tokens, exports of the classic stack.

`schema` is the one table of keys and defaults (docs/config.md is generated from it); `model` builds frozen
dataclasses and checks what spans several keys; `token` encodes join tokens; `pairing` writes files for
init/site add/join; `export` renders HAProxy, wg-quick, nginx, Traefik and systemd equivalents.
"""

from wiregate.config.model import Config, GatewayConfig, HomeConfig, load, loads

__all__ = ["Config", "GatewayConfig", "HomeConfig", "load", "loads"]

"""The ACME end-to-end harness (wiregate.testing.acme.AcmeSystem): the whole system (client/internet, VPS and home
namespaces, both `wiregate run` processes) plus pebble and its DNS in the internet namespace, every name
resolving to the gateway's public address."""

from __future__ import annotations

from pathlib import Path

from wiregate.testing.acme import HOME_LISTENERS as HOME
from wiregate.testing.acme import AcmeSystem
from wiregate.testing.peers import need

__all__ = ["HOME", "AcmeLab"]


def AcmeLab(lab, tmp: Path, **kw) -> AcmeSystem:
    """An AcmeSystem, after skipping (with the reason) when pebble or curl is missing."""
    need("pebble", "pebble-challtestsrv", "curl")
    return AcmeSystem(lab, tmp, **kw)

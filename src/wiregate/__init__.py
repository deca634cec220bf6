"""wiregate: expose home services through a VPS over WireGuard with the real client address preserved."""

__version__ = "0.1.0"

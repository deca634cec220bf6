"""WireGuardInterface before start(): a clear error naming the interface, not an AttributeError on None."""

from __future__ import annotations

import base64

import pytest

from wiregate.wireguard.config import parse
from wiregate.wireguard.interface import WireGuardInterface


def test_an_interface_not_started_says_so():
    key = base64.b64encode(bytes(range(1, 33))).decode()
    cfg = parse(f"[Interface]\nPrivateKey = {key}\nListenPort = 51820\n")
    iface = WireGuardInterface("wgt-unstarted", cfg, uapi_socket=False)
    with pytest.raises(RuntimeError, match="^wgt-unstarted: the interface is not started$"):
        iface.status()
    with pytest.raises(RuntimeError, match="^wgt-unstarted: the interface is not started$"):
        iface.update(cfg)
    with pytest.raises(RuntimeError, match="^wgt-unstarted: the interface has no UDP socket"):
        iface.udp.close()

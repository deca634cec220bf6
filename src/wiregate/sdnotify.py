"""systemd's sd_notify: one datagram to $NOTIFY_SOCKET ("READY=1", "RELOADING=1", "STOPPING=1", "STATUS=...").

The protocol is a unix datagram of newline-separated assignments; an address starting with '@' is in the abstract
namespace. Without $NOTIFY_SOCKET (not started by systemd) every call does nothing.
"""

from __future__ import annotations

import os
import socket


def notify(*assignments: str) -> bool:
    """Send the assignments to systemd; True when sent, False when not under systemd or the send failed."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr or not assignments:
        return False
    target = "\0" + addr[1:] if addr.startswith("@") else addr
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto("\n".join(assignments).encode(), target)
        return True
    except OSError:
        return False

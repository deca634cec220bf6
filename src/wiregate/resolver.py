"""Name lookups for the gateway endpoint, with an /etc/hosts-style override for tests and odd networks.

When $WIREGATE_HOSTS names a file in hosts(5) format ("ADDRESS NAME [NAME...]", '#' comments), a name listed
there resolves to that address, read afresh at every lookup (so editing the file moves the endpoint, as a DNS
change would). Other names go to the system resolver (getaddrinfo, run in a thread).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket

HOSTS_ENV = "WIREGATE_HOSTS"
MAX_HOSTS_BYTES = 1 << 20


def hosts_override(name: str, path: str | None = None) -> str | None:
    """The address the override file gives `name`, or None (no file, unreadable, or name not listed)."""
    path = path if path is not None else os.environ.get(HOSTS_ENV)
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_HOSTS_BYTES)
    except OSError:
        return None
    want = name.lower().rstrip(".")
    for line in data.decode("utf-8", "replace").splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        try:
            addr = str(ipaddress.ip_address(fields[0]))
        except ValueError:
            continue
        if want in (n.lower().rstrip(".") for n in fields[1:]):
            return addr
    return None


def resolve_sync(host: str, port: int, family: int = socket.AF_UNSPEC) -> tuple[str, int]:
    """(address, port) for host: an IP as is, then the override file, then getaddrinfo (IPv4 first)."""
    try:
        return str(ipaddress.ip_address(host)), port
    except ValueError:
        pass
    addr = hosts_override(host)
    if addr is not None:
        return addr, port
    infos = socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM)
    infos.sort(key=lambda i: 0 if i[0] == socket.AF_INET else 1)
    ip = infos[0][4][0]
    assert isinstance(ip, str)  # an AF_INET/AF_INET6 address: (host, port, ...)
    return ip, port


async def resolve(host: str, port: int, family: int = socket.AF_UNSPEC) -> tuple[str, int]:
    """resolve_sync in a worker thread (getaddrinfo blocks)."""
    return await asyncio.get_running_loop().run_in_executor(None, resolve_sync, host, port, family)

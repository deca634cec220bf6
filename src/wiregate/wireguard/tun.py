"""A Linux TUN device: open /dev/net/tun, name it, set MTU, addresses and routes, bring it up.

Packets are bare IP packets (IFF_NO_PI). The fd is non-blocking: `read_batch` drains what the kernel has queued
(several reads per wake-up of the event loop), `write` hands one decrypted packet to the kernel.
Link settings go through `ip` (iproute2), which every host that can run WireGuard has.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import struct
import subprocess

from wiregate.errors import WiregateError
from wiregate.wireguard.offload import VNET_HDR_LEN, coalesce, strip_header

TUN_PATH = "/dev/net/tun"
# linux/if_tun.h
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_MULTI_QUEUE = 0x0100
IFF_VNET_HDR = 0x4000
TUNSETOFFLOAD = 0x400454D0
IFNAMSIZ = 16
# the largest IP packet a TUN read can return (64 KiB) plus slack; reads are bounded by it
MAX_PACKET = 65536


class TunError(WiregateError):
    """The TUN device could not be created or configured."""


def _ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        raise TunError(f"ip {' '.join(args)}: {r.stderr.strip() or 'failed'}")


class Tun:
    """An open TUN device. Close it to remove the interface (it is not persistent).

    With `vnet_hdr` (the default) frames carry virtio-net headers: reads are unchanged for the caller, and
    `write_batch` joins TCP segments into large GSO packets (see offload.py)."""

    def __init__(self, name: str, *, multi_queue: bool = False, vnet_hdr: bool = True) -> None:
        if not name or len(name.encode()) >= IFNAMSIZ or "/" in name or " " in name:
            raise TunError(f"invalid interface name {name!r} (1..15 characters, no '/' or spaces)")
        try:
            fd = os.open(TUN_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise TunError(f"{TUN_PATH}: {exc.strerror} (needs root or CAP_NET_ADMIN)") from None
        flags = IFF_TUN | IFF_NO_PI | (IFF_MULTI_QUEUE if multi_queue else 0) | (IFF_VNET_HDR if vnet_hdr else 0)
        ifr = struct.pack("16sH22x", name.encode(), flags)
        try:
            ifr = fcntl.ioctl(fd, TUNSETIFF, ifr)
        except OSError as exc:
            os.close(fd)
            raise TunError(f"TUNSETIFF {name}: {exc.strerror}") from None
        self.fd = fd
        self.name = ifr[:IFNAMSIZ].rstrip(b"\0").decode()
        self.vnet_hdr = vnet_hdr
        if vnet_hdr:
            try:
                # no transmit offloads: the kernel hands us complete, checksummed packets
                fcntl.ioctl(fd, TUNSETOFFLOAD, 0)
            except OSError as exc:
                os.close(fd)
                raise TunError(f"TUNSETOFFLOAD {name}: {exc.strerror}") from None

    def fileno(self) -> int:
        return self.fd

    def read_batch(self, limit: int = 64) -> list[bytes]:
        """Up to `limit` queued packets (one read each; TUN has no multi-packet read)."""
        out: list[bytes] = []
        read, fd = os.read, self.fd
        try:
            if self.vnet_hdr:
                for _ in range(limit):
                    f = read(fd, MAX_PACKET + VNET_HDR_LEN)
                    if f[0] == 0 and f[1] == 0:  # no checksum to finish, not GSO: the common case
                        out.append(f[VNET_HDR_LEN:])
                    elif (p := strip_header(f)) is not None:
                        out.append(p)
            else:
                for _ in range(limit):
                    out.append(read(fd, MAX_PACKET))
        except BlockingIOError:
            pass
        return out

    def write_batch(self, packets: list[bytes]) -> None:
        """Hand IP packets to the kernel in order (TCP runs joined when vnet_hdr); a full queue drops one."""
        write, fd = os.write, self.fd
        for frame in (coalesce(packets) if self.vnet_hdr else packets):
            try:
                write(fd, frame)
            except OSError:
                # EINVAL for a malformed packet, ENOBUFS/EAGAIN under pressure: drop this one only
                pass

    def write(self, packet: bytes) -> None:
        """Hand one IP packet to the kernel."""
        self.write_batch([packet])

    def set_mtu(self, mtu: int) -> None:
        _ip("link", "set", "dev", self.name, "mtu", str(mtu))

    def add_address(self, cidr: str) -> None:
        """Add an interface address such as 198.51.100.1/24 (the kernel adds the on-link route)."""
        iface = ipaddress.ip_interface(cidr)
        extra = ["nodad"] if iface.version == 6 else []
        _ip("address", "add", str(iface), "dev", self.name, *extra)

    def add_route(self, prefix: str) -> None:
        """Route `prefix` into the tunnel (replacing an existing route to the same prefix)."""
        net = ipaddress.ip_network(prefix, strict=False)
        _ip("-6" if net.version == 6 else "-4", "route", "replace", str(net), "dev", self.name)

    def up(self) -> None:
        _ip("link", "set", "dev", self.name, "up")

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

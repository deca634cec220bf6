"""The I/O adapters on their own, in a namespace: batched UDP (GSO/GRO) and the TUN device."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = [pytest.mark.netns, pytest.mark.timeout(60)]

_UDP_RX = r"""
import select, sys, time
from wiregate.wireguard.udp import UdpSocket
s = UdpSocket(int(sys.argv[1]))
print("ready", s.gro, flush=True)
got, end = [], time.monotonic() + 5
while time.monotonic() < end and len(got) < int(sys.argv[2]):
    select.select([s], [], [], 0.5)
    got += s.recv_batch()
for data, addr in got:
    print(len(data), data[:1].hex(), addr[0])
"""

_UDP_TX = r"""
import sys
from wiregate.wireguard.udp import UdpSocket
s = UdpSocket(0)
dst = (sys.argv[1], int(sys.argv[2]))
# 100 full-size datagrams, a short one that ends the GSO run, then 20 more full ones, one at a time count
items = [(bytes([i]) * 1452, dst) for i in range(100)] + [(b"\xee" * 100, dst)]
items += [(bytes([200 + i]) * 1452, dst) for i in range(20)]
s.send_batch(items)
print(s.gso)
"""


@pytest.mark.parametrize("dst", ["192.0.2.2", "fd00:0:2::2"])
def test_batched_udp_keeps_every_datagram_its_size_and_order(lab, dst):
    a, b = lab.netns("a"), lab.netns("b")
    va, vb = lab.link(a, "192.0.2.1/24", b, "192.0.2.2/24")
    a.run(["ip", "-6", "addr", "add", "fd00:0:2::1/64", "dev", va, "nodad"])
    b.run(["ip", "-6", "addr", "add", "fd00:0:2::2/64", "dev", vb, "nodad"])
    rx = lab.spawn(b, [sys.executable, "-c", _UDP_RX, "5555", "121"], stdout=subprocess.PIPE, text=True)
    assert rx.stdout.readline().split() == ["ready", "True"]
    tx = a.run([sys.executable, "-c", _UDP_TX, dst, "5555"])
    assert tx.stdout.strip() == "True"  # GSO stayed on: the kernel took the batched sends
    out, _ = rx.communicate(timeout=10)
    rows = [line.split() for line in out.splitlines()]
    expect = [[str(1452), f"{i:02x}"] for i in range(100)] + [["100", "ee"]]
    expect += [[str(1452), f"{200 + i:02x}"] for i in range(20)]
    assert [r[:2] for r in rows] == expect
    src = "192.0.2.1" if ":" not in dst else "fd00:0:2::1"
    assert {r[2] for r in rows} == {src}  # IPv4 peers come back as plain dotted quads, not ::ffff:


_TUN = r"""
import select, sys
from wiregate.wireguard.tun import Tun
t = Tun(sys.argv[1])
t.set_mtu(1380)
t.add_address("198.51.100.1/24")
t.up()
t.add_route("203.0.113.0/24")
print("up", t.name, flush=True)
import time
pkt, end = b"", time.monotonic() + 10
while not (pkt[:1] == b"\x45" and pkt[9] == 17):  # skip what else the kernel sends (IPv6 MLD and such)
    if time.monotonic() > end:
        sys.exit("no UDP packet came")
    select.select([t], [], [], 5)
    pkt = next(iter(p for p in t.read_batch() if p[:1] == b"\x45" and p[9] == 17), b"")
# answer the UDP datagram: swap addresses and ports, valid IPv4 header checksum, UDP checksum 0 (allowed in v4)
import struct
ihl = (pkt[0] & 15) * 4
payload = pkt[ihl + 8:]
udp = struct.pack("!HHHH", *struct.unpack("!HH", pkt[ihl + 2:ihl + 4] + pkt[ihl:ihl + 2]), 8 + len(payload), 0)
hdr = bytearray(pkt[:20]); hdr[12:16], hdr[16:20] = pkt[16:20], pkt[12:16]
struct.pack_into("!HH", hdr, 2, 20 + 8 + len(payload), 0); struct.pack_into("!H", hdr, 10, 0)
s = sum(struct.unpack("!10H", bytes(hdr)))
while s > 0xFFFF: s = (s & 0xFFFF) + (s >> 16)
struct.pack_into("!H", hdr, 10, ~s & 0xFFFF)
t.write_batch([bytes(hdr) + udp + payload.upper()])
print("answered", len(pkt), flush=True)
sys.stdin.readline()
"""

_UDP_ASK = r"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("198.51.100.1", 4000))
s.settimeout(5)
s.sendto(b"hello tun", ("203.0.113.9", 4001))
print(s.recvfrom(100))
"""


def test_tun_device_gets_name_mtu_address_route_and_passes_packets_both_ways(lab):
    ns = lab.netns("t")
    name = f"wgtun{lab.prefix[-6:]}"[:15]
    proc = lab.spawn(ns, [sys.executable, "-c", _TUN, name], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                     text=True)
    assert proc.stdout.readline().split() == ["up", name]
    link = ns.run(["ip", "-o", "link", "show", name]).stdout
    assert "mtu 1380" in link and ",UP" in link
    assert "198.51.100.1/24" in ns.run(["ip", "-o", "addr", "show", name]).stdout
    assert f"203.0.113.0/24 dev {name}" in ns.run(["ip", "route"]).stdout
    r = ns.run([sys.executable, "-c", _UDP_ASK], check=False, timeout=15)
    assert r.stdout.strip() == "(b'HELLO TUN', ('203.0.113.9', 4001))", r.stderr
    assert proc.stdout.readline().split() == ["answered", str(20 + 8 + 9)]
    proc.stdin.write("\n")
    proc.stdin.flush()
    assert proc.wait(10) == 0
    # closing the fd removed the interface
    assert ns.run(["ip", "link", "show", name], check=False).returncode != 0


def test_invalid_interface_names_are_refused_before_anything_is_opened():
    from wiregate.wireguard.tun import Tun, TunError
    for bad in ("", "a" * 16, "has space", "a/b"):
        with pytest.raises(TunError, match="invalid interface name"):
            Tun(bad)

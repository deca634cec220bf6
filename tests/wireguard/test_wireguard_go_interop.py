"""The sans-I/O core against the real wireguard-go, with nothing of wiregate's I/O half involved: a small UDP loop
inside a network namespace drives a Device on loopback; wireguard-go's interface in the same namespace answers
ICMP echo through the tunnel. Proves the handshake, transport and (under load) the cookie exchange interoperate."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wiregate.testing.peers import free_port, need
from wiregate.wireguard.keys import encode_key, generate_private_key, public_key

pytestmark = [pytest.mark.netns, pytest.mark.peer, pytest.mark.timeout(60)]

# Runs inside the namespace: argv = our key hex, wireguard-go's public key hex, our port, its port, mode.
_DRIVER = r"""
import json, os, select, socket, struct, sys, time
from wiregate.wireguard.device import Device, PeerConfig
from wiregate.wireguard.events import HandshakeComplete

ours, theirs, port, wg_port, mode = bytes.fromhex(sys.argv[1]), bytes.fromhex(sys.argv[2]), int(sys.argv[3]), \
    int(sys.argv[4]), sys.argv[5]

def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack(f"!{len(b)//2}H", b))
    while s >> 16: s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF

def echo_request(seq):
    icmp = struct.pack("!BBHHH", 8, 0, 0, 0x77, seq) + b"wiregate-core-%d" % seq
    icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), seq, 0, 64, 1, 0,
                      socket.inet_aton("10.77.0.2"), socket.inet_aton("10.77.0.1"))
    hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
    return hdr + icmp

sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", port))
dev = Device(ours)
dev.add_peer(PeerConfig(theirs, allowed_ips=("10.77.0.1/32",), endpoint=("127.0.0.1", wg_port)))
if mode == "cookie":
    dev.under_load = True
result = {"events": [], "cookies_sent": 0, "replies": []}
deadline = time.monotonic() + 20
seq = 0
next_ping = time.monotonic() if mode == "initiate" else None
while time.monotonic() < deadline and len(result["replies"]) < 3:
    now = time.monotonic()
    if next_ping is not None and now >= next_ping:
        seq += 1
        dev.send_packet(echo_request(seq), now)
        next_ping = now + 0.3
    dl = dev.next_deadline()
    wait = 0.05 if dl is None else max(0.0, min(0.05, dl - now))
    if select.select([sock], [], [], wait)[0]:
        data, addr = sock.recvfrom(2048)
        dev.receive_datagram(data, addr[:2], time.monotonic())
    now = time.monotonic()
    dl = dev.next_deadline()
    if dl is not None and dl <= now:
        dev.handle_timer(now)
    for dg, addr in dev.take_datagrams():
        if dg[0] == 3:
            result["cookies_sent"] += 1
        sock.sendto(dg, addr)
    for pkt in dev.take_packets():
        if pkt[9] == 1 and pkt[20] == 0:  # ICMP echo reply
            result["replies"].append(pkt[28:].decode(errors="replace"))
    for ev in dev.take_events():
        result["events"].append(type(ev).__name__)
        if isinstance(ev, HandshakeComplete) and next_ping is None:
            next_ping = time.monotonic()
result["drops"] = dict(dev.drops)
print(json.dumps(result))
"""


def _src_dir() -> str:
    import wiregate
    return str(Path(wiregate.__file__).resolve().parent.parent)


@pytest.mark.parametrize("mode", ["initiate", "cookie"])
def test_core_and_wireguard_go_exchange_icmp_through_the_tunnel(lab, tmp_path, mode: str) -> None:
    """initiate: our Device starts the handshake. cookie: wireguard-go starts it while our Device is under load,
    so it must take our cookie reply and come back with a valid MAC2 before it gets a response."""
    need("wireguard-go", "wg")
    ns = lab.netns("g")
    name = f"wgc{os.getpid() % 100000}{mode[0]}"
    ours, theirs = generate_private_key(), generate_private_key()
    key_file = tmp_path / "wg.key"
    key_file.write_text(encode_key(theirs) + "\n")
    key_file.chmod(0o600)
    port, wg_port = free_port(kind=socket.SOCK_DGRAM), free_port(kind=socket.SOCK_DGRAM)
    sock = Path(f"/var/run/wireguard/{name}.sock")
    lab.spawn(ns, ["env", "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1", "wireguard-go", "-f", name])
    for _ in range(100):
        if sock.exists():
            break
        time.sleep(0.05)
    assert sock.exists(), "wireguard-go did not open its UAPI socket"
    peer_args = ["peer", encode_key(public_key(ours)), "allowed-ips", "10.77.0.2/32",
                 "endpoint", f"127.0.0.1:{port}"]
    if mode == "cookie":
        peer_args += ["persistent-keepalive", "1"]  # makes wireguard-go initiate at once
    ns.run(["ip", "addr", "add", "10.77.0.1/24", "dev", name])
    ns.run(["ip", "link", "set", name, "up"])
    driver = subprocess.Popen(ns.cmd([sys.executable, "-c", _DRIVER, ours.hex(), public_key(theirs).hex(),
                                      str(port), str(wg_port), mode]),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=_src_dir()))
    lab.procs.append(driver)
    time.sleep(0.2)  # the driver's socket is bound before wireguard-go's first initiation goes out
    ns.run(["wg", "set", name, "private-key", str(key_file), "listen-port", str(wg_port), *peer_args])
    out, err = driver.communicate(timeout=40)
    assert driver.returncode == 0, err[-2000:]
    result = json.loads(out)
    assert len(result["replies"]) == 3, result  # echo replies came back through wireguard-go and our Device
    assert all(r.startswith("wiregate-core-") for r in result["replies"]), result
    assert "HandshakeComplete" in result["events"], result
    show = ns.run(["wg", "show", name, "latest-handshakes"]).stdout.split()
    assert show[0] == encode_key(public_key(ours)) and int(show[1]) > 0  # wireguard-go agrees
    if mode == "cookie":
        assert result["cookies_sent"] >= 1 and result["drops"].get("cookie_sent", 0) >= 1, result

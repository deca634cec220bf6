"""The built-in WireGuard against itself and against Debian's wireguard-go, in network namespaces.

Each test builds two namespaces joined by a veth pair (192.0.2.1/24 <-> 192.0.2.2/24, fd00:0:2::/64), runs
`wiregate wg up` and/or wireguard-go on each side, and checks real traffic through the tunnel.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import time

import pytest

from tests.conftest import need
from wiregate.testing.peers import free_port
from wiregate.testing.wgnet import WgNet, icmp_ping, keypair, tcp_echo_check, tcp_echo_server

pytest.importorskip("wiregate.wireguard.device", reason="the WireGuard core (wg-core) is not merged yet")
pytestmark = [pytest.mark.netns, pytest.mark.peer, pytest.mark.timeout(60)]
MB = 1 << 20


def b64(k: bytes) -> str:
    return base64.b64encode(k).decode()


def dump(side) -> list[list[str]]:
    """`wg show NAME dump`: first row the interface, then one row per peer."""
    return [ln.split("\t") for ln in side.wg("show", side.name, "dump").stdout.splitlines()]


def pair(lab, kind_a: str, kind_b: str, **kw):
    need("wg", "wireguard-go") if "wireguard-go" in (kind_a, kind_b) else need("wg")
    net = WgNet(lab)
    a, b = net.side("a", kind_a), net.side("b", kind_b)
    net.connect(a, b, **kw)
    net.start()
    return net, a, b


@pytest.mark.parametrize("kind_a, kind_b", [
    ("wiregate", "wiregate"), ("wiregate", "wireguard-go"), ("wireguard-go", "wiregate"),
])
def test_ping_and_byte_exact_tcp_both_ways(lab, kind_a, kind_b):
    """a initiates (first packet), then TCP both ways: each side runs a server the other echoes 1 MB through."""
    net, a, b = pair(lab, kind_a, kind_b)
    assert icmp_ping(a.ns, b.tunnel_ip) is not None, "no IPv4 ping a -> b"
    assert icmp_ping(b.ns, a.tunnel_ip6) is not None, "no IPv6 ping b -> a"
    port = free_port()
    tcp_echo_server(lab, b.ns, b.tunnel_ip, port)
    tcp_echo_server(lab, a.ns, a.tunnel_ip6, port)
    assert tcp_echo_check(a.ns, b.tunnel_ip, port, MB) == "ok"
    assert tcp_echo_check(b.ns, a.tunnel_ip6, port, MB) == "ok"


def test_wiregate_over_ipv6_underlay_with_responder_learning_the_endpoint(lab):
    # b does not know a's endpoint: it learns it from a's authenticated handshake
    net, a, b = pair(lab, "wiregate", "wiregate", endpoint_a=False, v6_underlay=True)
    assert icmp_ping(a.ns, b.tunnel_ip) is not None
    assert dump(b)[1][2] == f"[{a.underlay_ip6}]:{a.port}"


@pytest.mark.parametrize("wrong_side", ["wiregate", "wireguard-go"])
def test_wrong_public_key_never_gets_a_session(lab, wrong_side):
    """wireguard-go knows a wrong key for our wiregate (or the reverse): neither side completes a handshake."""
    need("wg", "wireguard-go")
    net = WgNet(lab)
    a, b = net.side("a", "wiregate"), net.side("b", "wireguard-go")
    net.connect(a, b)
    stranger = keypair()[1]
    holder = b if wrong_side == "wireguard-go" else a  # whose peer entry gets the wrong key
    holder.peers[0] = type(holder.peers[0])(stranger, *[getattr(holder.peers[0], f) for f in
                                                        ("preshared_key", "allowed_ips", "endpoint",
                                                         "persistent_keepalive")])
    net.start()
    assert icmp_ping(a.ns, b.tunnel_ip, timeout=2) is None
    assert icmp_ping(b.ns, a.tunnel_ip, timeout=2) is None
    for s in (a, b):
        rows = dump(s)
        assert all(row[4] == "0" for row in rows[1:]), f"{s.kind} has a handshake: {rows}"


_FORWARDER = r"""
# A UDP middlebox in b's namespace: a -> listen port -> wiregate's port, answers back to a. It can drop a share of
# datagrams and delay the rest (what tc netem would do; this kernel has no netem), and replay a recorded data
# message on command ("replay SIZE" on stdin).
import heapq, random, select, socket, sys, time
listen, target = ("192.0.2.2", int(sys.argv[1])), ("192.0.2.2", int(sys.argv[2]))
loss, delay = float(sys.argv[3]), float(sys.argv[4])
rng = random.Random(7)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(listen)
peer, seen, queue, n = None, {}, [], 0
print("ready", flush=True)
end = time.monotonic() + 60
while time.monotonic() < end:
    timeout = max(0.0, queue[0][0] - time.monotonic()) if queue else 1.0
    r, _, _ = select.select([s, sys.stdin], [], [], timeout)
    now = time.monotonic()
    while queue and queue[0][0] <= now:
        _, _, data, dst = heapq.heappop(queue)
        s.sendto(data, dst)
    if sys.stdin in r:
        cmd = sys.stdin.readline().split()
        if not cmd:
            break
        data = seen.get(int(cmd[1]))
        if data:
            s.sendto(data, target)
        print("replayed" if data else "nothing", flush=True)
    if s not in r:
        continue
    data, addr = s.recvfrom(65536)
    if addr == target:
        dst = peer
    else:
        peer, dst = addr, target
        if data[0] == 4:
            seen[len(data)] = data   # transport data message, keyed by its size
    if dst is None or rng.random() < loss:
        continue
    n += 1
    heapq.heappush(queue, (now + delay, n, data, dst))
"""


def forwarder(lab, b, a, loss: float = 0.0, delay: float = 0.0):
    """Put the middlebox between a and b: a sends to it, b learns it as a's address (b knows no endpoint)."""
    port = free_port("127.0.0.1", kind=2)
    a.peers[0] = type(a.peers[0])(b.public_key, None, a.peers[0].allowed_ips, ("192.0.2.2", port), 0)
    proc = lab.spawn(b.ns, [sys.executable, "-c", _FORWARDER, str(port), str(b.port), str(loss), str(delay)],
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


_UDP_SINK = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[3])
got = []
while time.monotonic() < end:
    s.settimeout(max(end - time.monotonic(), 0.01))
    try:
        got.append(s.recv(2048).decode())
    except socket.timeout:
        break
print(" ".join(got), flush=True)
"""


def test_replayed_data_packet_is_dropped(lab):
    """A forwarder we control sits on the path to wiregate, records a data message and sends it again."""
    need("wg", "wireguard-go")
    net = WgNet(lab)
    a, b = net.side("a", "wireguard-go"), net.side("b", "wiregate")
    net.connect(a, b, endpoint_a=False)
    fwd = forwarder(lab, b, a)
    net.start()
    sink_port = free_port("127.0.0.1", kind=2)
    sink = lab.spawn(b.ns, [sys.executable, "-c", _UDP_SINK, b.tunnel_ip, str(sink_port), "4"],
                     stdout=subprocess.PIPE, text=True)
    assert sink.stdout.readline().strip() == "ready"

    def send(msg: str) -> None:
        a.ns.run([sys.executable, "-c", "import socket,sys; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
                  ".sendto(sys.argv[1].encode(), (sys.argv[2], int(sys.argv[3])))", msg, b.tunnel_ip,
                  str(sink_port)])

    # 333-byte payload: 361-byte IP packet, padded to 368, 400 bytes on the wire
    first = "A" * 333
    send(first)
    time.sleep(0.5)
    fwd.stdin.write("replay 400\n")
    fwd.stdin.flush()
    assert fwd.stdout.readline().strip() == "replayed"
    time.sleep(0.3)
    fwd.stdin.write("replay 400\n")
    fwd.stdin.flush()
    assert fwd.stdout.readline().strip() == "replayed"
    time.sleep(0.3)
    second = "B" * 333
    send(second)
    out, _ = sink.communicate(timeout=10)
    assert out.split() == [first, second]


@pytest.mark.parametrize("roamer", ["wireguard-go", "wiregate"])
def test_peer_that_moves_to_a_new_address_is_followed(lab, roamer):
    """The roamer switches to a second link (203.0.113.0/24) by pointing its endpoint there; the other side learns
    the roamer's new address from authenticated packets and sends there from then on."""
    other = "wiregate" if roamer == "wireguard-go" else "wireguard-go"
    net, a, b = pair(lab, roamer, other)
    assert icmp_ping(a.ns, b.tunnel_ip) is not None
    assert dump(b)[1][2] == f"{a.underlay_ip}:{a.port}"
    lab.link(a.ns, "203.0.113.1/24", b.ns, "203.0.113.2/24")
    a.wg("set", a.name, "peer", b64(b.public_key), "endpoint", f"203.0.113.2:{b.port}")
    assert icmp_ping(a.ns, b.tunnel_ip) is not None
    assert dump(b)[1][2] == f"203.0.113.1:{a.port}"
    # the old link goes away: b still reaches a, at its new address
    a.ns.run(["ip", "link", "set", net.veth[0], "down"])
    assert icmp_ping(b.ns, a.tunnel_ip6) is not None


def test_transfer_completes_through_loss_and_delay(lab):
    """10% loss and 50 ms delay each way (a userspace middlebox, as this kernel lacks netem): 128 KiB each way
    byte-exact."""
    need("wg")
    net = WgNet(lab)
    a, b = net.side("a", "wiregate"), net.side("b", "wiregate")
    net.connect(a, b, endpoint_a=False)
    forwarder(lab, b, a, loss=0.10, delay=0.05)
    net.start()
    assert icmp_ping(a.ns, b.tunnel_ip, timeout=10) is not None
    port = free_port()
    tcp_echo_server(lab, b.ns, b.tunnel_ip, port)
    t0 = time.monotonic()
    assert tcp_echo_check(a.ns, b.tunnel_ip, port, 128 * 1024, timeout=30) == "ok"
    assert time.monotonic() - t0 < 30


def test_wg_show_reads_and_wg_set_changes_a_wiregate_interface(lab, tmp_path):
    net, a, b = pair(lab, "wiregate", "wireguard-go")
    assert icmp_ping(a.ns, b.tunnel_ip) is not None
    iface, peer = dump(a)
    assert iface[:3] == [b64(a.private_key), b64(a.public_key), str(a.port)]
    assert peer[0] == b64(b.public_key) and peer[2] == f"{b.underlay_ip}:{b.port}"
    assert peer[3] == f"{b.tunnel_ip}/32,{b.tunnel_ip6}/128"
    assert int(peer[4]) > time.time() - 60 and int(peer[5]) > 0 and int(peer[6]) > 0
    import stat
    assert stat.S_ISSOCK(a.sock.stat().st_mode) and stat.S_IMODE(a.sock.stat().st_mode) == 0o600
    pretty = a.wg("show", a.name).stdout
    assert f"interface: {a.name}" in pretty and "latest handshake" in pretty
    # narrow the peer's AllowedIPs: IPv6 through the tunnel stops, IPv4 goes on
    a.wg("set", a.name, "fwmark", "0x51", "peer", b64(b.public_key), "allowed-ips", f"{b.tunnel_ip}/32",
         "persistent-keepalive", "7")
    assert dump(a)[0][3] == "0x51"
    # the mark is on the UDP socket: `ss -e` lists it as fwmark
    assert "fwmark:0x51" in a.ns.run(["ss", "-uanpe"]).stdout
    assert dump(a)[1][3] == f"{b.tunnel_ip}/32" and dump(a)[1][7] == "7"
    routes = a.ns.run(["ip", "-6", "route", "show", "dev", a.name]).stdout
    assert f"{b.tunnel_ip6} " not in routes + " "  # the /128 route left with the prefix
    assert icmp_ping(a.ns, b.tunnel_ip6, timeout=1.5) is None
    assert icmp_ping(a.ns, b.tunnel_ip) is not None
    # remove the peer, then add it back with wg set alone
    a.wg("set", a.name, "peer", b64(b.public_key), "remove")
    assert len(dump(a)) == 1
    assert icmp_ping(a.ns, b.tunnel_ip, timeout=1.5) is None
    a.wg("set", a.name, "peer", b64(b.public_key), "allowed-ips", f"{b.tunnel_ip}/32,{b.tunnel_ip6}/128",
         "endpoint", f"{b.underlay_ip}:{b.port}")
    assert icmp_ping(a.ns, b.tunnel_ip6) is not None
    # a request that cannot be applied (its new port is taken) is refused and changes nothing
    taken = free_port("127.0.0.1", kind=2)
    holder = lab.spawn(a.ns, [sys.executable, "-c", "import socket,sys,time; s=socket.socket(socket.AF_INET6, "
                              "socket.SOCK_DGRAM); s.bind(('::', int(sys.argv[1]))); print('ok', flush=True); "
                              "time.sleep(30)", str(taken)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "ok"
    before = dump(a)
    bad = a.wg("set", a.name, "listen-port", str(taken), "peer", b64(b.public_key), "allowed-ips",
               "203.0.113.0/24", check=False)
    assert bad.returncode != 0 and "in use" in bad.stderr
    assert [row[:4] for row in dump(a)] == [row[:4] for row in before]
    # a new private key is taken at once (sessions restart under it)
    new_priv, new_pub = keypair()
    key_file = tmp_path / "new.key"
    key_file.write_text(b64(new_priv) + "\n")
    key_file.chmod(0o600)
    a.wg("set", a.name, "private-key", str(key_file))
    assert dump(a)[0][:2] == [b64(new_priv), b64(new_pub)]


def wait_for(pred, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def test_sighup_applies_an_edited_file_and_keeps_the_running_config_when_it_is_bad(lab):
    import signal

    from wiregate.wireguard import config as wgconf

    net, a, b = pair(lab, "wiregate", "wireguard-go")
    assert icmp_ping(a.ns, b.tunnel_ip) is not None
    cfg = wgconf.load(a.conf)
    extra = keypair()[1]
    narrowed = type(cfg.peers[0])(b.public_key, None, (f"{b.tunnel_ip}/32",), cfg.peers[0].endpoint, 0)
    wgconf.write(a.conf, type(cfg)(cfg.private_key, cfg.listen_port, 0, cfg.addresses, cfg.mtu, (),
                                   (narrowed, type(narrowed)(extra, None, ("203.0.113.7/32",)))))
    a.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: len(dump(a)) == 3), dump(a)
    rows = dump(a)
    peers = {row[0]: row for row in rows[1:]}
    assert peers[b64(b.public_key)][3] == f"{b.tunnel_ip}/32" and peers[b64(extra)][3] == "203.0.113.7/32"
    # the session with b survived the reload
    assert icmp_ping(a.ns, b.tunnel_ip, timeout=2) is not None
    before = dump(a)
    a.conf.write_text(a.conf.read_text() + "AllowedIPs = 10.0.0.0/33\n")
    a.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "reload:" in a.log.read_text())
    assert f"{a.conf}:" in a.log.read_text() and "AllowedIPs" in a.log.read_text()
    assert [r[:4] for r in dump(a)] == [r[:4] for r in before] and a.proc.poll() is None


_STATUS_SCRIPT = r"""
import asyncio, json, sys
from wiregate.wireguard import config as wgconf
from wiregate.wireguard.interface import WireGuardInterface
async def main():
    iface = WireGuardInterface(sys.argv[2], wgconf.load(sys.argv[1]), uapi_socket=False)
    await iface.start()
    print("up", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)   # the test pings us meanwhile
    print(json.dumps(iface.status()), flush=True)
    await iface.close()
asyncio.run(main())
"""


def test_interface_status_reports_peer_handshake_and_counters(lab):
    """WireGuardInterface used as a library (as `wiregate run` does), without the UAPI socket."""
    need("wg", "wireguard-go")
    net = WgNet(lab)
    a, b = net.side("a", "wiregate"), net.side("b", "wireguard-go")
    net.connect(a, b)
    net.start(b)
    conf = net.dir / "lib.conf"
    from wiregate.wireguard.config import write
    write(conf, net.config(a))
    proc = lab.spawn(a.ns, [sys.executable, "-c", _STATUS_SCRIPT, str(conf), a.name], stdin=subprocess.PIPE,
                     stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "up"
    assert not a.sock.exists()
    assert icmp_ping(b.ns, a.tunnel_ip) is not None
    proc.stdin.write("\n")
    proc.stdin.flush()
    import json
    status = json.loads(proc.stdout.readline())
    (peer,) = status["peers"]
    assert status["name"] == a.name and status["listen_port"] == a.port and status["mtu"] == 1420
    assert peer["public_key"] == b64(b.public_key) and peer["endpoint"] == f"{b.underlay_ip}:{b.port}"
    assert peer["last_handshake"] > time.time() - 60 and peer["rx_bytes"] > 0 and peer["tx_bytes"] > 0
    assert proc.wait(10) == 0
    # close() removed the interface
    assert a.ns.run(["ip", "link", "show", a.name], check=False).returncode != 0


def test_dns_name_endpoint_is_resolved_in_the_background(lab):
    """Endpoint = a host name: the Device asks (ResolveEndpoint), the interface resolves it off the loop.
    `ip netns exec` mounts /etc/netns/NS/hosts over /etc/hosts, which gives the namespace its own name."""
    import shutil
    from pathlib import Path

    need("wg", "wireguard-go")
    net = WgNet(lab)
    a, b = net.side("a", "wiregate"), net.side("b", "wireguard-go")
    net.connect(a, b, endpoint_a=False, endpoint_b=False)  # only the name can bring them together
    host = f"peer-b-{a.name}.test"
    a.peers[0] = type(a.peers[0])(b.public_key, None, a.peers[0].allowed_ips, (host, b.port), 0)
    etc = Path("/etc/netns") / a.ns.name
    etc.mkdir(parents=True, exist_ok=True)
    try:
        (etc / "hosts").write_text(f"127.0.0.1 localhost\n{b.underlay_ip} {host}\n")
        net.start()
        assert icmp_ping(a.ns, b.tunnel_ip) is not None
        assert dump(a)[1][2] == f"{b.underlay_ip}:{b.port}"
    finally:
        shutil.rmtree(etc, ignore_errors=True)


@pytest.mark.timeout(90)
def test_dns_endpoint_is_resolved_again_while_handshakes_keep_failing(lab):
    """The name first points at an address nobody answers on; the peer then "moves" (the hosts file changes under
    the running interface). Plain wg-quick would keep sending to the stale address forever; wiregate resolves the
    name again after every third failed handshake retry (~15 s) and reaches the peer at its new address."""
    import shutil
    from pathlib import Path

    need("wg", "wireguard-go")
    net = WgNet(lab)
    a, b = net.side("a", "wiregate"), net.side("b", "wireguard-go")
    net.connect(a, b, endpoint_a=False, endpoint_b=False)
    host = f"moved-b-{a.name}.test"
    a.peers[0] = type(a.peers[0])(b.public_key, None, a.peers[0].allowed_ips, (host, b.port), 0)
    etc = Path("/etc/netns") / a.ns.name
    etc.mkdir(parents=True, exist_ok=True)
    hosts = etc / "hosts"
    stale = "192.0.2.99"  # on the veth's subnet, but nobody has it: initiations vanish
    try:
        hosts.write_text(f"127.0.0.1 localhost\n{stale} {host}\n")
        net.start()
        # the first initiation goes to the stale address and gets no answer
        assert icmp_ping(a.ns, b.tunnel_ip, timeout=2) is None
        assert dump(a)[1][2] == f"{stale}:{b.port}"
        # rewritten in place: the bind mount `ip netns exec` made over /etc/hosts shows the same inode
        with open(hosts, "r+") as f:
            f.write(f"127.0.0.1 localhost\n{b.underlay_ip} {host}\n")
            f.truncate()
        deadline = time.monotonic() + 40
        while dump(a)[1][2] != f"{b.underlay_ip}:{b.port}":
            assert time.monotonic() < deadline, "the name was not resolved again while handshakes failed"
            time.sleep(0.5)
        assert icmp_ping(a.ns, b.tunnel_ip, timeout=10) is not None
    finally:
        shutil.rmtree(etc, ignore_errors=True)


def test_interface_deleted_under_a_running_wg_up_ends_it_cleanly(lab):
    need("wg")
    net = WgNet(lab)
    a, b = net.side("a", "wiregate"), net.side("b", "wiregate")
    net.connect(a, b)
    net.start()
    a.ns.run(["ip", "link", "del", a.name])
    assert a.proc.wait(10) == 0
    assert not a.sock.exists()
    assert "TUN device failed" in a.log.read_text() and "Traceback" not in a.log.read_text()


def test_wg_showconf_then_setconf_and_syncconf_round_trip(lab, tmp_path):
    net, a, b = pair(lab, "wiregate", "wireguard-go")
    assert icmp_ping(a.ns, b.tunnel_ip) is not None
    conf = tmp_path / "a.conf"
    conf.write_text(a.wg("showconf", a.name).stdout)
    conf.chmod(0o600)
    before = dump(a)
    a.wg("setconf", a.name, str(conf))  # replace_peers=true, then every peer again
    a.wg("syncconf", a.name, str(conf))  # a diff against get=1: nothing to change
    after = dump(a)
    assert [r[:4] for r in after] == [r[:4] for r in before]
    assert icmp_ping(a.ns, b.tunnel_ip) is not None


def test_second_wg_up_with_a_taken_name_is_refused_and_the_first_keeps_working(lab):
    net, a, b = pair(lab, "wiregate", "wiregate")
    r = a.ns.run([sys.executable, "-m", "wiregate", "wg", "up", str(a.conf), "--name", a.name], check=False,
                 timeout=20)
    assert r.returncode == 2 and "in use by another process" in r.stderr and "Traceback" not in r.stderr
    assert a.sock.exists() and icmp_ping(a.ns, b.tunnel_ip) is not None

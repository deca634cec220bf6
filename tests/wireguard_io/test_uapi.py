"""The UAPI text protocol: parsing and formatting, and the real `wg` tool talking to our sans-I/O parser."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess

import pytest

from tests.conftest import need
from wiregate.testing.peers import which
from wiregate.wireguard import uapi
from wiregate.wireguard.uapi import (DeviceStatus, GetRequest, PeerSet, PeerStatus, SetRequest, UapiConnection,
                                     UapiError)

K1, K2, K3 = bytes([1]) * 32, bytes([2]) * 32, bytes([3]) * 32


def test_set_request_is_parsed_whole_with_peers_in_order():
    conn = UapiConnection()
    text = (f"set=1\nprivate_key={K1.hex()}\nlisten_port=51820\nreplace_peers=true\n"
            f"public_key={K2.hex()}\npreshared_key={K3.hex()}\nendpoint=[fd00::2]:51821\n"
            f"persistent_keepalive_interval=25\nreplace_allowed_ips=true\nallowed_ip=198.51.100.2/32\n"
            f"allowed_ip=fd00:51::2/128\nprotocol_version=1\n"
            f"public_key={K3.hex()}\nremove=true\n\n")
    # bytes arrive in pieces: nothing until the empty line
    assert conn.feed(text[:40].encode()) == []
    (req,) = conn.feed(text[40:].encode())
    assert req == SetRequest(private_key=K1, listen_port=51820, replace_peers=True, peers=(
        PeerSet(K2, preshared_key=K3, endpoint=("fd00::2", 51821), persistent_keepalive=25,
                replace_allowed_ips=True, allowed_ips=("198.51.100.2/32", "fd00:51::2/128")),
        PeerSet(K3, remove=True),
    ))
    assert uapi.parse_set(uapi.format_set(req)[6:]) == req


@pytest.mark.parametrize("line, code", [
    ("listen_port=65536", uapi.IPC_ERROR_INVALID),
    ("private_key=abcd", uapi.IPC_ERROR_INVALID),
    ("bogus=1", uapi.IPC_ERROR_INVALID),
    ("no equals sign", uapi.IPC_ERROR_PROTOCOL),
    (f"public_key={K2.hex()}\nendpoint=example.org:51820", uapi.IPC_ERROR_INVALID),
    (f"public_key={K2.hex()}\nendpoint=fd00::1:5", uapi.IPC_ERROR_INVALID),
    (f"public_key={K2.hex()}\nallowed_ip=198.51.100.0", uapi.IPC_ERROR_INVALID),
    (f"public_key={K2.hex()}\nremove=yes", uapi.IPC_ERROR_INVALID),
    (f"public_key={K2.hex()}\nprotocol_version=2", uapi.IPC_ERROR_INVALID),
])
def test_bad_set_line_is_answered_with_errno_and_connection_goes_on(line, code):
    conn = UapiConnection()
    out = conn.feed(f"set=1\n{line}\n\nget=1\n\n".encode())
    assert isinstance(out[0], UapiError) and out[0].code == code
    assert out[1] == GetRequest()


def test_get_answer_has_wireguard_go_layout():
    status = DeviceStatus(private_key=K1, listen_port=51820, peers=(
        PeerStatus(K2, None, ("192.0.2.2", 51820), 1700000000.25, 10, 20, 25, ("198.51.100.2/32",)),))
    assert uapi.format_get(status) == (
        f"private_key={K1.hex()}\nlisten_port=51820\npublic_key={K2.hex()}\npreshared_key={bytes(32).hex()}\n"
        "protocol_version=1\nendpoint=192.0.2.2:51820\nlast_handshake_time_sec=1700000000\n"
        "last_handshake_time_nsec=250000000\ntx_bytes=20\nrx_bytes=10\npersistent_keepalive_interval=25\n"
        "allowed_ip=198.51.100.2/32\nerrno=0\n\n")


def test_unknown_operation_closes_without_answer_and_oversized_set_is_refused():
    conn = UapiConnection()
    assert conn.feed(b"hello=1\n") == [] and conn.closed
    conn = UapiConnection(max_request=100)
    (err,) = conn.feed(b"set=1\n" + b"allowed_ip=198.51.100.1/32\n" * 10)
    assert isinstance(err, UapiError) and conn.closed


class FakeDevice:
    """A minimal UAPI server state to let the real `wg` tool exercise the protocol."""

    def __init__(self) -> None:
        self.status = DeviceStatus(private_key=K1, listen_port=51820, peers=())
        self.requests: list[SetRequest] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = UapiConnection()
        while not conn.closed:
            data = await reader.read(65536)
            if not data:
                break
            for req in conn.feed(data):
                if isinstance(req, GetRequest):
                    writer.write(uapi.format_get(self.status).encode())
                elif isinstance(req, SetRequest):
                    self.requests.append(req)
                    writer.write(uapi.format_errno(0).encode())
                else:
                    writer.write(uapi.format_errno(req.code).encode())
            await writer.drain()
        writer.close()


async def test_real_wg_tool_reads_and_writes_through_our_protocol():
    need("wg")
    if os.geteuid() != 0:
        pytest.skip("needs root to create a socket in /var/run/wireguard")
    name = f"wgtu{os.getpid() % 100000}"
    os.makedirs(uapi_dir := "/var/run/wireguard", exist_ok=True)
    path = f"{uapi_dir}/{name}.sock"
    dev = FakeDevice()
    dev.status = DeviceStatus(private_key=K1, listen_port=51820, peers=(
        PeerStatus(K2, K3, ("fd00::2", 51821), 1700000000.5, 1000, 2000, 25,
                   ("198.51.100.2/32", "fd00:51::2/128")),))
    server = await asyncio.start_unix_server(dev.handle, path)
    try:
        async def wg(*args):
            p = await asyncio.create_subprocess_exec(which("wg"), *args, stdout=subprocess.PIPE,
                                                     stderr=subprocess.PIPE)
            out, err = await asyncio.wait_for(p.communicate(), 10)
            return p.returncode, out.decode(), err.decode()
        rc, out, err = await wg("show", name, "dump")
        assert rc == 0, err
        lines = [ln.split("\t") for ln in out.splitlines()]
        b64 = lambda k: base64.b64encode(k).decode()  # noqa: E731
        assert lines[0][:3] == [b64(K1), subprocess.run([which("wg"), "pubkey"], input=b64(K1), text=True,
                                                        capture_output=True).stdout.strip(), "51820"]
        assert lines[1] == [b64(K2), b64(K3), "[fd00::2]:51821", "198.51.100.2/32,fd00:51::2/128",
                            "1700000000", "1000", "2000", "25"]
        rc, out, err = await wg("set", name, "listen-port", "4000", "peer", b64(K3), "allowed-ips",
                                "203.0.113.0/24", "endpoint", "192.0.2.9:1234", "persistent-keepalive", "5")
        assert rc == 0, err
        assert dev.requests[-1] == SetRequest(listen_port=4000, peers=(
            PeerSet(K3, endpoint=("192.0.2.9", 1234), persistent_keepalive=5, replace_allowed_ips=True,
                    allowed_ips=("203.0.113.0/24",)),))
        rc, out, err = await wg("set", name, "peer", b64(K2), "remove")
        assert rc == 0 and dev.requests[-1] == SetRequest(peers=(PeerSet(K2, remove=True),))
    finally:
        server.close()
        await server.wait_closed()
        if os.path.exists(path):
            os.unlink(path)

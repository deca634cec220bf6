"""The client address arrives at real HAProxy (accept-proxy) and real nginx (listen ... proxy_protocol)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from wiregate.relay import Backend, HealthCheck, RelayConfig, TCPService
from wiregate.testing.peers import (
    free_port,
    need,
    nginx_preamble,
    stop,
    wait_port,
    which,
)

from .conftest import eventually, running

pytestmark = [pytest.mark.peer, pytest.mark.timeout(60)]


@pytest.fixture
def haproxy_src(tmp_path: Path):
    """A HAProxy that takes PROXY v1/v2 (accept-proxy) and answers with the client address it was told."""
    need("haproxy")
    port = free_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(f"""
global
    pidfile {tmp_path}/haproxy.pid
defaults
    mode http
    timeout connect 5s
    timeout client 10s
    timeout server 10s
frontend fe
    bind 127.0.0.1:{port} accept-proxy
    http-request return status 200 content-type text/plain lf-string "%[src]:%[src_port]"
""")
    proc = subprocess.Popen([which("haproxy"), "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        wait_port("127.0.0.1", port, proc=proc)
        yield port
    finally:
        stop(proc)


async def http_get(host: str, port: int) -> tuple[str, str]:
    """GET / over a raw connection; returns (body, client ip:port as seen locally)."""
    reader, writer = await asyncio.open_connection(host, port)
    local = writer.get_extra_info("sockname")
    writer.write(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
    data = await asyncio.wait_for(reader.read(-1), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return body.decode(), f"{local[0]}:{local[1]}"


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_client_address_reaches_haproxy(haproxy_src, version, splice):
    port = free_port()
    svc = TCPService("web", (("127.0.0.1", port), ("::1", port)), (Backend("127.0.0.1", haproxy_src),),
                     proxy_protocol=version, proxy_tlvs=("crc32c",) if version == "v2" else (),
                     health=HealthCheck(interval=0.2, send_proxy=True))
    async with running(RelayConfig((svc,), splice=splice)):
        body, me = await http_get("127.0.0.1", port)
        assert body == me
        body6, me6 = await http_get("::1", port)
        assert body6 == me6 and body6.startswith("::1:")


@pytest.fixture
def nginx_pp(tmp_path: Path):
    """nginx with `listen ... proxy_protocol`, logging and answering $proxy_protocol_addr:$proxy_protocol_port."""
    need("nginx")
    port = free_port()
    log = tmp_path / "access.log"
    conf = tmp_path / "nginx.conf"
    conf.write_text(nginx_preamble(tmp_path) + f"""
http {{
    access_log off;
    client_body_temp_path {tmp_path}/body;
    proxy_temp_path {tmp_path}/proxy;
    fastcgi_temp_path {tmp_path}/fastcgi;
    uwsgi_temp_path {tmp_path}/uwsgi;
    scgi_temp_path {tmp_path}/scgi;
    log_format pp '$proxy_protocol_addr:$proxy_protocol_port';
    server {{
        listen 127.0.0.1:{port} proxy_protocol;
        access_log {log} pp;
        location / {{ return 200 "$proxy_protocol_addr:$proxy_protocol_port"; }}
    }}
}}
""")
    proc = subprocess.Popen([which("nginx"), "-c", str(conf), "-p", str(tmp_path)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        wait_port("127.0.0.1", port, proc=proc)
        yield port, log
    finally:
        stop(proc)


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_client_address_reaches_nginx(nginx_pp, version):
    nport, log = nginx_pp
    port = free_port()
    svc = TCPService("web", (("127.0.0.1", port),), (Backend("127.0.0.1", nport),), proxy_protocol=version,
                     health=None)
    async with running(RelayConfig((svc,))):
        seen = [await http_get("127.0.0.1", port) for _ in range(3)]
    for body, me in seen:
        assert body == me
    # nginx writes the access log line after the response: wait for all three
    lines = await eventually(lambda: len(log.read_text().split()) >= 3 and log.read_text().split()
                             if log.exists() else False, 10, what="nginx's access log lines")
    assert lines == [me for _, me in seen]

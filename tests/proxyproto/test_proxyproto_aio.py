"""read_header: the asyncio adapter around the Decoder (fed through a StreamReader, no sockets needed)."""

import asyncio

import pytest

from wiregate.proxyproto import Decoder, ProxyError, encode_v1, encode_v2
from wiregate.proxyproto.aio import read_header

HDR = encode_v2(("203.0.113.7", 5555), ("198.51.100.2", 443), crc32c=True)


async def test_header_in_pieces_returns_the_header_and_the_early_payload():
    reader = asyncio.StreamReader()

    async def trickle():
        for i in range(0, len(HDR), 5):
            reader.feed_data(HDR[i:i + 5])
            await asyncio.sleep(0)
        reader.feed_data(b"GET / HTTP/1.1\r\n")

    task = asyncio.create_task(trickle())
    header, early = await read_header(reader, timeout=2)
    await task
    assert header.source == ("203.0.113.7", 5555)
    assert early + await reader.read(100) == b"GET / HTTP/1.1\r\n"


async def test_peer_closing_before_the_header_is_a_proxy_error():
    reader = asyncio.StreamReader()
    reader.feed_data(HDR[:10])
    reader.feed_eof()
    with pytest.raises(ProxyError, match="closed after 10 bytes, before a whole PROXY header"):
        await read_header(reader)


async def test_a_silent_peer_times_out():
    reader = asyncio.StreamReader()
    reader.feed_data(b"PROXY TCP4 ")
    with pytest.raises(ProxyError, match=r"no complete PROXY header within 0.05s \(11 bytes came\)"):
        await read_header(reader, timeout=0.05)


async def test_the_given_decoder_decides_what_is_accepted():
    reader = asyncio.StreamReader()
    reader.feed_data(encode_v1(("192.0.2.1", 1), ("192.0.2.2", 2)))
    with pytest.raises(ProxyError, match="v1 header: not accepted here"):
        await read_header(reader, decoder=Decoder(allow_v1=False))

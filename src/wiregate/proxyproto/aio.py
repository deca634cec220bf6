"""The thin asyncio layer: read one PROXY header from a StreamReader, bounded in size (the Decoder's caps) and time.

    header, early = await read_header(reader, timeout=5.0)
    # `early` holds the payload bytes that came in the same reads as the header: handle them first

All protocol decisions stay in the sans-I/O Decoder; this only moves bytes and keeps the clock.
"""

from __future__ import annotations

import asyncio

from wiregate.proxyproto.decoder import Decoder
from wiregate.proxyproto.header import ProxyError, ProxyHeader

# 2.1/2.2 ask receivers to wait "at least 3 seconds to cover a TCP retransmit"; 5 s leaves room for a slow
# tunnel while still shedding connections that never send a header.
DEFAULT_HEADER_TIMEOUT = 5.0


async def read_header(reader: asyncio.StreamReader, *, timeout: float = DEFAULT_HEADER_TIMEOUT,
                      decoder: Decoder | None = None, chunk_size: int = 4096) -> tuple[ProxyHeader, bytes]:
    """Read until a whole header has arrived; return (header, the bytes read past it, untouched).

    ProxyError when the header is malformed, when the peer closes first, or when `timeout` seconds pass.
    """
    dec = decoder if decoder is not None else Decoder()
    seen = 0
    try:
        async with asyncio.timeout(timeout):
            while True:
                data = await reader.read(chunk_size)
                if not data:
                    raise ProxyError(f"connection closed after {seen} bytes, before a whole PROXY header")
                seen += len(data)
                header = dec.feed(data)
                if header is not None:
                    return header, dec.rest
    except TimeoutError:
        raise ProxyError(f"no complete PROXY header within {timeout:g}s ({seen} bytes came)") from None

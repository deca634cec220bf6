"""Hand-built TLS ClientHello bytes for sniffer tests (RFC 8446 4.1.2 layout; extensions per RFC 6066/7301)."""

from __future__ import annotations


def ext(etype: int, body: bytes) -> bytes:
    return etype.to_bytes(2, "big") + len(body).to_bytes(2, "big") + body


def sni_ext(*names: bytes) -> bytes:
    entries = b"".join(b"\x00" + len(n).to_bytes(2, "big") + n for n in names)
    return ext(0, len(entries).to_bytes(2, "big") + entries)


def alpn_ext(*protos: bytes) -> bytes:
    lst = b"".join(bytes([len(p)]) + p for p in protos)
    return ext(16, len(lst).to_bytes(2, "big") + lst)


def client_hello(*exts: bytes, pad: int = 0) -> bytes:
    """A ClientHello handshake message (type 1, 3-byte length) with the given extensions."""
    if pad:
        exts = (*exts, ext(21, b"\x00" * pad))  # RFC 7685 padding extension
    e = b"".join(exts)
    body = (b"\x03\x03" + bytes(range(32)) + b"\x20" + b"\x11" * 32 + b"\x00\x04\x13\x01\x13\x02" + b"\x01\x00"
            + len(e).to_bytes(2, "big") + e)
    return b"\x01" + len(body).to_bytes(3, "big") + body


def records(msg: bytes, size: int = 1 << 14) -> bytes:
    """Wrap a handshake message in TLS records of at most `size` bytes of payload each."""
    out = b""
    for i in range(0, len(msg), size):
        frag = msg[i : i + size]
        out += b"\x16\x03\x01" + len(frag).to_bytes(2, "big") + frag
    return out

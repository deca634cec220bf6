"""Sans-I/O sniffers: read the first bytes of a connection to route it, without consuming or terminating anything.

`tls.parse_client_hello` gives the SNI (and ALPN, ECH) of a TLS ClientHello; `http.parse_request_head` gives an
HTTP/1.x request's method, target and Host. `classify` tells which of the two a connection starts with.
"""

from __future__ import annotations

from typing import Literal

from wiregate.sniff.http import (
    HeadReader,
    RequestHead,
    looks_like_http,
    parse_request_head,
)
from wiregate.sniff.tls import (
    ClientHello,
    HelloReader,
    SniffError,
    looks_like_tls,
    normalize_hostname,
    parse_client_hello,
)

Kind = Literal["tls", "http", "other"]


def classify(prefix: bytes) -> Kind | None:
    """"tls", "http" or "other" for the first bytes of a connection; None when more bytes are needed."""
    t = looks_like_tls(prefix)
    if t:
        return "tls"
    h = looks_like_http(prefix)
    if h:
        return "http"
    if t is None or h is None:
        return None
    return "other"


__all__ = ["ClientHello", "HeadReader", "HelloReader", "Kind", "RequestHead", "SniffError", "classify",
           "looks_like_http", "looks_like_tls", "normalize_hostname", "parse_client_hello", "parse_request_head"]

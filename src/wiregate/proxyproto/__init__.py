"""PROXY protocol v1 and v2, sans-I/O: an incremental decoder and encoders matching HAProxy's output.

See haproxy's doc/proxy-protocol.txt and docs/proxyproto.md. Nothing here touches a socket except the optional
asyncio adapter in `wiregate.proxyproto.aio`.
"""

from wiregate.proxyproto import constants as _constants
from wiregate.proxyproto.constants import *  # noqa: F401,F403 - the spec's names are the public API
from wiregate.proxyproto.constants import Command, Family, Protocol
from wiregate.proxyproto.decoder import Decoder, decode, detect, parse_v1_line, parse_v2
from wiregate.proxyproto.encoder import encode, encode_ssl, encode_tlvs, encode_v1, encode_v2
from wiregate.proxyproto.header import TLV, Address, ProxyError, ProxyHeader, SSLInfo, parse_ssl, parse_tlvs

__all__ = [
    "TLV", "Address", "Command", "Decoder", "Family", "Protocol", "ProxyError", "ProxyHeader", "SSLInfo",
    "decode", "detect", "encode", "encode_ssl", "encode_tlvs", "encode_v1", "encode_v2", "parse_ssl",
    "parse_tlvs", "parse_v1_line", "parse_v2",
]
__all__ += [n for n in dir(_constants) if n.isupper()]

"""PROXY protocol constants, named as in haproxy's doc/proxy-protocol.txt (sections 2.1 and 2.2)."""

from __future__ import annotations

import enum

# 2.2: the 12-byte binary signature that starts every v2 header
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_HEADER_LEN = 16  # signature + ver_cmd + fam + len
V1_PREFIX = b"PROXY "
V1_MAX_LENGTH = 107  # 2.1: worst case "PROXY UNKNOWN <39> <39> 65535 65535\r\n"
V1_MIN_LENGTH = 15  # 2.1: the shortest line, "PROXY UNKNOWN\r\n"
V2_DEFAULT_MAX_LENGTH = 4096  # our default cap on a whole v2 header (16 + len); configurable per decoder
V2_VERSION = 0x20

# 2.2: sizes of the address blocks
ADDR_LEN_INET = 12
ADDR_LEN_INET6 = 36
ADDR_LEN_UNIX = 216
UNIX_PATH_LEN = 108

# 2.2.x: TLV types
PP2_TYPE_ALPN = 0x01
PP2_TYPE_AUTHORITY = 0x02
PP2_TYPE_CRC32C = 0x03
PP2_TYPE_NOOP = 0x04
PP2_TYPE_UNIQUE_ID = 0x05
PP2_TYPE_SSL = 0x20
PP2_SUBTYPE_SSL_VERSION = 0x21
PP2_SUBTYPE_SSL_CN = 0x22
PP2_SUBTYPE_SSL_CIPHER = 0x23
PP2_SUBTYPE_SSL_SIG_ALG = 0x24
PP2_SUBTYPE_SSL_KEY_ALG = 0x25
PP2_TYPE_NETNS = 0x30
PP2_TYPE_MIN_CUSTOM = 0xE0
PP2_TYPE_MAX_CUSTOM = 0xEF
PP2_TYPE_MIN_EXPERIMENT = 0xF0
PP2_TYPE_MAX_EXPERIMENT = 0xF7
PP2_TYPE_MIN_FUTURE = 0xF8
PP2_TYPE_MAX_FUTURE = 0xFF

# 2.2.5: the SSL TLV "client" bit field
PP2_CLIENT_SSL = 0x01
PP2_CLIENT_CERT_CONN = 0x02
PP2_CLIENT_CERT_SESS = 0x04

PP2_UNIQUE_ID_MAX = 128  # 2.2.4
PP2_AUTHORITY_MAX = 255  # haproxy's cap (a host name)


class Command(enum.IntEnum):
    LOCAL = 0x0
    PROXY = 0x1


class Family(enum.IntEnum):
    UNSPEC = 0x0
    INET = 0x1
    INET6 = 0x2
    UNIX = 0x3


class Protocol(enum.IntEnum):
    UNSPEC = 0x0
    STREAM = 0x1
    DGRAM = 0x2


# 2.2: the only valid values of the 14th byte
VALID_FAM_BYTES = frozenset({0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32})

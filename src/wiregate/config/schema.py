"""The schema of wiregate's TOML files: every key, its type, its default and one line of documentation.

This table is the single source of truth: `parse()` validates a TOML document against it (each error names the key
path and the value at fault, e.g. ``services[2].listen: "0.0.0.0:99999": port out of range``) and
`render_markdown()` writes docs/config.md from it (a test keeps the two in step).

Values come out as plain Python (str, int, float, bool, tuples, and the parsed forms below); `wiregate.config.model`
turns them into frozen dataclasses and checks what spans several keys.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wiregate import hostport
from wiregate.errors import ConfigError, show

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}\Z")
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}\Z")
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(\.{_LABEL})*\.?\Z")
REQUIRED = object()  # marks an option without a default


def fail(path: str, value: object, why: str) -> ConfigError:
    """The ConfigError for `path` holding `value` (the caller raises it)."""
    return ConfigError(f"{path}: {show(value)}: {why}")


# -- value parsers: (path, raw) -> parsed; they raise fail(...) --------------------------------------------------
def p_str(path: str, v: object) -> str:
    if not isinstance(v, str):
        raise fail(path, v, "must be a string")
    return v


def p_name(path: str, v: object) -> str:
    if not isinstance(v, str) or not _NAME.match(v):
        raise fail(path, v, "must be 1-32 letters, digits, '_', '.', '-' (starting with a letter or digit)")
    return v


def p_ifname(path: str, v: object) -> str:
    if not isinstance(v, str) or not _IFNAME.match(v) or v in (".", ".."):
        raise fail(path, v, "must be an interface name of 1-15 letters, digits, '_', '.', '-'")
    return v


def p_bool(path: str, v: object) -> bool:
    if type(v) is not bool:
        raise fail(path, v, "must be true or false")
    return v


def int_range(lo: int, hi: int) -> Callable[[str, object], int]:
    def parse(path: str, v: object) -> int:
        if type(v) is not int:
            raise fail(path, v, "must be an integer")
        if not lo <= v <= hi:
            raise fail(path, v, f"out of range {lo}..{hi}")
        return v
    parse.__doc__ = f"integer {lo}..{hi}"
    return parse


def p_seconds(path: str, v: object) -> float:
    if type(v) not in (int, float) or not math.isfinite(v) or v <= 0:  # type: ignore[arg-type]
        raise fail(path, v, "must be a number of seconds > 0")
    return float(v)  # type: ignore[arg-type]


def p_seconds0(path: str, v: object) -> float:
    if type(v) not in (int, float) or not math.isfinite(v) or v < 0:  # type: ignore[arg-type]
        raise fail(path, v, "must be a number of seconds >= 0")
    return float(v)  # type: ignore[arg-type]


def choice(*options: str) -> Callable[[str, object], str]:
    def parse(path: str, v: object) -> str:
        if v not in options:
            raise fail(path, v, f"must be one of {', '.join(options)}")
        return v  # type: ignore[return-value]
    parse.__doc__ = " \\| ".join(f"`{o}`" for o in options)
    return parse


def p_ip(path: str, v: object) -> str:
    """An IP address (no prefix)."""
    if not isinstance(v, str):
        raise fail(path, v, "must be an IP address string")
    try:
        return str(ipaddress.ip_address(v))
    except ValueError:
        raise fail(path, v, "not an IP address") from None


def p_interface(path: str, v: object) -> str:
    """An address with its prefix length, e.g. 192.0.2.1/24."""
    if not isinstance(v, str) or "/" not in v:
        raise fail(path, v, "must be an address with a prefix length, e.g. \"192.0.2.1/24\"")
    try:
        iface = ipaddress.ip_interface(v)
    except ValueError:
        raise fail(path, v, "not an address/prefix") from None
    if iface.ip in (iface.network.network_address, iface.network.broadcast_address) and \
            iface.network.num_addresses > 2:
        raise fail(path, v, "is the network or broadcast address of its prefix, not a host address")
    return str(iface)


def p_listen(path: str, v: object) -> tuple[str, int]:
    """`ADDRESS:PORT` to bind (IP literal; `[::]:443` for IPv6); on the home side `tunnel:PORT` means the home
    tunnel address."""
    if not isinstance(v, str):
        raise fail(path, v, "must be a string \"ADDRESS:PORT\"")
    return hostport.parse(v, names=False, keywords=("tunnel",), what=path)


def p_listen_list(path: str, v: object) -> tuple[tuple[str, int], ...]:
    """A list of `ADDRESS:PORT` strings (a single string is accepted too)."""
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not v:
        raise fail(path, v, "must be a non-empty list of \"ADDRESS:PORT\" strings")
    out = [p_listen(f"{path}[{i}]", item) for i, item in enumerate(v)]
    if len(set(out)) != len(out):
        raise fail(path, v, "lists the same address twice")
    return tuple(out)


def endpoint_parser(default_port: int) -> Callable[[str, object], tuple[str, int]]:
    def parse(path: str, v: object) -> tuple[str, int]:
        if not isinstance(v, str):
            raise fail(path, v, "must be a string \"HOST[:PORT]\"")
        return hostport.parse(v, default_port=default_port, what=path)
    parse.__doc__ = f"`HOST[:PORT]` (DNS name or IP; port {default_port} when left out)"
    return parse


def p_target(path: str, v: object) -> tuple[str, int]:
    """`HOST:PORT` to connect to (IP or DNS name)."""
    if not isinstance(v, str):
        raise fail(path, v, "must be a string \"HOST:PORT\"")
    return hostport.parse(v, what=path)


def p_key(path: str, v: object) -> str:
    """A WireGuard public key (44 characters of base64)."""
    from wiregate.wireguard.keys import decode_key

    try:
        decode_key(v if isinstance(v, str) else "", path)
    except ConfigError:
        raise fail(path, v, "not a WireGuard key (44 characters of base64 ending in '=')") from None
    return v


def p_path(path: str, v: object) -> str:
    """A file path; relative paths are taken from the directory of the config file."""
    if not isinstance(v, str) or not v or "\0" in v:
        raise fail(path, v, "must be a non-empty file path")
    return v


def p_opt_listen(path: str, v: object) -> tuple[str, int] | None:
    """`ADDRESS:PORT`, or "" to turn it off."""
    if v == "":
        return None
    return p_listen(path, v)


def list_of(item: Callable[[str, object], Any], doc: str, *, nonempty: bool = False) -> Callable[[str, object], tuple]:
    def parse(path: str, v: object) -> tuple:
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or (nonempty and not v):
            raise fail(path, v, "must be a " + ("non-empty " if nonempty else "") + "list")
        return tuple(item(f"{path}[{i}]", x) for i, x in enumerate(v))
    parse.__doc__ = doc
    return parse


def p_network(path: str, v: object) -> str:
    if not isinstance(v, str):
        raise fail(path, v, "must be an address or prefix string")
    try:
        return str(ipaddress.ip_network(v, strict=False))
    except ValueError:
        raise fail(path, v, "not an IP address or prefix") from None


def p_hostname(path: str, v: object) -> str:
    if not isinstance(v, str) or not (_HOST.match(v.removeprefix("*.")) and v):
        raise fail(path, v, "not a host name (a leading '*.' is allowed)")
    return v.lower().rstrip(".")


ACME_CHALLENGES = ("tls-alpn-01", "http-01", "dns-01")
# RFC 1918, loopback, IPv6 ULA (RFC 4193) and link-local: a home LAN
INTERNAL_NETWORKS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "::1/128", "fc00::/7",
                     "fe80::/10")
ACME_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory"


def p_url(path: str, v: object) -> str:
    """An https:// URL (http:// only for a CA on loopback)."""
    if not isinstance(v, str) or not re.match(r"https://[^/\s]+(/\S*)?\Z|http://(127\.0\.0\.1|localhost|\[::1\])"
                                             r"(:\d+)?(/\S*)?\Z", v):
        raise fail(path, v, "must be an https:// URL")
    return v


# -- the schema -------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Opt:
    """One key: its parser, its default (REQUIRED when none) and one line of documentation."""

    key: str
    parse: Callable[[str, object], Any]
    default: Any
    doc: str


@dataclass(frozen=True, slots=True)
class Table:
    """A TOML table (`[name]`) or array of tables (`[[name]]`) with its keys and nested tables."""

    name: str
    doc: str
    opts: tuple[Opt, ...]
    array: bool = False
    required: bool = False
    children: tuple[Table, ...] = ()


_PORT = int_range(1, 65535)
_TUNNEL_MODE = choice("auto", "builtin", "kernel", "external")

COMMON_TOP = (
    Opt("role", choice("gateway", "home"), REQUIRED, "which side this file describes"),
    Opt("name", p_name, REQUIRED, "instance name: names the control socket, logs and metrics"),
)

CONTROL = Table("control", "the local control socket used by `wiregate status`", (
    Opt("socket", p_path, "", "unix socket path; empty means /run/wiregate/NAME.ctl (mode 0600)"),
))

METRICS = Table("metrics", "Prometheus metrics over HTTP", (
    Opt("listen", p_opt_listen, ("127.0.0.1", 9851), "where /metrics is served; \"\" turns metrics off"),
))

HEALTH = Table("health", "active health checks of the sites (TCP connect through the tunnel)", (
    Opt("enabled", p_bool, True, "false turns health checks off for this service"),
    Opt("interval", p_seconds, 2.0, "seconds between checks"),
    Opt("timeout", p_seconds, 1.0, "seconds a check may take"),
    Opt("rise", int_range(1, 100), 2, "consecutive successes that mark a site up"),
    Opt("fall", int_range(1, 100), 3, "consecutive failures that mark a site down"),
))

ACME_DNS = Table("acme_dns", "the gateway answers ACME DNS-01 challenges for its sites (docs/acme-dns.md): "
                 "an authoritative DNS server for `zone` and a publish channel on the tunnel address", (
    Opt("zone", p_hostname, "", "the challenge zone delegated (NS) to this gateway; \"\" = off"),
    Opt("nameserver", p_hostname, "", "the gateway's public DNS name: the NS target the user delegates the zone to"),
    Opt("listen", p_listen_list, (("0.0.0.0", 53),), "public `ADDRESS:PORT` list the DNS server answers on (UDP "
        "and TCP)"),
    Opt("publish_port", _PORT, 51818, "TCP port of the publish channel on the gateway's tunnel address"),
    Opt("record_ttl", p_seconds, 1800.0, "seconds a published challenge record lives unless the site clears it"),
    Opt("max_names_per_site", int_range(1, 1000), 16, "names with published records at once, per site"),
))

GATEWAY = Table("gateway file", "the VPS side", COMMON_TOP + (
    Opt("drain_timeout", p_seconds0, 30.0, "seconds open connections may finish after SIGTERM"),
), children=(
    Table("tunnel", "the WireGuard side of the gateway", (
        Opt("mode", _TUNNEL_MODE, "auto",
            "`builtin` (Python WireGuard), `kernel` (Linux WireGuard over netlink), `external` (you run "
            "wg-quick; wiregate only relays), `auto` = kernel when the kernel has WireGuard, else builtin"),
        Opt("interface", p_ifname, "wg0", "WireGuard interface name"),
        Opt("private_key_file", p_path, "gateway.key", "file holding the gateway's private key (mode 0600)"),
        Opt("endpoint", endpoint_parser(51820), REQUIRED,
            "public `HOST[:PORT]` of the gateway, put into join tokens"),
        Opt("listen_port", _PORT, 51820, "UDP port WireGuard listens on"),
        Opt("address", p_interface, "192.0.2.1/24",
            "gateway tunnel address with the tunnel prefix; sites get addresses from this prefix"),
        Opt("mtu", int_range(1280, 9000), 1420, "tunnel MTU"),
    ), required=True),
    Table("sites", "one per home network paired with `wiregate site add`", (
        Opt("name", p_name, REQUIRED, "site name"),
        Opt("public_key", p_key, REQUIRED, "the site's WireGuard public key"),
        Opt("address", p_ip, REQUIRED, "the site's tunnel address (inside tunnel.address's prefix)"),
        Opt("preshared_key_file", p_path, "", "optional file with a WireGuard preshared key (mode 0600)"),
        Opt("weight", int_range(1, 256), 1, "share of new connections relative to other sites"),
        Opt("backup", p_bool, False, "take traffic only when no other site is up"),
        Opt("acme_names", list_of(p_hostname, "list of host names"), (),
            "names this site may publish DNS-01 challenge records for through the gateway ([acme_dns]); "
            "`*.example.org` allows `example.org` and names one label below it"),
    ), array=True),
    Table("services", "one per public port forwarded to the sites", (
        Opt("name", p_name, REQUIRED, "service name (logs, metrics, status)"),
        Opt("protocol", choice("tcp", "udp"), "tcp", "transport"),
        Opt("listen", p_listen_list, REQUIRED, "public `ADDRESS:PORT` list to listen on"),
        Opt("port", int_range(0, 65535), 0, "port on the sites' tunnel address; 0 = the first listen port"),
        Opt("sites", list_of(p_name, "list of site names"), (), "sites serving this service; empty = all sites"),
        Opt("proxy_protocol", choice("none", "v1", "v2"), "v2",
            "PROXY header sent to the site (UDP: `none` or `v2`)"),
        Opt("proxy_tlvs", list_of(choice("crc32c", "unique-id"), "list of `crc32c`, `unique-id`"), (),
            "TCP with `v2`: extra TLVs in the header (checksum; a unique connection id for the logs at home)"),
        Opt("balance", choice("roundrobin", "leastconn", "source"), "roundrobin",
            "how a site is picked for a TCP connection (a UDP client always stays with one site)"),
        Opt("connect_timeout", p_seconds, 5.0, "seconds to connect through the tunnel"),
        Opt("retries", int_range(0, 10), 2, "other sites tried when a connect fails"),
        Opt("idle_timeout", p_seconds, 3600.0, "seconds a TCP connection may stay silent"),
        Opt("max_connections", int_range(1, 1_000_000), 10000, "open TCP connections at most"),
        Opt("max_per_source", int_range(1, 1_000_000), 256,
            "open TCP connections (UDP: flows) per client address at most"),
        Opt("flow_idle_timeout", p_seconds, 60.0, "UDP: seconds a silent client flow is kept"),
        Opt("max_flows", int_range(1, 1_000_000), 4096,
            "UDP: client flows at most (held lower when the descriptor limit cannot hold it; see `wiregate check`)"),
    ), array=True, children=(HEALTH,)),
    ACME_DNS,
    CONTROL,
    METRICS,
))

ROUTE = Table("routes", "where a listener sends a connection; the first match wins", (
    Opt("name", p_name, REQUIRED, "route name"),
    Opt("target", p_target, REQUIRED, "`HOST:PORT` of the service at home"),
    Opt("sni", list_of(p_hostname, "list of host names"), (), "TLS SNI names (passthrough, `*.` wildcards)"),
    Opt("host", list_of(p_hostname, "list of host names"), (), "HTTP Host names"),
    Opt("path_prefix", p_str, "", "HTTP path prefix (with `host`)"),
    Opt("send_proxy", choice("none", "v1", "v2"), "none", "PROXY header sent to the target"),
    Opt("http_headers", p_bool, False, "add X-Forwarded-For / Forwarded to plain HTTP requests"),
    Opt("tls_cert", p_path, "",
        "certificate file: terminate TLS at wiregate for the route's `sni` names (else passed through)"),
    Opt("tls_key", p_path, "", "key file for tls_cert (mode 0600)"),
    Opt("tls", choice("", "acme"), "",
        "`acme`: terminate TLS with a certificate obtained and renewed from [acme] for the route's `sni` names"),
    Opt("acme_challenge", choice("", *ACME_CHALLENGES), "",
        "the challenge for this route's names; \"\" = [acme] challenge (wildcards always use dns-01)"),
    Opt("acme_cert_file", p_path, "",
        "passthrough route: write an ACME certificate (full chain) for the `sni` names to this file"),
    Opt("acme_key_file", p_path, "", "with acme_cert_file: its key file (written 0600)"),
    Opt("acme_deploy_hook", p_str, "",
        "with acme_cert_file: command run after each new certificate (split like a shell, run without one)"),
    Opt("internal_only", p_bool, False,
        "admit only clients (the real address) in internal_networks; others are refused and logged, except the "
        "CA's TLS-ALPN-01 validations of this route's names while an order is pending"),
    Opt("internal_networks", list_of(p_network, "list of addresses/prefixes"), INTERNAL_NETWORKS,
        "with internal_only: the LAN/trusted client networks"),
), array=True)

ACME = Table("acme", "certificates from an ACME CA (Let's Encrypt) for routes with `tls = \"acme\"`", (
    Opt("directory", p_url, ACME_DIRECTORY,
        "the CA's directory URL (staging: https://acme-staging-v02.api.letsencrypt.org/directory)"),
    Opt("email", p_str, "", "contact address given to the CA (expiry notices)"),
    Opt("agree_tos", p_bool, False, "you agree to the CA's terms of service (required to register)"),
    Opt("account_key_file", p_path, "acme-account.key",
        "the ACME account key; created 0600 when missing, refused when group/world readable"),
    Opt("key_type", choice("ec256", "rsa2048"), "ec256", "certificate key type: ECDSA P-256 or RSA 2048"),
    Opt("ca_bundle", p_str, "", "PEM file trusted for the CA's HTTPS (private or test CAs such as pebble)"),
    Opt("storage_dir", p_path, "acme", "where certificates and keys (0600) are kept"),
    Opt("challenge", choice(*ACME_CHALLENGES), "tls-alpn-01", "the default challenge"),
    Opt("dns_provider", choice("gateway", "rfc2136"), "gateway",
        "dns-01: the gateway's challenge zone, or RFC 2136 updates to your DNS server"),
), children=(
    Table("rfc2136", "dns-01 through RFC 2136 dynamic updates signed with a TSIG key", (
        Opt("server", p_str, "", "`HOST:PORT` of the authoritative server taking updates"),
        Opt("zone", p_str, "", "the zone the challenge records go in"),
        Opt("tsig_key_name", p_str, "", "TSIG key name"),
        Opt("tsig_algorithm", p_str, "hmac-sha256", "TSIG algorithm"),
        Opt("tsig_secret_file", p_path, "tsig.key", "file holding the base64 TSIG secret (mode 0600)"),
    )),
))

HOME = Table("home file", "the home side", COMMON_TOP + (
    Opt("drain_timeout", p_seconds0, 30.0, "seconds open connections may finish after SIGTERM"),
), children=(
    Table("tunnel", "the WireGuard side at home", (
        Opt("mode", _TUNNEL_MODE, "auto", "as on the gateway; `external` expects the interface to exist"),
        Opt("interface", p_ifname, "wg0", "WireGuard interface name"),
        Opt("private_key_file", p_path, "home.key", "file holding this site's private key (mode 0600)"),
        Opt("preshared_key_file", p_path, "", "optional preshared key file (mode 0600)"),
        Opt("address", p_interface, REQUIRED, "this site's tunnel address with the tunnel prefix"),
        Opt("gateway_endpoint", endpoint_parser(51820), REQUIRED,
            "the gateway's public `HOST[:PORT]`; a DNS name is resolved again every `resolve_interval`"),
        Opt("gateway_public_key", p_key, REQUIRED, "the gateway's WireGuard public key"),
        Opt("gateway_address", p_ip, REQUIRED, "the gateway's tunnel address (the trusted PROXY sender)"),
        Opt("persistent_keepalive", int_range(0, 65535), 25, "seconds between keepalives through NAT; 0 = off"),
        Opt("resolve_interval", p_seconds, 30.0, "seconds between lookups of a DNS gateway_endpoint"),
        Opt("probe_interval", p_seconds, 2.0,
            "seconds between tunnel probes to the gateway; 3 unanswered in a row (and at least 3 s) restart the "
            "handshake, which repairs the tunnel soon after a gateway restart"),
        Opt("listen_port", int_range(0, 65535), 0, "UDP port; 0 = any"),
        Opt("mtu", int_range(1280, 9000), 1420, "tunnel MTU"),
    ), required=True),
    Table("gateways", "further gateways of this home, one per `wiregate join TOKEN` after the first (the first "
          "is in [tunnel]); each has its own WireGuard interface, key and tunnel address, and mode, mtu, "
          "probe_interval and resolve_interval come from [tunnel] (README: Several gateways)", (
        Opt("name", p_name, REQUIRED, "gateway name (status, metrics, logs; the [tunnel] gateway is `gateway`)"),
        Opt("interface", p_ifname, REQUIRED, "this gateway's WireGuard interface (one per gateway)"),
        Opt("private_key_file", p_path, REQUIRED, "this site's private key for this gateway (mode 0600)"),
        Opt("preshared_key_file", p_path, "", "optional preshared key file (mode 0600)"),
        Opt("address", p_interface, REQUIRED,
            "this site's tunnel address on this gateway, with its prefix (must not overlap another gateway's)"),
        Opt("gateway_endpoint", endpoint_parser(51820), REQUIRED,
            "the gateway's public `HOST[:PORT]`; a DNS name is resolved again every `tunnel.resolve_interval`"),
        Opt("gateway_public_key", p_key, REQUIRED, "the gateway's WireGuard public key"),
        Opt("gateway_address", p_ip, REQUIRED, "the gateway's tunnel address (a trusted PROXY sender)"),
        Opt("persistent_keepalive", int_range(0, 65535), 25, "seconds between keepalives through NAT; 0 = off"),
        Opt("listen_port", int_range(0, 65535), 0, "UDP port; 0 = any"),
    ), array=True),
    Table("listeners", "ingress listeners: PROXY from the gateway, plain from anyone else allowed", (
        Opt("name", p_name, REQUIRED, "listener name"),
        Opt("listen", p_listen, REQUIRED, "`ADDRESS:PORT`; `tunnel:PORT` = the home tunnel address (with several "
            "gateways: each gateway's tunnel address, one socket each)"),
        Opt("protocol", choice("tcp", "udp"), "tcp", "transport"),
        Opt("trusted", list_of(p_network, "list of addresses/prefixes"), (),
            "peers that must send a PROXY header; empty = the gateways' tunnel addresses"),
        Opt("default_route", p_str, "",
            "route used when none matches; \"\" = the route naming no `sni`/`host` if there is one, else refuse "
            "(a lone `sni` route serves only its names)"),
        Opt("proxy_optional", p_bool, False,
            "Traefik's mode: trusted peers may omit the PROXY header (off: the PROXY spec forbids guessing; warns)"),
        Opt("header_timeout", p_seconds, 5.0, "seconds to receive the PROXY header"),
        Opt("max_header_bytes", int_range(16, 65551), 4096, "longest PROXY header taken"),
        Opt("sniff_timeout", p_seconds, 5.0, "seconds to receive the TLS ClientHello / HTTP head"),
        Opt("max_sniff_bytes", int_range(512, 1_048_576), 16384, "longest TLS ClientHello / HTTP request head"),
        Opt("max_connections", int_range(1, 1_000_000), 10000, "open connections at most"),
        Opt("idle_timeout", p_seconds, 3600.0, "seconds a TCP connection may stay silent"),
        Opt("flow_idle_timeout", p_seconds, 60.0, "UDP: seconds a silent client flow is kept"),
        Opt("max_flows", int_range(1, 1_000_000), 4096,
            "UDP: client flows at most, one socket each (held lower when the descriptor limit cannot hold it)"),
        Opt("max_per_source", int_range(1, 1_000_000), 256, "UDP: flows per client address at most"),
        Opt("server_first", p_bool, False,
            "the service speaks first (SMTP, SSH...): plain peers are connected without waiting for their bytes"),
    ), array=True, children=(ROUTE,)),
    ACME,
    CONTROL,
    METRICS,
))


def parse(doc: dict, table: Table, path: str = "") -> dict[str, Any]:
    """Validate `doc` against `table` recursively; returns a dict with defaults filled (REQUIRED keys present)."""
    out: dict[str, Any] = {}
    known = {o.key: o for o in table.opts}
    kids = {c.name: c for c in table.children}
    where = (lambda k: f"{path}.{k}") if path else (lambda k: k)
    for key, value in doc.items():
        sub = where(key)
        if key in known:
            out[key] = known[key].parse(sub, value)
        elif key in kids:
            child = kids[key]
            if child.array:
                if isinstance(value, dict):
                    value = [value]
                if not isinstance(value, list) or not all(isinstance(x, dict) for x in value):
                    raise fail(sub, value, f"must be an array of tables ([[{key}]])")
                out[key] = tuple(parse(item, child, f"{sub}[{i}]") for i, item in enumerate(value))
            else:
                if not isinstance(value, dict):
                    raise fail(sub, value, f"must be a table ([{key}])")
                out[key] = parse(value, child, sub)
        else:
            close = suggest(key, [*known, *kids])
            hint = f" (did you mean {close!r}?)" if close else ""
            raise ConfigError(f"{sub}: unknown key{hint}")
    for o in table.opts:
        if o.key not in out:
            if o.default is REQUIRED:
                raise ConfigError(f"{where(o.key)}: missing (required)")
            out[o.key] = o.default
    for c in table.children:
        if c.name not in out:
            if c.required:
                raise ConfigError(f"{where(c.name)}: missing table [{c.name}]")
            out[c.name] = () if c.array else parse({}, c, where(c.name))
    return out


def suggest(key: object, candidates: list[str]) -> str | None:
    """The known key a misspelt one was most likely meant to be (`send_prxy` -> `send_proxy`), or None."""
    if not isinstance(key, str):
        return None
    norm = key.lower().replace("-", "_")
    for c in candidates:
        if c == norm or (len(c) > 3 and len(norm) > 3 and (c in norm or norm in c)):
            return c
    close = difflib.get_close_matches(norm, candidates, n=1, cutoff=0.7)
    return close[0] if close else None


def _default_text(o: Opt) -> str:
    if o.default is REQUIRED:
        return "**required**"
    d = o.default
    if isinstance(d, tuple) and len(d) == 2 and isinstance(d[1], int) and isinstance(d[0], str):
        d = hostport.format(d)
    elif isinstance(d, tuple) and d and all(isinstance(x, tuple) and len(x) == 2 for x in d):
        d = [hostport.format(x) for x in d]
    elif isinstance(d, tuple):
        d = list(d)
    return f"`{show(d)}`"


_TYPE_NAMES = {
    "p_str": "string", "p_name": "name", "p_ifname": "interface name", "p_bool": "boolean",
    "p_seconds": "seconds > 0", "p_seconds0": "seconds >= 0", "p_path": "file path", "p_ip": "IP address",
    "p_interface": "address/prefix", "p_key": "WireGuard key (base64)", "p_listen": "`ADDRESS:PORT`",
    "p_listen_list": "list of `ADDRESS:PORT`", "p_target": "`HOST:PORT`", "p_opt_listen": "`ADDRESS:PORT` or `\"\"`",
}


def render_markdown() -> str:
    """docs/config.md: every key of both files with its type, default and meaning (generated from this table)."""
    lines = [
        "# Configuration reference",
        "",
        "Generated from `src/wiregate/config/schema.py` (`wiregate check --schema` prints it; a test keeps this",
        "file in step). One TOML file per side: `role = \"gateway\"` on the VPS, `role = \"home\"` at home.",
        "`wiregate check FILE` validates a file; each error names the key path and the value at fault.",
        "Relative file paths are taken from the directory of the config file. Files holding keys must have",
        "mode 0600 (or stricter); wiregate refuses group/world readable key files.",
        "",
        "Addresses with a port are written `HOST:PORT` everywhere (wiregate.hostport): an IPv4 address",
        "(`192.0.2.1:443`), an IPv6 address in brackets, always (`[2001:db8::1]:443`, `[fe80::1%eth0]:443`;",
        "`2001:db8::1:443` is refused, it would read two ways), or a DNS name where names are taken. The port is",
        "1..65535; `HOST` alone only where a default port is given (`HOST[:PORT]`). An IPv4-mapped IPv6 address",
        "(`[::ffff:192.0.2.1]`) is read as the IPv4 address. A name's last label cannot be all digits",
        "(`1.2.3.999` is an error, not a name).",
        "",
    ]

    def emit(t: Table, prefix: str, level: int) -> None:
        head = "[[" + prefix + "]]" if t.array else ("[" + prefix + "]" if prefix else "top level")
        lines.append(f"{'#' * level} `{head}`" if prefix else f"{'#' * level} {t.name}: top level")
        lines.append("")
        lines.append(t.doc[0].upper() + t.doc[1:] + ("." if not t.doc.endswith(".") else ""))
        lines.append("")
        if t.opts:
            lines.append("| key | type | default | meaning |")
            lines.append("|---|---|---|---|")
            for o in t.opts:
                typ = (o.parse.__doc__ or "").strip().split("\n")[0].rstrip(".") or o.parse.__name__.removeprefix(
                    "p_")
                typ = _TYPE_NAMES.get(o.parse.__name__, typ)
                lines.append(f"| `{o.key}` | {typ} | {_default_text(o)} | {o.doc} |")
            lines.append("")
        for c in t.children:
            emit(c, f"{prefix}.{c.name}" if prefix else c.name, level + 1)

    for top in (GATEWAY, HOME):
        emit(top, "", 2)
    return "\n".join(lines).rstrip() + "\n"

"""The schema of wiregate's TOML files: every key, its type, its default and one line of documentation.

This table is the single source of truth: `parse()` validates a TOML document against it (each error names the key
path and the value at fault, e.g. ``services[2].listen: "0.0.0.0:99999": port out of range``) and
`render_markdown()` writes docs/config.md from it (a test keeps the two in step).

Values come out as plain Python (str, int, float, bool, tuples, and the parsed forms below); `wiregate.config.model`
turns them into frozen dataclasses and checks what spans several keys.
"""

from __future__ import annotations

from wiregate import hostport
from wiregate.errors import ConfigError, show
from wiregate.ingress import config as ingress
from wiregate.options import (  # noqa: F401 - the parsers were defined here before; callers still import them
    REQUIRED,
    Opt,
    Parser,
    Table,
    choice,
    endpoint_parser,
    fail,
    int_range,
    list_of,
    p_bool,
    p_hostname,
    p_ifname,
    p_interface,
    p_ip,
    p_listen,
    p_listen_list,
    p_name,
    p_network,
    p_opt_listen,
    p_path,
    p_seconds,
    p_seconds0,
    p_str,
    p_target,
    p_url,
    parse,
    suggest,
)
from wiregate.relay import config as relay


def p_key(path: str, v: object) -> str:
    """A WireGuard public key (44 characters of base64)."""
    from wiregate.wireguard.keys import decode_key

    try:
        decode_key(v if isinstance(v, str) else "", path)
    except ConfigError:
        raise fail(path, v, "not a WireGuard key (44 characters of base64 ending in '=')") from None
    return str(v)


ACME_CHALLENGES = ("tls-alpn-01", "http-01", "dns-01")
# RFC 1918, loopback, IPv6 ULA (RFC 4193) and link-local: a home LAN
INTERNAL_NETWORKS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "::1/128", "fc00::/7",
                     "fe80::/10")
ACME_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory"


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

# a gateway service is a relay service whose backends are the sites: it takes the relay's options over as they are
# (every one but those it decides itself); a new relay option is therefore a gateway option too (docs/extending.md)
HEALTH = Table("health", relay.HEALTH.doc, (
    Opt("enabled", p_bool, True, "false turns health checks off for this service"),
    *relay.HEALTH.except_("send_proxy"),  # send_proxy follows the service's proxy_protocol
))
_RELAY_OWN = ("name", "listen")  # the gateway's: names of 32 characters; `tunnel` refused with a hint
SERVICE_OPTS = relay.TCP_SERVICE.except_(*_RELAY_OWN) + tuple(
    o for o in relay.UDP_SERVICE.except_(*_RELAY_OWN) if o.key not in relay.TCP_SERVICE.keys())

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
        relay.BACKEND.opt("weight"),
        relay.BACKEND.opt("backup"),
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
        *SERVICE_OPTS,
    ), array=True, children=(HEALTH,)),
    ACME_DNS,
    CONTROL,
    METRICS,
))

# a home listener is an ingress listener (and its routes ingress routes) plus what only the home file has: names of
# 32 characters, `tunnel:PORT`, the gateways as the default trusted peers, and ACME
ROUTE = Table("routes", ingress.ROUTE.doc, (
    Opt("name", p_name, REQUIRED, "route name"),
    *ingress.ROUTE.except_("name", "acme", "internal"),
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
_INGRESS_OWN = ("name", "listen", "trusted_interface")
LISTENER_OPTS = tuple(o.but(doc=o.doc + "; empty = the gateways' tunnel addresses") if o.key == "trusted" else o
                      for o in ingress.LISTENER.except_(*_INGRESS_OWN))

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

# the keys of one gateway of a home (model.GatewayLink): each [[gateways]] table, and the [tunnel] one (the first)
_LINK = {o.key: o for o in (
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
)}

HOME = Table("home file", "the home side", COMMON_TOP + (
    Opt("drain_timeout", p_seconds0, 30.0, "seconds open connections may finish after SIGTERM"),
), children=(
    Table("tunnel", "the WireGuard side at home", (
        Opt("mode", _TUNNEL_MODE, "auto", "as on the gateway; `external` expects the interface to exist"),
        _LINK["interface"].but(default="wg0", doc="WireGuard interface name"),
        _LINK["private_key_file"].but(default="home.key", doc="file holding this site's private key (mode 0600)"),
        _LINK["preshared_key_file"],
        _LINK["address"].but(doc="this site's tunnel address with the tunnel prefix"),
        _LINK["gateway_endpoint"].but(doc="the gateway's public `HOST[:PORT]`; a DNS name is resolved again every "
                                      "`resolve_interval`"),
        _LINK["gateway_public_key"],
        _LINK["gateway_address"].but(doc="the gateway's tunnel address (the trusted PROXY sender)"),
        _LINK["persistent_keepalive"],
        Opt("resolve_interval", p_seconds, 30.0, "seconds between lookups of a DNS gateway_endpoint"),
        Opt("probe_interval", p_seconds, 2.0,
            "seconds between tunnel probes to the gateway; 3 unanswered in a row (and at least 3 s) restart the "
            "handshake, which repairs the tunnel soon after a gateway restart"),
        _LINK["listen_port"],
        Opt("mtu", int_range(1280, 9000), 1420, "tunnel MTU"),
    ), required=True),
    Table("gateways", "further gateways of this home, one per `wiregate join TOKEN` after the first (the first "
          "is in [tunnel]); each has its own WireGuard interface, key and tunnel address, and mode, mtu, "
          "probe_interval and resolve_interval come from [tunnel] (README: Several gateways)", (
        Opt("name", p_name, REQUIRED, "gateway name (status, metrics, logs; the [tunnel] gateway is `gateway`)"),
        *_LINK.values(),
    ), array=True),
    Table("listeners", "ingress listeners: PROXY from the gateway, plain from anyone else allowed", (
        Opt("name", p_name, REQUIRED, "listener name"),
        Opt("listen", p_listen, REQUIRED, "`ADDRESS:PORT`; `tunnel:PORT` = the home tunnel address (with several "
            "gateways: each gateway's tunnel address, one socket each)"),
        *LISTENER_OPTS,
    ), array=True, children=(ROUTE,)),
    ACME,
    CONTROL,
    METRICS,
))


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
        "mode 0600 (or stricter); wiregate refuses group/world readable key files. The relay's and the ingress's",
        "options are declared once, in relay/config.py and ingress/config.py, and taken over here (how to add one:",
        "docs/extending.md); the standalone relay and ingress files take the same keys.",
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

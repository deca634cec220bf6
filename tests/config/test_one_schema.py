"""One schema machinery: an option a part declares once is the same option in every file that can set it.

The relay declares its service options (relay/config.py), the ingress its listener and route options
(ingress/config.py); the gateway and home files take them over, and the standalone relay and ingress files are
read by the same tables. These tests walk the parts' tables, so an option added to one is checked here without
touching this file: it is accepted in the gateway or home file and in the standalone file, with the same bound
and the same error message after the file name, and the value reaches the part's own dataclass.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from tests.system.conftest import GW_KEY, HOME_KEY, gateway_text, home_text, write_key
from wiregate import options
from wiregate.config import load, schema
from wiregate.errors import ConfigError
from wiregate.ingress import config as ingress
from wiregate.relay import config as relay
from wiregate.runner import ingress_config, relay_config

SERVICES = schema.GATEWAY.child("services")
LISTENERS = schema.HOME.child("listeners")


def _carried(file_table: options.Table, part: options.Table) -> list[options.Opt]:
    """The part's options the file hands over as they are (the very same Opt objects)."""
    mine = {o.key: o for o in file_table.opts}
    return [o for o in part.opts if mine.get(o.key) is o]


# standalone files with one service / listener; {opt} is where the option under test goes
RELAY_TCP = ("[[services]]\nname = \"https\"\nlisten = [\"0.0.0.0:443\"]\n{opt}\n"
             "backends = [{{host = \"192.0.2.2\", port = 443}}]\n")
RELAY_UDP = ("[[services]]\nname = \"dns\"\nprotocol = \"udp\"\nlisten = [\"0.0.0.0:53\"]\n{opt}\n"
             "backends = [{{host = \"192.0.2.2\", port = 53}}]\n")
INGRESS = ("[[listeners]]\nname = \"https\"\nlisten = \"0.0.0.0:443\"\ndefault_route = \"web\"\n{opt}\n"
           "[[listeners.routes]]\nname = \"web\"\ntarget = \"192.168.1.11:443\"\n")

# (file side, file table, part table, option, standalone file text, the file's service/listener index)
CASES = (
    [("gateway", SERVICES, relay.TCP_SERVICE, o, RELAY_TCP, 0) for o in _carried(SERVICES, relay.TCP_SERVICE)]
    + [("gateway", SERVICES, relay.UDP_SERVICE, o, RELAY_UDP, 1) for o in _carried(SERVICES, relay.UDP_SERVICE)
       if o.key not in relay.TCP_SERVICE.keys()]
    + [("home", LISTENERS, ingress.LISTENER, o, INGRESS, 0) for o in _carried(LISTENERS, ingress.LISTENER)
       if o.key != "default_route"])  # resolved by the file with its routes (tested below)


def _system_file(tmp_path: Path, side: str, index: int, line: str) -> Path:
    """The gateway or home file as `wiregate init` / `site add` write it, with `line` in service/listener `index`."""
    if side == "gateway":
        write_key(tmp_path / "gateway.key", GW_KEY)
        text, anchor = gateway_text(), ('listen = ["0.0.0.0:443", "[::]:443"]', 'listen = ["0.0.0.0:53"]')[index]
    else:
        write_key(tmp_path / "home.key", HOME_KEY)
        text, anchor = home_text(), 'listen = "tunnel:443"'
    assert anchor in text
    p = tmp_path / f"{side}.toml"
    p.write_text(text.replace(anchor, f"{anchor}\n{line}", 1))
    return p


def _standalone(tmp_path: Path, template: str, line: str) -> Path:
    p = tmp_path / "part.toml"
    p.write_text(template.format(opt=line))
    return p


def _error(path: Path, read) -> str:
    """The one-line error after the file name."""
    with pytest.raises(ConfigError) as exc:
        read(path)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"{path}: "), msg
    return msg[len(f"{path}: "):]


def _read_part(side: str):
    return relay.load_config if side == "gateway" else ingress.load_config


def _part_value(side: str, index: int, cfg, key: str):
    if side == "gateway":
        (svc,) = [s for s in relay_config(cfg).services if s.name == ("https", "dns")[index]]
        return getattr(svc, key)
    return getattr(ingress_config(cfg).listeners[0], key)


def test_every_listener_option_of_a_part_is_taken_over_by_its_file():
    """The files compose the parts' tables: all but the keys a file decides itself are the parts' own objects."""
    own = {"name", "listen"}
    assert {o.key for o in relay.TCP_SERVICE.opts} - own <= {o.key for o in _carried(SERVICES, relay.TCP_SERVICE)}
    assert {o.key for o in relay.UDP_SERVICE.opts} - own - {"proxy_protocol", "balance"} <= {
        o.key for o in _carried(SERVICES, relay.UDP_SERVICE)}  # UDP: the gateway's header default is v2
    assert {o.key for o in ingress.LISTENER.opts} - own - {"trusted", "trusted_interface", "default_route"} <= {
        o.key for o in _carried(LISTENERS, ingress.LISTENER)}
    route = LISTENERS.child("routes")
    assert {"target", "sni", "host", "path_prefix", "send_proxy", "http_headers", "tls_cert", "tls_key"} <= {
        o.key for o in _carried(route, ingress.ROUTE)}
    assert [o for o in SERVICES.child("health").opts if o.key != "enabled"] == list(relay.HEALTH.except_(
        "send_proxy"))


@pytest.mark.parametrize(("table", "cls", "structural"), [
    (relay.TCP_SERVICE, relay.TCPService, {"backends", "health"}),
    (relay.UDP_SERVICE, relay.UDPService, {"backends"}),
    (relay.BACKEND, relay.Backend, set()),
    (relay.HEALTH, relay.HealthCheck, set()),
    (relay.RELAY, relay.RelayConfig, {"services"}),
    (ingress.LISTENER, ingress.Listener, {"routes"}),
    (ingress.ROUTE, ingress.Route, set()),
])
def test_each_table_declares_exactly_the_fields_of_its_dataclass(table, cls, structural):
    assert set(table.keys()) | structural == {f.name for f in dataclasses.fields(cls)}
    for o in table.opts:  # one default: the file's and the dataclass's
        f = next(f for f in dataclasses.fields(cls) if f.name == o.key)
        if o.default is not options.REQUIRED and f.default is not dataclasses.MISSING:
            assert f.default == o.default or (f.default is None and o.default in ("", None)), o.key


@pytest.mark.parametrize(("side", "file_table", "part", "opt", "template", "index"), CASES,
                         ids=[f"{c[0]}-{c[3].key}" for c in CASES])
def test_an_option_declared_once_has_one_bound_and_one_message_in_every_file(tmp_path, side, file_table, part, opt,
                                                                           template, index):
    sys_dir, part_dir = tmp_path / "sys", tmp_path / "part"
    sys_dir.mkdir()
    part_dir.mkdir()
    # a value no parser takes (a table): the same one-line message after the file name
    bad = f"{opt.key} = {{ x = 1 }}"
    one = _error(_system_file(sys_dir, side, index, bad), load)
    where = f"{('services', 'listeners')[side == 'home']}[{index}]."  # the standalone file's one is at [0]
    assert one.startswith(f"{where}{opt.key}: "), one
    assert one[len(where):] == _error(_standalone(part_dir, template, bad), _read_part(side)).split(".", 1)[1]
    bounds = re.match(r"integer (\d+)\.\.(\d+)", opt.parse.__doc__ or "")
    if bounds is None:  # the default, written out, reaches the part from both files
        if opt.default in (None, ""):
            return
        good = f"{opt.key} = {_toml(opt.default)}"
        want = opt.parse("x", opt.default)
    else:
        lo, hi = int(bounds[1]), int(bounds[2])
        over = f"{opt.key} = {hi + 1}"
        msg = _error(_system_file(sys_dir, side, index, over), load)
        assert msg[len(where):] == _error(_standalone(part_dir, template, over), _read_part(side)).split(".", 1)[1]
        assert msg.endswith(f".{opt.key}: {hi + 1}: out of range {lo}..{hi}"), msg
        good, want = f"{opt.key} = {lo}", lo
    assert _part_value(side, index, load(_system_file(sys_dir, side, index, good)), opt.key) == want
    parsed = _read_part(side)(_standalone(part_dir, template, good))
    got = parsed.services[0] if side == "gateway" else parsed.listeners[0]
    assert getattr(got, opt.key) == want


def _toml(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, tuple):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return repr(v)


def test_a_listener_built_in_code_is_held_to_the_same_bound():
    """max_sniff_bytes was capped only in the home file's schema; the ingress took any size from its own file and
    from code. One declaration: one bound."""
    with pytest.raises(ConfigError, match=r"listener 'l'.max_sniff_bytes: 1048577: out of range 512..1048576"):
        ingress.Listener(name="l", listen=("127.0.0.1", 0), max_sniff_bytes=1_048_577)
    with pytest.raises(ConfigError, match=r"service.max_connections: 0: out of range 1..1000000"):
        relay.TCPService("s", (("127.0.0.1", 1),), (relay.Backend("127.0.0.1", 2),), max_connections=0)


def test_the_standalone_ingress_file_makes_a_lone_plain_route_the_default(tmp_path):
    """As in the home file: a route naming no sni/host is the listener's default (it matched nothing before)."""
    p = tmp_path / "i.toml"
    p.write_text(INGRESS.format(opt="").replace('default_route = "web"\n', ""))
    (ln,) = ingress.load_config(p).listeners
    assert ln.default_route == "web"
    p.write_text(INGRESS.format(opt="").replace('default_route = "web"\n', "").replace(
        'name = "web"\n', 'name = "web"\nsni = ["a.example.org"]\n'))
    assert ingress.load_config(p).listeners[0].default_route is None  # a lone sni route serves only its names


def test_the_home_file_refuses_a_path_prefix_without_host(tmp_path):
    """The ingress always refused it, but only when `wiregate run` built it: `wiregate check` passed the file."""
    p = _system_file(tmp_path, "home", 0, "")
    p.write_text(p.read_text().replace('name = "web"\n', 'name = "web"\npath_prefix = "/api"\n'))
    assert _error(p, load) == ('listeners[0].routes[1].path_prefix: "/api": needs host names to match with (path '
                               'routing is HTTP only)')

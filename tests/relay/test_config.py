"""Relay config values and the JSON/TOML format: every fault names its field and value."""

from dataclasses import replace
from pathlib import Path

import pytest

from wiregate.errors import ConfigError
from wiregate.relay import (
    Backend,
    HealthCheck,
    RelayConfig,
    TCPService,
    UDPService,
    config_from_dict,
    config_to_dict,
)
from wiregate.relay.config import load_config

B = (Backend("10.0.0.2", 443),)


def svc(**kw):
    return {"name": "web", "listen": ["0.0.0.0:443", "[::]:443"], "backends": [{"host": "10.0.0.2", "port": 443}],
            **kw}


def test_file_format_maps_onto_the_dataclasses_and_back():
    cfg = config_from_dict({"workers": 2, "services": [
        svc(balance="leastconn", health={"interval": 1, "send_proxy": True}, proxy_tlvs=["crc32c"]),
        {"protocol": "udp", "name": "dns", "listen": [["127.0.0.1", 53]], "backends": [
            {"host": "10.0.0.2", "port": 53}, {"host": "10.0.0.3", "port": 53, "backup": True}],
         "proxy_protocol": "v2"}]})
    web, dns = cfg.services
    assert isinstance(web, TCPService) and web.listen == (("0.0.0.0", 443), ("::", 443))
    assert web.health == HealthCheck(interval=1, send_proxy=True) and web.proxy_tlvs == ("crc32c",)
    assert isinstance(dns, UDPService) and dns.backends[1].backup
    assert config_from_dict(config_to_dict(cfg)) == cfg


@pytest.mark.parametrize("change, message", [
    ({"backends": [{"host": "10.0.0.2", "port": 0}]}, 'services[0].backends[0]: ["10.0.0.2", 0]: port out of range'),
    ({"backends": [{"host": "bad host!", "port": 1}]},
     'services[0].backends[0]: ["bad host!", 1]: host is neither an IP address nor a DNS name'),
    ({"backends": [{"host": "10.0.0.999", "port": 1}]},  # taken as a host name before
     'services[0].backends[0]: ["10.0.0.999", 1]: host is neither an IP address nor a DNS name'),
    ({"listen": ["example.com:80"]}, 'services[0].listen[0]: "example.com:80": address must be an IP address'),
    ({"listen": ["1.2.3.4"]}, 'services[0].listen[0]: "1.2.3.4": missing \':port\''),
    ({"listen": [":80"]}, 'services[0].listen[0]: ":80": missing host'),
    ({"listen": [["::1", 0]]}, 'services[0].listen[0]: ["::1", 0]: port out of range'),
    ({"proxy_protocol": "v3"}, 'services[0].proxy_protocol: "v3": must be one of none, v1, v2'),
    ({"proxy_protocol": "v1", "proxy_tlvs": ["crc32c"]}, 'needs proxy_protocol = "v2"'),
    ({"proxy_tlvs": ["ssl"]}, 'services[0].proxy_tlvs[0]: "ssl": must be one of crc32c, unique-id'),
    ({"health": {"fall": 0}}, "services[0].health.fall: 0: out of range 1..100"),
    ({"connect_timeout": -1}, "services[0].connect_timeout: -1: must be a number of seconds > 0"),
    ({"max_per_source": 0}, "services[0].max_per_source: 0: out of range 1..1000000"),
    ({"backends": [{"host": "10.0.0.2", "port": 1, "backup": True}]}, "only backup backends"),
    ({"colour": "blue"}, "services[0].colour: unknown key"),
])
def test_bad_values_are_refused_naming_the_field(change, message):
    with pytest.raises(ConfigError, match=None) as exc:
        config_from_dict({"services": [svc(**change)]})
    assert message in str(exc.value)


def test_clashing_services_are_refused():
    with pytest.raises(ConfigError, match='services\\[1\\].name: "web": is used by another service'):
        RelayConfig((TCPService("web", (("127.0.0.1", 1),), B), TCPService("web", (("127.0.0.1", 2),), B)))
    with pytest.raises(ConfigError, match="already a tcp listener of service 'a'"):
        RelayConfig((TCPService("a", (("127.0.0.1", 1),), B), TCPService("b", (("127.0.0.1", 1),), B)))
    # the same port in TCP and UDP is fine
    RelayConfig((TCPService("a", (("127.0.0.1", 1),), B), UDPService("b", (("127.0.0.1", 1),), B)))


def test_load_config_names_the_file_on_syntax_errors(tmp_path):
    p = tmp_path / "r.json"
    p.write_text("{nope")
    with pytest.raises(ConfigError, match=f"{p}: not valid JSON"):
        load_config(p)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")


def test_health_send_proxy_needs_a_header_version():
    with pytest.raises(ConfigError, match="services\\[0\\].health.send_proxy: true: needs proxy_protocol"):
        config_from_dict({"services": [svc(proxy_protocol="none", health={"send_proxy": True})]})


def test_workers_share_the_limits():
    from wiregate.relay.runner import per_worker
    cfg = config_from_dict({"workers": 2, "services": [svc(max_connections=5, max_per_source=1),
                                                       {**svc(), "name": "u", "protocol": "udp", "max_flows": 9}]})
    tcp, udp = per_worker(cfg).services
    assert (tcp.max_connections, tcp.max_per_source, udp.max_flows) == (3, 1, 5)
    # a reloaded file asking for 4 workers while 2 run: shares follow the 2 that run (workers change on restart)
    reloaded = per_worker(replace(cfg, workers=4), running=2)
    assert reloaded.workers == 2 and reloaded.services[0].max_connections == 3


def test_the_readme_example_is_a_valid_relay_file(tmp_path):
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    start = readme.index("```toml\nworkers = 2")
    example = readme[start + len("```toml\n"): readme.index("```", start + 8)]
    (tmp_path / "relay.toml").write_text(example)
    cfg = load_config(tmp_path / "relay.toml")
    https, game = cfg.services
    assert https.backends[2].backup and https.health.send_proxy and isinstance(game, UDPService)

"""internal_only routes: the decision is pure (Rules.admit on the real client address)."""

from wiregate.ingress.config import Listener, Route
from wiregate.ingress.policy import NOT_INTERNAL, Accepted, Rules


def _ev(rules: Rules, client: str, kind: str = "tls") -> Accepted:
    route = rules.router.routes["lan"]
    return Accepted(route, (client, 40000), ("192.0.2.2", 443), ("192.0.2.1", 5000), kind, b"")


def test_internal_route_admits_its_networks_and_refuses_others_with_the_reason():
    lst = Listener("https", ("0.0.0.0", 443), trusted=("192.0.2.1",), routes=(
        Route("lan", ("127.0.0.1", 1), sni=("lan.example",), internal=("192.168.1.0/24", "fd00::/8")),
        Route("pub", ("127.0.0.1", 2), sni=("pub.example",))))
    rules = Rules.from_listener(lst)
    assert rules.admit(_ev(rules, "192.168.1.20")) is None
    assert rules.admit(_ev(rules, "fd00::5")) is None
    no = rules.admit(_ev(rules, "203.0.113.9"))
    assert no is not None and no.reason == NOT_INTERNAL and "203.0.113.9" in no.detail and "lan" in no.detail
    assert no.reply == b""
    assert rules.admit(_ev(rules, "203.0.113.9", "http")).reply.startswith(b"HTTP/1.1 403 ")
    pub = Accepted(rules.router.routes["pub"], ("203.0.113.9", 1), ("192.0.2.2", 443), ("192.0.2.1", 1), "tls", b"")
    assert rules.admit(pub) is None  # other routes are untouched


def test_a_standalone_ingress_refuses_acme_routes_it_cannot_serve():
    import pytest

    from wiregate.errors import ConfigError
    from wiregate.ingress.config import IngressConfig
    from wiregate.ingress.server import Ingress

    lst = Listener("https", ("127.0.0.1", 0), routes=(Route("app", ("127.0.0.1", 1), sni=("a.example",), acme=True),))
    with pytest.raises(ConfigError, match="acme routes get their certificate from `wiregate run`"):
        Ingress(IngressConfig((lst,)))

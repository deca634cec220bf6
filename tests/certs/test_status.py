"""`wiregate status` lines and metrics for ACME certificates (from a node status as the runner builds it)."""

from prometheus_client import CollectorRegistry, generate_latest

from wiregate.cli.status import render
from wiregate.metrics import StatusCollector
from wiregate.status import NodeStatus, from_json

STATUS = {
    "role": "home", "name": "home", "pid": 1, "uptime": 5.0, "config": "/etc/wiregate/home.toml",
    "reloads": {"ok": 0, "refused": 0}, "tunnel": {},
    "certificates": [
        {"names": ["app.example"], "challenge": "tls-alpn-01", "routes": ["app"], "not_after": 1893456000.0,
         "expires_in": 3600, "next_attempt": 0, "last_error": None, "failures": 0, "orders": 1, "issued": 1},
        {"names": ["bad.example"], "challenge": "http-01", "routes": ["bad"], "not_after": None, "expires_in": None,
         "next_attempt": 0, "last_error": "bad.example: http-01 failed: connection refused", "failures": 2,
         "orders": 2, "issued": 0},
    ],
    "certificate_failures": {"challenge_failed": 2},
}


def test_status_shows_each_certificate_with_expiry_and_last_error():
    text = render(from_json(NodeStatus, STATUS))
    assert "  app.example (tls-alpn-01): expires 2030-01-01 00:00:00Z" in text
    assert "  bad.example (http-01): none yet, last error: bad.example: http-01 failed: connection refused" in text


def test_metrics_expiry_and_failures_by_reason():
    reg = CollectorRegistry(auto_describe=False)
    reg.register(StatusCollector(lambda: from_json(NodeStatus, STATUS)))
    text = generate_latest(reg).decode()
    assert 'wiregate_certificate_expiry_seconds{names="app.example"} 3600.0' in text
    assert 'bad.example"' not in text.split("wiregate_certificate_expiry_seconds", 1)[1].split("# HELP")[0]
    assert 'wiregate_certificate_renewal_failures_total{reason="challenge_failed"} 2.0' in text

"""The manager without a network: a stored certificate goes live at start; an unreachable CA is one clear line,
the stored certificate stays live, and the retry follows the schedule (injected clock and rng)."""

from __future__ import annotations

import asyncio
import logging
import random
import socket

from tests.certs.test_storage import _cert
from wiregate.acme.book import Book
from wiregate.acme.manager import AcmeManager, CertSpec
from wiregate.acme.storage import Store, new_private_key
from wiregate.config.model import AcmeConfig


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def _cfg(tmp_path, port: int) -> AcmeConfig:
    return AcmeConfig(directory=f"https://127.0.0.1:{port}/dir", email="", agree_tos=True,
                      account_key_file=tmp_path / "acme-account.key", key_type="ec256", ca_bundle=None,
                      storage_dir=tmp_path / "acme", challenge="tls-alpn-01", dns_provider="gateway")


async def test_unreachable_ca_keeps_the_stored_certificate_live_and_logs_one_line(tmp_path, caplog):
    names = ("app.example",)
    key = new_private_key("ec256")
    Store(tmp_path / "acme").save(names, _cert(names, key, days=3), key)
    now = [0.0]
    book = Book()
    mgr = AcmeManager(_cfg(tmp_path, _closed_port()), [CertSpec(names, "tls-alpn-01", ("app",))], book,
                      clock=lambda: now[0], rng=random.Random(1))
    await mgr.start()
    try:
        assert book.context("app") is not None  # live before any order
        (c,) = mgr.certs
        now[0] = c.schedule.next_deadline  # the fake clock reaches the renewal time
        caplog.set_level(logging.INFO, "wiregate.acme")
        assert await mgr.renew(c) is False
    finally:
        await mgr.close()
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(lines) == 1, lines
    assert lines[0].startswith("acme: certificate for app.example failed: ")
    assert "unreachable" in lines[0] and "keeping the certificate valid until" in lines[0]
    assert book.context("app") is not None
    st = mgr.status()[0]
    assert st["last_error"] and st["failures"] == 1 and st["next_attempt"] > now[0]
    assert mgr.failure_counts() == {"ca_unreachable": 1}
    assert (tmp_path / "acme-account.key").stat().st_mode & 0o777 == 0o600


async def test_no_certificate_yet_means_no_context(tmp_path):
    book = Book()
    mgr = AcmeManager(_cfg(tmp_path, _closed_port()), [CertSpec(("b.example",), "http-01", ("b",))], book,
                      clock=lambda: 0.0, rng=random.Random(1))
    await mgr.start()
    try:
        await asyncio.sleep(0)
        assert book.context("b") is None
    finally:
        await mgr.close()


def _rfc2136_cfg(tmp_path, port: int) -> AcmeConfig:
    from dataclasses import replace

    from wiregate.config.model import Rfc2136Config

    rfc = Rfc2136Config(server="127.0.0.1:53", zone="example.org", tsig_key_name="wiregate.",
                        tsig_algorithm="hmac-sha256", tsig_secret_file=tmp_path / "tsig.key")
    return replace(_cfg(tmp_path, port), challenge="dns-01", dns_provider="rfc2136", rfc2136=rfc)


async def test_a_bad_tsig_secret_file_fails_the_start_with_one_line_not_a_dead_task(tmp_path):
    import base64
    import os

    import pytest

    from wiregate.acme.client import Task
    from wiregate.acme.errors import AcmeError

    secret = tmp_path / "tsig.key"
    secret.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    secret.chmod(0o644)
    spec = CertSpec(("*.example.org", "example.org"), "dns-01", ("org",))
    mgr = AcmeManager(_rfc2136_cfg(tmp_path, _closed_port()), [spec], Book(), clock=lambda: 0.0,
                      rng=random.Random(1))
    # at start, like the account key: a readable secret refuses the start (a reload keeps the running config)
    with pytest.raises(AcmeError, match=r"acme.rfc2136.tsig_secret_file: .*tsig.key"):
        await mgr.start()
    # a file spoiled after the start: the order fails with an AcmeError (one line, retried), never another
    # exception that would end the certificate's task silently
    secret.unlink()
    with pytest.raises(AcmeError, match="tsig.key"):
        await mgr._solve([Task("dns-01", "example.org", "", "v" * 43)])
    await mgr.close()

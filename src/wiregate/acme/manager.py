"""The asyncio side of ACME at home: one task per certificate, timed by its policy.Schedule.

    mgr = AcmeManager(cfg.acme, specs_from_config(cfg), book)
    await mgr.start()        # loads stored certificates (live at once), then orders what is missing or due
    mgr.status()             # per certificate: names, expiry, last error
    await mgr.close()

Decisions (when to order, how long to back off) are the Schedule's; this file moves bytes and sleeps. A failure
logs one line naming the names and the reason, keeps the current certificate, and retries later.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import shlex
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wiregate.acme.book import Book, context_from_files, route_key
from wiregate.acme.client import AcmeClient, Task
from wiregate.acme.errors import AcmeError
from wiregate.acme.policy import Schedule
from wiregate.acme.storage import (
    Store,
    Stored,
    load_or_create_account_key,
    new_private_key,
)
from wiregate.config.model import AcmeConfig, HomeConfig, write_secret, write_text
from wiregate.errors import WiregateError

log = logging.getLogger("wiregate.acme")
HOOK_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class CertSpec:
    """One certificate to keep: its names, the challenge, the routes it serves and the files it is deployed to."""

    names: tuple[str, ...]
    challenge: str
    routes: tuple[str, ...] = ()  # routes terminating TLS with it (tls = "acme"), as book.route_key names them
    deploy: tuple[tuple[Path, Path, str], ...] = ()  # (cert file, key file, hook) of passthrough routes


def specs_from_config(cfg: HomeConfig) -> list[CertSpec]:
    """The certificates a home file asks for: one per distinct set of names (routes listing the same names share
    it; the config check refuses them asking for different challenges)."""
    assert cfg.acme is not None
    groups: dict[tuple[tuple[str, ...], str], dict[str, list]] = {}
    challenge: dict[tuple[str, ...], str] = {}
    for ln, r in cfg.acme_routes():
        names = tuple(dict.fromkeys(r.sni))  # file order, no repeats
        ch = challenge.setdefault(names, r.acme_challenge or cfg.acme.challenge)
        g = groups.setdefault((names, ch), {"routes": [], "deploy": []})
        if r.tls == "acme":
            g["routes"].append(route_key(ln.name, r.name))
        if r.acme_cert_file is not None and r.acme_key_file is not None:
            g["deploy"].append((r.acme_cert_file, r.acme_key_file, r.acme_deploy_hook))
    return [CertSpec(names, ch, tuple(g["routes"]), tuple(g["deploy"])) for (names, ch), g in groups.items()]


def reason_of(message: str) -> str:
    """A short label for the failures metric, from an AcmeError message."""
    m = message.lower()
    for key, label in (("unreachable", "ca_unreachable"), ("timed out", "timeout"), ("ratelimit", "rate_limited"),
                       ("too many", "rate_limited"), ("failed:", "challenge_failed"),
                       ("unauthorized", "challenge_failed"),
                       ("connection", "challenge_failed"), ("dns", "dns"), ("terms of service", "agree_tos")):
        if key in m:
            return label
    return "other"


@dataclass
class CertState:
    spec: CertSpec
    schedule: Schedule
    stored: Stored | None = None
    task: asyncio.Task | None = None
    orders: int = 0  # orders started by this process
    issued: int = 0  # certificates obtained by this process


class AcmeManager:
    """Obtains, stores, renews and puts live the certificates of `specs` (see module docstring)."""

    def __init__(self, acme: AcmeConfig, specs: list[CertSpec], book: Book, *,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None,
                 gateway_address: str | None = None, config_dir: Path | None = None) -> None:
        self.cfg = acme
        self.config_dir = config_dir or acme.account_key_file.parent
        self.book = book
        self.clock = clock
        self.rng = rng or random.Random()
        self.gateway_address = gateway_address  # the gateway's tunnel address (dns-01 answered by the gateway)
        self.store = Store(acme.storage_dir)
        self.certs = [CertState(s, Schedule(s.names, rng=self.rng)) for s in specs]
        self.failures: collections.Counter = collections.Counter()
        self.client: AcmeClient | None = None
        self._client_lock = asyncio.Lock()
        self._publisher: Any = None
        self._hooks: set[asyncio.Task] = set()

    # -- life cycle ---------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Put every stored certificate live at once, then start one renewal task per certificate.
        AcmeError (one line) for a key file that is group/world readable."""
        self.store.ensure()
        load_or_create_account_key(self.cfg.account_key_file)  # fail now, not at the first order
        if any(c.spec.challenge == "dns-01" for c in self.certs):
            self._dns_publisher()  # the DNS-01 provider's settings and secret file too
        for c in self.certs:
            c.stored = self.store.load(c.spec.names)
            if c.stored is not None:
                c.schedule.load(c.stored.not_before, c.stored.not_after)
                self._go_live(c, deploy=False)
                log.info("acme: %s: stored certificate valid until %s; renewal at %s", ",".join(c.spec.names),
                         _utc(c.stored.not_after), _utc(c.schedule.next_deadline))
            else:
                c.schedule.load(None, None)
        loop = asyncio.get_running_loop()
        for c in self.certs:
            c.task = loop.create_task(self._run(c))

    async def close(self) -> None:
        for c in self.certs:
            if c.task is not None:
                c.task.cancel()
        await asyncio.gather(*(c.task for c in self.certs if c.task is not None), return_exceptions=True)

    # -- one certificate ----------------------------------------------------------------------------------------
    async def _run(self, c: CertState) -> None:
        while True:
            delay = c.schedule.next_deadline - self.clock()
            if delay > 0:
                await asyncio.sleep(min(delay, 3600.0))  # wall-clock time may jump: look again at least hourly
                continue
            await self.renew(c)

    async def renew(self, c: CertState) -> bool:
        """One order for `c`; True when a new certificate went live. Never raises AcmeError."""
        names = ",".join(c.spec.names)
        c.orders += 1
        t0 = time.monotonic()
        try:
            try:
                client, stored = await self._order(c)
            except AcmeError as exc:
                if "accountDoesNotExist" not in str(exc):
                    raise
                # the CA lost or removed the stored account (a reset test CA, a deactivated account): register anew
                log.warning("acme: %s does not know the stored account; registering again", self.cfg.directory)
                self.store.forget_account()
                self.client = None
                client, stored = await self._order(c)
        except AcmeError as exc:
            msg = str(exc)
            if not msg.startswith(names.split(",")[0]):
                msg = f"{names}: {msg}"
            self.failures[reason_of(msg)] += 1
            delay = c.schedule.failed(msg, self.clock())
            self.store.save_meta(c.spec.names, {"names": list(c.spec.names), "last_error": msg,
                                                "not_after": c.stored.not_after if c.stored else None})
            keep = f"keeping the certificate valid until {_utc(c.stored.not_after)}" if c.stored else \
                "no certificate yet: TLS for these names is refused"
            log.error("acme: certificate for %s failed: %s; %s; retry in %.0fs", names, msg.removeprefix(
                f"{names}: "), keep, delay)
            return False
        except OSError as exc:
            msg = f"{names}: cannot store the certificate: {exc.strerror or exc}"
            self.failures["storage"] += 1
            delay = c.schedule.failed(msg, self.clock())
            log.error("acme: %s; retry in %.0fs", msg, delay)
            return False
        c.stored = stored
        c.issued += 1
        c.schedule.succeeded(stored.not_before, stored.not_after, self.clock())
        took = time.monotonic() - t0
        self._go_live(c, deploy=True)
        log.info("acme: certificate for %s obtained in %.1fs (%s), valid until %s; renewal at %s", names, took,
                 c.spec.challenge, _utc(stored.not_after), _utc(c.schedule.next_deadline))
        ari = await client.renewal_time(stored.chain_pem)
        if ari is not None and ari < c.schedule.next_deadline:
            c.schedule.suggest(ari)
        return True

    async def _order(self, c: CertState) -> tuple[AcmeClient, Stored]:
        """One order (or the continuation of an earlier run's), stored; AcmeError/OSError on failure."""
        client = await self._client()
        pending = self.store.load_pending(c.spec.names)
        key_pem = pending[1] if pending else new_private_key(self.cfg.key_type)
        chain = await client.issue(c.spec.names, key_pem, c.spec.challenge, self._solve, self._cleanup,
                                   resume=pending[0] if pending else None,
                                   on_order=lambda url: self.store.save_pending(c.spec.names, url, key_pem))
        stored = self.store.save(c.spec.names, chain, key_pem)
        self.store.clear_pending(c.spec.names)
        return client, stored

    def _go_live(self, c: CertState, deploy: bool) -> None:
        assert c.stored is not None
        if c.spec.routes:
            try:
                ctx = context_from_files(c.stored.cert_file, c.stored.key_file)
            except (OSError, ssl.SSLError) as exc:  # checked when loaded: only a file changed under us
                log.error("acme: %s: cannot load the stored certificate: %s", ",".join(c.spec.names), exc)
            else:
                self.book.install(c.spec.routes, ctx)
        if deploy or not all(p.exists() for cert, key, _ in c.spec.deploy for p in (cert, key)):
            for cert_file, key_file, hook in c.spec.deploy:
                self._deploy(c, cert_file, key_file, hook)

    def _deploy(self, c: CertState, cert_file: Path, key_file: Path, hook: str) -> None:
        assert c.stored is not None
        try:
            write_secret(key_file, c.stored.key_file.read_text())
            write_text(cert_file, c.stored.chain_pem.decode("ascii"))
        except OSError as exc:
            log.error("acme: %s: cannot write %s: %s", ",".join(c.spec.names), cert_file, exc.strerror or exc)
            return
        if hook:
            t = asyncio.get_running_loop().create_task(self._hook(c, hook))
            self._hooks.add(t)  # a strong reference until it ends (the loop keeps only weak ones)
            t.add_done_callback(self._hooks.discard)

    async def _hook(self, c: CertState, hook: str) -> None:
        argv = shlex.split(hook)
        try:
            proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                        stdout=asyncio.subprocess.DEVNULL,
                                                        stderr=asyncio.subprocess.PIPE)
        except OSError as exc:
            log.error("acme: %s: deploy hook %r cannot start: %s", ",".join(c.spec.names), argv[0],
                      exc.strerror or exc)
            return
        try:
            async with asyncio.timeout(HOOK_TIMEOUT):
                _, err = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            log.error("acme: %s: deploy hook %r killed after %gs", ",".join(c.spec.names), argv[0], HOOK_TIMEOUT)
            return
        if proc.returncode:
            log.error("acme: %s: deploy hook %r exited %d: %s", ",".join(c.spec.names), argv[0], proc.returncode,
                      err.decode(errors="replace").strip()[:300])
        else:
            log.info("acme: %s: deploy hook %r done", ",".join(c.spec.names), argv[0])

    async def _client(self) -> AcmeClient:
        async with self._client_lock:
            if self.client is None:
                key = load_or_create_account_key(self.cfg.account_key_file)
                cl = AcmeClient(self.cfg.directory, key, ca_bundle=str(self.cfg.ca_bundle) if self.cfg.ca_bundle
                                else None, email=self.cfg.email, agree_tos=self.cfg.agree_tos)
                stored = self.store.account_url(self.cfg.directory)
                url = await cl.connect(stored)
                if url != stored:
                    self.store.save_account_url(self.cfg.directory, url)
                    log.info("acme: account registered at %s", self.cfg.directory)
                self.client = cl
            return self.client

    # -- challenges ---------------------------------------------------------------------------------------------
    async def _solve(self, tasks: list[Task]) -> None:
        for t in tasks:
            if t.kind == "tls-alpn-01":
                self.book.add_tls_alpn(t.name, t.value)
            elif t.kind == "http-01":
                self.book.add_http01(t.token, t.value)
        dns: dict[str, list[str]] = {}
        for t in tasks:
            if t.kind == "dns-01":
                dns.setdefault(t.name.removeprefix("*."), []).append(t.value)
        if dns:
            pub = self._dns_publisher()
            for domain, values in dns.items():
                await pub.publish(domain, values)

    async def _cleanup(self, tasks: list[Task]) -> None:
        for t in tasks:
            if t.kind == "tls-alpn-01":
                self.book.remove_tls_alpn(t.name)
            elif t.kind == "http-01":
                self.book.remove_http01(t.token)
        for domain in {t.name.removeprefix("*.") for t in tasks if t.kind == "dns-01"}:
            try:
                await self._dns_publisher().clear(domain)
            except Exception as exc:  # noqa: BLE001 - best effort
                log.warning("acme: %s: could not remove the challenge TXT record: %s", domain, exc)

    def _dns_publisher(self):
        if self._publisher is None:
            try:  # written by the DNS-01 part (ACME_INTERFACE.md)
                from wiregate.acme.dns01 import GatewayLink, make_publisher
            except ImportError:
                raise AcmeError("dns-01 is not available in this build") from None
            link = GatewayLink(self.gateway_address) if self.gateway_address else None
            try:
                self._publisher = make_publisher(self.cfg, self.config_dir, gateway=link)
            except AcmeError:
                raise
            except WiregateError as exc:  # a TSIG secret file refused (mode, content): one line, retried later
                raise AcmeError(str(exc)) from None
        return self._publisher

    # -- status -------------------------------------------------------------------------------------------------
    def status(self) -> list[dict[str, Any]]:
        """Per certificate: names, challenge, expiry, next renewal, last error, orders made."""
        now = self.clock()
        out = []
        for c in self.certs:
            s = c.schedule
            out.append({"names": list(c.spec.names), "challenge": c.spec.challenge, "routes": list(c.spec.routes),
                        "not_after": s.not_after,
                        "expires_in": None if s.not_after is None else round(s.not_after - now),
                        "next_attempt": s.next_deadline, "last_error": s.last_error, "failures": s.failures,
                        "orders": c.orders, "issued": c.issued})
        return out

    def failure_counts(self) -> dict[str, int]:
        return dict(self.failures)


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(t))

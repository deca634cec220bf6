"""ACME (RFC 8555) through certbot's `acme` library: account, order, challenges, finalization.

Every blocking library call runs in a worker thread (asyncio.to_thread) bounded by a timeout, so the event loop
(the ingress) never waits on the CA. JWS signing, nonces and message formats are all the library's.

`acme` 5.x parses tls-alpn-01 challenges as unrecognized; the two small classes below register the type with the
library's own registry (a KeyAuthorizationChallenge, so the key authorization is still computed by the library).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import josepy as jose
from acme import challenges, client, errors, messages
from acme import crypto_util as acme_crypto
from cryptography.hazmat.primitives import serialization

from wiregate.acme.errors import AcmeError

log = logging.getLogger("wiregate.acme")

NET_TIMEOUT = 15  # seconds per HTTP request to the CA
STEP_TIMEOUT = 60.0  # seconds any one library call may take (it may do several requests)
VALIDATION_TIMEOUT = 120.0  # seconds for the CA to validate every authorization and issue


@challenges.ChallengeResponse.register
class TLSALPN01Response(challenges.KeyAuthorizationChallengeResponse):
    """RFC 8737 tls-alpn-01 response (an empty object, like http-01's)."""

    typ = "tls-alpn-01"


@challenges.Challenge.register
class TLSALPN01(challenges.KeyAuthorizationChallenge):
    """RFC 8737 tls-alpn-01: the validation is the key authorization, served in a certificate."""

    response_cls = TLSALPN01Response
    typ = response_cls.typ

    def validation(self, account_key: jose.JWK, **unused_kwargs) -> str:
        return self.key_authorization(account_key)


@dataclass(frozen=True, slots=True)
class Task:
    """One challenge to put in place before the CA is told to validate."""

    kind: str  # "tls-alpn-01" | "http-01" | "dns-01"
    name: str  # the identifier (a wildcard's base name for dns-01)
    token: str
    value: str  # key authorization (tls-alpn-01, http-01) or the TXT value (dns-01)


Solver = Callable[[list[Task]], Awaitable[None]]


def describe(exc: BaseException) -> str:
    """A one-line reason from the library's errors (the CA's problem detail when there is one)."""
    if isinstance(exc, messages.Error):
        return f"{exc.typ.rsplit(':', 1)[-1]}: {exc.detail}" if exc.typ else str(exc.detail)
    if isinstance(exc, errors.ValidationError):
        parts = []
        for authzr in exc.failed_authzrs:
            for ch in authzr.body.challenges:
                if ch.error is not None:
                    parts.append(f"{authzr.body.identifier.value}: {ch.chall.typ} failed: {describe(ch.error)}")
        return "; ".join(parts) or "validation failed"
    if isinstance(exc, errors.TimeoutError):
        return "the CA did not finish validating in time"
    if isinstance(exc, TimeoutError):
        return "timed out talking to the CA"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "Max retries exceeded" in text or "Connection refused" in text or "NewConnectionError" in text:
        return f"CA unreachable ({text[:200]})"
    return text[:300]


class AcmeClient:
    """An ACME account at one CA directory. `connect()` first (fetches the directory, registers)."""

    def __init__(self, directory: str, account_key_pem: bytes, *, ca_bundle: str | None = None,
                 email: str = "", agree_tos: bool = False) -> None:
        key = serialization.load_pem_private_key(account_key_pem, password=None)
        self.jwk = jose.JWKEC(key=key)
        self.directory_url = directory
        self.verify: bool | str = ca_bundle or True
        self.email = email
        self.agree_tos = agree_tos
        self.client: client.ClientV2 | None = None
        self.account_url: str | None = None

    async def _call(self, fn, *args, timeout: float = STEP_TIMEOUT):
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.to_thread(fn, *args)
        except TimeoutError:
            raise AcmeError(f"{self.directory_url}: timed out after {timeout:g}s") from None

    async def connect(self, account_url: str | None = None) -> str:
        """Fetch the directory and register the account (or find the existing one); returns the account URL."""
        # verify_ssl goes to requests' `verify`, which takes a CA bundle path as well as a bool
        net = client.ClientNetwork(self.jwk, alg=jose.ES256, verify_ssl=self.verify,  # type: ignore[arg-type]
                                   user_agent="wiregate", timeout=NET_TIMEOUT)

        def setup() -> tuple[client.ClientV2, str]:
            directory = client.ClientV2.get_directory(self.directory_url, net)
            c = client.ClientV2(directory, net)
            if account_url:
                net.account = messages.RegistrationResource(uri=account_url, body=messages.Registration())
                return c, account_url
            if not self.agree_tos:
                raise AcmeError("acme.agree_tos: false: the CA's terms of service must be agreed to register "
                                f"({directory.meta.terms_of_service or 'see the CA'})")
            reg = messages.NewRegistration.from_data(email=self.email or None, terms_of_service_agreed=True)
            try:
                regr = c.new_account(reg)
            except errors.ConflictError as exc:  # the key is registered already: use that account
                regr = messages.RegistrationResource(uri=exc.location, body=messages.Registration())
                net.account = regr
            return c, regr.uri

        try:
            self.client, self.account_url = await self._call(setup)
        except AcmeError:
            raise
        except Exception as exc:  # noqa: BLE001 - requests/acme errors of every kind become one line
            raise AcmeError(f"{self.directory_url}: {describe(exc)}") from None
        return self.account_url

    async def _resume(self, url: str, csr: bytes) -> messages.OrderResource | None:
        """The order at `url` (made by an earlier run) when the CA still has it usable, else None.
        acme's ClientV2 has no public "fetch this order": its own POST-as-GET helpers are used, so the requests
        are still signed and parsed by the library."""
        c = self.client
        assert c is not None

        def fetch() -> messages.OrderResource:
            body = messages.Order.from_json(c._post_as_get(url).json())
            authzrs = [c._authzr_from_response(c._post_as_get(u), uri=u) for u in body.authorizations]
            return messages.OrderResource(body=body, uri=url, authorizations=authzrs, csr_pem=csr)

        try:
            orderr = await self._call(fetch)
        except Exception:  # noqa: BLE001 - gone, expired, another account: a new order then
            return None
        if orderr.body.status is None or orderr.body.status.name not in ("pending", "ready", "processing",
                                                                          "valid"):
            return None  # invalid (a failed validation) or expired
        return orderr

    async def issue(self, names: tuple[str, ...], key_pem: bytes, challenge: str, solve: Solver,
                    cleanup: Solver, *, resume: str | None = None,
                    on_order: Callable[[str], None] | None = None) -> bytes:
        """Order a certificate for `names` with the certificate key `key_pem`, answer the challenges with `solve`,
        and return the PEM chain. AcmeError names the names and the reason. `resume`: the URL of an order an
        earlier run made with the same key (continued when the CA still has it, so a restart makes no duplicate
        order); `on_order(url)` is called once an order exists, before any challenge is answered."""
        assert self.client is not None, "connect() first"
        c = self.client
        label = ",".join(names)
        csr = acme_crypto.make_csr(key_pem, list(names))
        orderr = await self._resume(resume, csr) if resume else None
        if orderr is not None:
            log.info("acme: %s: continuing the order of an earlier run (%s)", label, orderr.body.status.name)
            if orderr.body.status.name in ("ready", "processing", "valid"):
                deadline = datetime.datetime.now() + datetime.timedelta(seconds=VALIDATION_TIMEOUT)
                try:
                    done = await self._call(c.poll_finalization, orderr, deadline, timeout=VALIDATION_TIMEOUT + 30)
                except Exception as exc:  # noqa: BLE001
                    raise AcmeError(f"{label}: {describe(exc)}") from None
                return done.fullchain_pem.encode("ascii")
        else:
            try:
                orderr = await self._call(c.new_order, csr)
            except AcmeError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise AcmeError(f"{label}: new order refused: {describe(exc)}") from None
        if on_order is not None:
            on_order(orderr.uri)
        tasks: list[Task] = []
        answers = []
        for authzr in orderr.authorizations:
            ident = authzr.body.identifier.value
            if authzr.body.status != messages.STATUS_PENDING:
                continue  # valid: the CA remembers a recent validation (invalid: the order fails below)
            kind = "dns-01" if authzr.body.wildcard else challenge
            challb = next((cb for cb in authzr.body.challenges if cb.chall.typ == kind), None)
            if challb is None:
                offered = ", ".join(cb.chall.typ for cb in authzr.body.challenges)
                raise AcmeError(f"{ident}: the CA offers no {kind} challenge (offers: {offered})")
            response, validation = challb.response_and_validation(self.jwk)
            tasks.append(Task(kind, ident, challb.chall.encode("token"), validation))
            answers.append((challb, response))
        try:
            await solve(tasks)
            for challb, response in answers:
                await self._call(c.answer_challenge, challb, response)
            deadline = datetime.datetime.now() + datetime.timedelta(seconds=VALIDATION_TIMEOUT)
            orderr = await self._call(c.poll_and_finalize, orderr, deadline, timeout=VALIDATION_TIMEOUT + 30)
        except AcmeError as exc:
            raise AcmeError(f"{label}: {exc}") from None
        except Exception as exc:  # noqa: BLE001
            msg = describe(exc)
            raise AcmeError(msg if msg.startswith(names) else f"{label}: {msg}") from None
        finally:
            await cleanup(tasks)
        return orderr.fullchain_pem.encode("ascii")

    async def renewal_time(self, chain_pem: bytes) -> float | None:
        """The CA's suggested renewal time (ARI) as UNIX seconds, or None when it offers none or fails."""
        assert self.client is not None
        try:
            at, _ = await self._call(self.client.renewal_time, chain_pem)
        except Exception:  # noqa: BLE001 - ARI is advice: without it the 2/3 rule holds
            return None
        return at.timestamp() if at is not None else None

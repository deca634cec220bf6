"""The renewal schedule, on a fake clock: two thirds of the lifetime, backoff with jitter, ARI, never past expiry."""

import random

from wiregate.acme.policy import (
    BACKOFF_BASE,
    BACKOFF_CAP,
    MIN_RETRY,
    Schedule,
    backoff,
    renew_at,
)

DAY = 86400.0


def test_renewal_is_due_at_two_thirds_of_the_lifetime():
    s = Schedule(("a.example",), rng=random.Random(1))
    s.load(1000.0, 1000.0 + 90 * DAY)
    assert s.next_deadline == renew_at(1000.0, 1000.0 + 90 * DAY) == 1000.0 + 60 * DAY
    assert not s.due(1000.0 + 60 * DAY - 1)
    assert s.due(1000.0 + 60 * DAY)


def test_nothing_stored_is_due_at_once():
    s = Schedule(("a.example",))
    s.load(None, None)
    assert s.due(0.0) and not s.has_certificate(0.0)


def test_failures_back_off_exponentially_with_jitter_up_to_the_cap():
    rng = random.Random(7)
    delays = [backoff(n, rng) for n in range(1, 20)]
    for n, d in enumerate(delays, start=1):
        full = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (n - 1))
        assert full / 2 <= d <= full
    assert max(delays) <= BACKOFF_CAP
    # jitter: two homes failing at the same moment do not retry in step
    assert backoff(3, random.Random(1)) != backoff(3, random.Random(2))


def test_failure_keeps_the_certificate_and_retries_then_success_resets():
    s = Schedule(("a.example",), rng=random.Random(3))
    s.load(0.0, 90 * DAY)
    now = 60 * DAY
    d1 = s.failed("a.example: CA unreachable", now)
    assert s.not_after == 90 * DAY and s.has_certificate(now)  # the old certificate stays
    assert s.last_error == "a.example: CA unreachable" and s.next_deadline == now + d1
    assert not s.due(now + d1 - 0.001) and s.due(now + d1)
    d2 = s.failed("again", now + d1)
    assert d2 > d1 / 2  # grows (jitter at most halves it)
    s.succeeded(now + d1, now + d1 + 90 * DAY, now + d1 + d2)
    assert s.failures == 0 and s.last_error is None
    assert s.next_deadline == renew_at(now + d1, now + d1 + 90 * DAY)


def test_retry_never_waits_past_expiry_nor_hammers_the_ca():
    s = Schedule(("a.example",), rng=random.Random(1), base=10 * DAY, cap=10 * DAY)
    s.load(0.0, 90 * DAY)
    now = 89 * DAY
    d = s.failed("x", now)
    assert now + d < 90 * DAY
    d = s.failed("x", 90 * DAY - 10)  # ten seconds left: still no faster than MIN_RETRY
    assert d == MIN_RETRY


def test_the_cas_renewal_information_moves_renewal_earlier():
    s = Schedule(("a.example",))
    s.load(0.0, 90 * DAY)
    s.suggest(10 * DAY)
    assert s.next_deadline == 10 * DAY
    s.suggest(None)
    assert s.next_deadline == 60 * DAY

"""The connect retry rule (relay/retry.py) with the real BackendPool and a fake clock: which backend a connection
tries next after a failed connect, and when it gives up."""

from wiregate.relay.config import Backend, HealthCheck
from wiregate.relay.pool import PASSIVE_RETRY_AFTER, BackendPool
from wiregate.relay.retry import NO_ANSWER, NONE_UP, next_attempt

A, B, C = Backend("10.0.0.1", 80), Backend("10.0.0.2", 80), Backend("10.0.0.3", 80)


def attempts(pool: BackendPool, retries: int, fails: set[int], now: float = 0.0,
             source: str = "198.51.100.7") -> tuple[list[int], int | str]:
    """Drive one connection as TCPConnection does: pick, connect (failing for `fails`), report, until done."""
    tried: list[int] = []
    while True:
        i = next_attempt(pool, source, now, tried, retries)
        if isinstance(i, str):
            return tried, i
        tried.append(i)
        if i not in fails:
            pool.connect_ok(i, now)
            return tried, i
        pool.connect_failed(i, now)


def test_a_failed_connect_moves_on_to_the_next_backend_not_tried_yet():
    pool = BackendPool([A, B, C], "roundrobin", HealthCheck(rise=1, fall=3))
    assert attempts(pool, retries=2, fails={0, 1}) == ([0, 1, 2], 2)


def test_attempts_are_bounded_by_retries_plus_one_then_it_gives_up():
    pool = BackendPool([A, B, C], "roundrobin", HealthCheck(rise=1, fall=3))
    assert attempts(pool, retries=1, fails={0, 1, 2}) == ([0, 1], NO_ANSWER)
    pool = BackendPool([A, B, C], "roundrobin", HealthCheck(rise=1, fall=3))
    assert attempts(pool, retries=0, fails={0}) == ([0], NO_ANSWER)


def test_a_lone_backend_gets_its_retries_while_it_stays_up():
    pool = BackendPool([A], "roundrobin", HealthCheck(rise=1, fall=3))  # three failures in a row to go down
    assert attempts(pool, retries=2, fails={0}) == ([0, 0, 0], NO_ANSWER)
    pool = BackendPool([A], "roundrobin", HealthCheck(rise=1, fall=3))
    tried: list[int] = [0]
    pool.connect_failed(0, 0.0)
    assert next_attempt(pool, "x", 0.0, tried, 3) == 0  # every backend tried once, attempts left: again


def test_backends_tried_once_are_offered_again_while_attempts_remain():
    pool = BackendPool([A, B], "roundrobin", HealthCheck(rise=1, fall=5))
    tried, last = attempts(pool, retries=3, fails={0, 1})
    assert tried[:2] == [0, 1] and sorted(tried[2:]) == [0, 1] and last == NO_ANSWER  # the balancer's order


def test_without_active_checks_a_failed_backend_is_skipped_until_the_passive_retry_time():
    pool = BackendPool([A, B], "roundrobin")  # no health checks: one failure takes a backend out for a while
    assert attempts(pool, retries=3, fails={0, 1}, now=100.0) == ([0, 1], NONE_UP)  # both out: nothing to try
    assert next_attempt(pool, "x", 100.0 + PASSIVE_RETRY_AFTER - 0.001, [], 3) == NONE_UP
    assert next_attempt(pool, "x", 100.0 + PASSIVE_RETRY_AFTER, [], 3) in (0, 1)  # the clock brings them back
    tried, got = attempts(pool, retries=3, fails=set(), now=100.0 + PASSIVE_RETRY_AFTER)
    assert got in (0, 1) and tried == [got]


def test_backups_are_tried_when_the_primaries_failed():
    pool = BackendPool([A, Backend("10.0.0.9", 80, backup=True)], "roundrobin")
    assert attempts(pool, retries=2, fails={0}) == ([0, 1], 1)


def test_a_backend_marked_down_by_checks_is_never_attempted():
    pool = BackendPool([A, B], "roundrobin", HealthCheck(rise=1, fall=1))
    pool.check_result(0, False, 0.0)
    assert attempts(pool, retries=2, fails=set()) == ([1], 1)
    pool.check_result(1, False, 0.0)
    assert attempts(pool, retries=2, fails=set()) == ([], NONE_UP)

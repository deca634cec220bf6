"""BackendPool and SourceLimits: balancing, health, passive marking, backups, limits; a fake clock throughout."""

from collections import Counter

import pytest

from wiregate.relay.config import Backend, HealthCheck
from wiregate.relay.pool import PASSIVE_RETRY_AFTER, BackendPool, SourceLimits

A, B, C = Backend("10.0.0.1", 80), Backend("10.0.0.2", 80), Backend("10.0.0.3", 80)


def test_roundrobin_alternates_between_equal_backends():
    pool = BackendPool([A, B, C], "roundrobin")
    assert [pool.pick("x") for _ in range(6)] == [0, 1, 2, 0, 1, 2]


def test_weighted_roundrobin_is_smooth_and_proportional():
    pool = BackendPool([Backend("10.0.0.1", 80, weight=3), B], "roundrobin")
    picks = [pool.pick("x") for _ in range(8)]
    assert Counter(picks) == {0: 6, 1: 2}
    assert picks[:4].count(1) == 1  # interleaved, not 0,0,0,1


def test_leastconn_prefers_the_backend_with_fewer_open_connections():
    pool = BackendPool([A, B], "leastconn")
    pool.connect_ok(0, 0.0)
    pool.connect_ok(0, 0.0)
    pool.connect_ok(1, 0.0)
    assert pool.pick("x") == 1
    pool.released(0)
    pool.released(0)
    assert pool.pick("x") == 0


def test_source_hash_is_sticky_and_only_moves_clients_of_a_dead_backend():
    pool = BackendPool([A, B, C], "source", HealthCheck(rise=1, fall=1))
    clients = [f"198.51.100.{i}" for i in range(60)]
    before = {c: pool.pick(c) for c in clients}
    assert {pool.pick(c) for c in clients[:1] * 5} == {before[clients[0]]}
    assert len(set(before.values())) == 3  # spread over all backends
    pool.check_result(1, False, 1.0)
    after = {c: pool.pick(c) for c in clients}
    for c in clients:
        if before[c] != 1:
            assert after[c] == before[c]
        else:
            assert after[c] in (0, 2)


def test_health_checks_take_a_backend_down_after_fall_and_up_after_rise():
    pool = BackendPool([A, B], "roundrobin", HealthCheck(interval=2.0, rise=2, fall=3), now=0.0)
    assert pool.due_checks(0.0) == [0, 1]
    assert pool.due_checks(0.0) == []  # in progress
    assert pool.check_result(0, False, 0.1) is None
    assert pool.next_deadline() == pytest.approx(2.1)
    assert pool.due_checks(1.0) == []  # 1 still in progress, 0 not due before 2.1
    pool.check_result(1, True, 0.2)
    assert pool.due_checks(2.15) == [0]
    pool.check_result(0, False, 2.2)
    assert pool.check_result(0, False, 4.3) is False
    assert [pool.pick("x") for _ in range(3)] == [1, 1, 1]
    assert pool.check_result(0, True, 6.0) is None  # rise 2: one success is not enough
    assert pool.check_result(0, True, 8.0) is True
    assert {pool.pick("x") for _ in range(4)} == {0, 1}


def test_a_failed_check_between_successes_restarts_the_rise_count():
    pool = BackendPool([A], "roundrobin", HealthCheck(rise=2, fall=1))
    pool.check_result(0, False, 0.0)
    pool.check_result(0, True, 1.0)
    pool.check_result(0, False, 2.0)
    assert pool.check_result(0, True, 3.0) is None
    assert pool.check_result(0, True, 4.0) is True


def test_passive_failures_mark_down_after_fall_and_success_resets_the_count():
    pool = BackendPool([A, B], "roundrobin", HealthCheck(fall=2))
    pool.connect_failed(0, 1.0)
    pool.connect_ok(0, 1.5)  # resets the streak
    pool.connect_failed(0, 2.0)
    assert pool.states[0].up
    pool.connect_failed(0, 3.0)
    assert not pool.states[0].up
    assert pool.pick("x", 3.0) == 1


def test_without_checks_a_failed_backend_is_retried_after_a_pause():
    pool = BackendPool([A, B], "roundrobin", None)
    pool.connect_failed(0, 10.0)
    assert {pool.pick("x", 11.0) for _ in range(4)} == {1}
    assert pool.pick("x", 10.0 + PASSIVE_RETRY_AFTER, exclude=[1]) == 0
    pool.connect_ok(0, 21.0)
    assert pool.states[0].up


def test_backup_is_used_only_when_no_primary_is_up():
    backup = Backend("10.0.0.9", 80, backup=True)
    pool = BackendPool([A, B, backup], "roundrobin", HealthCheck(fall=1, rise=1))
    assert {pool.pick("x") for _ in range(10)} == {0, 1}
    pool.check_result(0, False, 1.0)
    assert {pool.pick("x") for _ in range(10)} == {1}
    pool.check_result(1, False, 1.0)
    assert {pool.pick("x") for _ in range(10)} == {2}
    pool.check_result(0, True, 2.0)
    assert {pool.pick("x") for _ in range(10)} == {0}


def test_nothing_is_picked_when_every_backend_is_down():
    pool = BackendPool([A], "leastconn", HealthCheck(fall=1))
    pool.check_result(0, False, 0.0)
    assert pool.pick("x", 100.0) is None


def test_exclude_skips_backends_already_tried():
    pool = BackendPool([A, B, C], "source")
    first = pool.pick("203.0.113.5")
    second = pool.pick("203.0.113.5", exclude=[first])
    assert second != first
    assert pool.pick("203.0.113.5", exclude=[0, 1, 2]) is None


def test_reload_keeps_health_and_open_counts_of_backends_still_configured():
    old = BackendPool([A, B], "leastconn", HealthCheck(fall=1))
    old.check_result(1, False, 0.0)
    old.connect_ok(0, 0.0)
    state_a = old.states[0]
    new = BackendPool([B, A, C], "leastconn", HealthCheck(fall=1), now=1.0, previous=old)
    assert new.states[1] is state_a and new.states[1].active == 1
    assert not new.states[0].up  # B stays down
    assert new.states[2].up
    BackendPool.release_state(state_a)  # a connection made before the reload ends
    assert new.states[1].active == 0


def test_source_limits_refuse_beyond_per_source_and_total():
    lim = SourceLimits(max_total=3, max_per_source=2)
    assert lim.admit("192.0.2.1") is None
    assert lim.admit("192.0.2.1") is None
    why = lim.admit("192.0.2.1")
    assert why and "max_per_source 2" in why
    assert lim.admit("192.0.2.2") is None
    assert lim.full()
    assert "limit of 3" in lim.admit("192.0.2.3")
    lim.release("192.0.2.1")
    assert not lim.full()
    assert lim.admit("192.0.2.1") is None
    lim.release("192.0.2.2")
    assert "192.0.2.2" not in lim.per_source

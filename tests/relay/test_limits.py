"""wiregate.limits: the out-of-descriptors back-off and the descriptor budget (sans-I/O, a fake clock)."""

from wiregate.limits import BACKOFF_MAX, BASE_FDS, LOG_EVERY, MIN_UDP_FLOWS, Backoff, fit_warning, needed, \
    udp_flow_caps


def test_backoff_grows_to_a_cap_and_resets_after_a_good_accept():
    b = Backoff()
    delays = [b.failed(float(i), "EMFILE") for i in range(8)]
    assert delays[0] == 0.05 and delays == sorted(delays) and delays[-1] == BACKOFF_MAX
    b.succeeded()
    assert b.failed(10.0) == 0.05


def test_backoff_logs_once_per_interval_with_counts():
    b = Backoff()
    lines = []
    now = 0.0
    for _ in range(1000):  # a second of failures every millisecond
        b.failed(now, "EMFILE")
        line = b.take_log(now)
        if line:
            lines.append(line)
        now += 0.001
    assert len(lines) == 1 and "EMFILE" in lines[0] and "1 failure(s)" in lines[0]
    now += LOG_EVERY
    b.failed(now, "EMFILE")
    line = b.take_log(now)
    assert line is not None and "1000 failure(s)" in line and "1001 in all" in line
    assert b.take_log(now + 2 * LOG_EVERY) is None  # nothing failed since: nothing to say


def test_udp_flows_keep_their_limit_when_everything_fits_and_a_quarter_when_not():
    assert udp_flow_caps(needed(100, 300), 100, [100, 200]) == [100, 200]
    limit = BASE_FDS + 4000
    caps = udp_flow_caps(limit, 10000, [4096, 4096])
    assert caps == [500, 500]  # 4000 / 4, shared in proportion
    assert udp_flow_caps(200, 10000, [4096]) == [MIN_UDP_FLOWS]
    assert fit_warning(needed(10, 10), 10, 10) is None
    warning = fit_warning(1024, 10000, 4096)
    assert warning is not None and "1024" in warning and "LimitNOFILE" in warning

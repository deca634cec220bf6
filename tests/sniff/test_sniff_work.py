"""CPU per sniff is bounded by its size limit, however the client cuts its TLS records and TCP segments (issue 11,
finding 4: a ClientHello sent as 1-byte TLS records was re-parsed whole on every read, quadratic CPU).

Work is counted, not timed: the Python lines the sniffing code runs (a tracer limited to wiregate's own files,
which aborts past a cap so that a quadratic parser fails fast), and the bytes the incremental readers examine."""

from __future__ import annotations

import sys

import pytest

from wiregate.ingress import Listener, Route
from wiregate.ingress.policy import Accepted, HeadPhase, Refused, Rules
from wiregate.sniff import HeadReader, HelloReader, SniffError, parse_client_hello
from wiregate.sniff.tls import DEFAULT_MAX_RECORDS
from wiregate.testing.tls_hello import client_hello, records, sni_ext

PEER, LOCAL = ("192.168.1.20", 50000), ("10.8.0.2", 443)


class TooMuchWork(Exception):
    pass


def lines_run(fn, cap: int) -> tuple[object, int]:
    """(fn(), Python lines executed in wiregate's files); TooMuchWork once `cap` lines ran."""
    count = 0

    def local(frame, event, arg):
        nonlocal count
        if event == "line":
            count += 1
            if count > cap:
                raise TooMuchWork(f"more than {cap} lines")
        return local

    def glob(frame, event, arg):
        return local if "/wiregate/" in frame.f_code.co_filename else None

    old = sys.gettrace()
    sys.settrace(glob)
    try:
        out = fn()
    finally:
        sys.settrace(old)
    return out, count


def phase() -> HeadPhase:
    lst = Listener(name="l", listen=("127.0.0.1", 0), routes=(
        Route("app", ("127.0.0.1", 9001), sni=("app.example.org",)),
        Route("web", ("127.0.0.1", 9002), host=("web.example.org",))))
    return HeadPhase(Rules.from_listener(lst), PEER, LOCAL, 0.0)


def feed(p: HeadPhase, data: bytes, step: int):
    for i in range(0, len(data), step):
        ev = p.receive_data(data[i:i + step], 1.0)
        if ev is not None:
            return ev, i + step
    return None, len(data)


def test_a_16k_hello_in_1_byte_records_is_refused_after_max_records_with_bounded_work():
    wire = records(client_hello(sni_ext(b"app.example.org"), pad=16000), size=1)
    assert len(wire) > 16000 * 6
    for step in (6, 1460):  # one record per read, and full TCP segments
        p = phase()
        (ev, used), lines = lines_run(lambda p=p, step=step: feed(p, wire, step), cap=200_000)
        assert isinstance(ev, Refused) and ev.reason == "bad_request" and "records" in ev.detail
        assert used <= (DEFAULT_MAX_RECORDS + 1) * 6 + step  # refused as soon as the record limit passed
        assert lines < 40_000, lines


def test_a_hello_over_many_small_records_is_read_with_work_linear_in_its_size():
    msg = client_hello(sni_ext(b"app.example.org"), pad=3000)
    wire = records(msg, size=len(msg) // 60 + 1)  # 60 records: many, but a client may do this
    works = []
    for step in (1, 7, len(wire)):
        p = phase()
        (ev, _), lines = lines_run(lambda p=p, step=step: feed(p, wire, step), cap=2_000_000)
        assert isinstance(ev, Accepted) and ev.route.name == "app" and ev.data == wire
        works.append(lines)
    # byte by byte costs a bounded number of lines per byte, not per byte buffered so far
    assert works[0] < 60 * len(wire), works


def test_hello_reader_examines_each_byte_once_and_matches_the_one_shot_parser():
    msg = client_hello(sni_ext(b"app.example.org"), pad=16000)
    wire = records(msg, size=300)
    r = HelloReader(max_records=1000)
    got = None
    for i in range(len(wire)):
        got = r.feed(wire[i:i + 1])
        if got is not None:
            break
    assert got is not None and got == parse_client_hello(wire)
    assert r.examined == len(wire) and r.records == len(wire) // 305 + 1


def test_http_head_sent_byte_by_byte_is_searched_in_linear_work():
    raw = b"GET / HTTP/1.1\r\nHost: web.example.org\r\n" + b"X-Pad: " + b"a" * 16000 + b"\r\n\r\n"
    r = HeadReader(max_head=16384)
    head = None
    for i in range(len(raw)):
        head = r.feed(raw[i:i + 1])
        if head is not None:
            break
    assert head is not None and head.length == len(raw)
    assert r.examined <= 5 * len(raw), r.examined  # (3 bytes of overlap per read); quadratic: ~len(raw)**2 / 2
    p = phase()
    (ev, _), lines = lines_run(lambda: feed(p, raw, 1), cap=2_000_000)
    assert isinstance(ev, Accepted) and ev.route.name == "web"
    assert lines < 40 * len(raw), lines


def test_the_record_limit_is_a_parameter_and_counts_records_not_bytes():
    wire = records(client_hello(sni_ext(b"app.example.org")), size=8)
    n = -(-len(client_hello(sni_ext(b"app.example.org"))) // 8)
    assert HelloReader(max_records=n).feed(wire) is not None
    with pytest.raises(SniffError, match=f"more than {n - 1} records"):
        HelloReader(max_records=n - 1).feed(wire)

"""The partition runner with an in-memory attempt function (the HTTP side is tested elsewhere)."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time

from tap_mixpanel_parallel.export.partitions import PlannedPartition
from tap_mixpanel_parallel.export.runner import PartitionRunner, Spooled
from tap_mixpanel_parallel.http.errors import PartitionRejected, RunFatal, StreamCut, TransientError
from tap_mixpanel_parallel.http.limiter import RateLimiter
from tap_mixpanel_parallel.run.dates import split_date_range

LOG = logging.getLogger("test-runner")


def plan(n):
    parts = split_date_range(dt.date(2024, 1, 1), dt.date(2024, 1, 1) + dt.timedelta(n - 1), 1)
    return [PlannedPartition(p, retry_of_failed=False) for p in parts]


def runner(attempt, workers=4, retries=3):
    return PartitionRunner(
        attempt=attempt,
        limiter=RateLimiter(max_concurrent=workers, per_second=1000, per_hour=100000),
        max_workers=workers,
        max_retries=retries,
        logger=LOG,
        backoff_factor=0.01,
    )


def test_results_come_back_in_plan_order_with_their_spools():
    def attempt(planned, sink, stop):
        day = planned.partition.from_date.day
        time.sleep(0.05 * ((10 - day) % 4))  # later partitions often finish first
        sink.write(f"{day}\n".encode())
        return Spooled(1)

    results = []
    for r in runner(attempt).run(plan(10)):
        assert r.spool is not None
        results.append((r.index, r.spool.read_text()))
    assert results == [(i, f"{i + 1}\n") for i in range(10)]


def test_a_retry_starts_the_spool_over():
    tries = {}

    def attempt(planned, sink, stop):
        key = planned.partition
        tries[key] = tries.get(key, 0) + 1
        if tries[key] < 3:
            sink.write(b"partial line from a cut stream\n")
            raise StreamCut("cut")
        sink.write(b"whole\n")
        return Spooled(1)

    seen = [(r.ok, r.attempts, r.spool.read_bytes()) for r in runner(attempt).run(plan(1))]
    assert seen == [(True, 3, b"whole\n")]


def test_spool_is_truncated_between_attempts():
    calls = []

    def attempt(planned, sink, stop):
        calls.append(sink.tell())
        sink.write(b"x" * 100)
        if len(calls) == 1:
            raise TransientError("reset")
        return Spooled(1)

    spools = [r.spool.read_bytes() for r in runner(attempt).run(plan(1))]
    assert calls == [0, 0]
    assert spools == [b"x" * 100]


def test_retries_run_out_and_rejections_are_not_retried():
    def attempt(planned, sink, stop):
        if planned.partition.from_date.day == 1:
            raise TransientError("HTTP 503")
        raise PartitionRejected("HTTP 400")

    results = list(runner(attempt, retries=2).run(plan(2)))
    assert [(r.status.value, r.attempts, r.error) for r in results] == [
        ("failed", 3, "HTTP 503"),
        ("failed", 1, "HTTP 400"),
    ]


def test_fatal_error_ends_the_run():
    started = []

    def attempt(planned, sink, stop):
        started.append(planned.partition)
        if planned.partition.from_date.day == 2:
            raise RunFatal("HTTP 401")
        time.sleep(0.01)
        return Spooled(0)

    results = list(runner(attempt, workers=1).run(plan(30)))
    assert [r.status.value for r in results] == ["ok", "fatal"]
    assert len(started) <= 3


def test_concurrency_and_lookahead_are_bounded():
    lock = threading.Lock()
    active = []
    peak = [0]
    started = []

    def attempt(planned, sink, stop):
        with lock:
            active.append(1)
            started.append(planned.partition)
            peak[0] = max(peak[0], len(active))
        time.sleep(0.3 if planned.partition.from_date.day == 1 else 0.01)
        with lock:
            active.pop()
        return Spooled(0)

    run = runner(attempt, workers=3).run(plan(20))
    first = next(run)
    # while partition 1 was slow, at most 2 * workers partitions were started in all
    assert first.index == 0
    assert len(started) <= 6
    rest = list(run)
    assert len(rest) == 19
    assert peak[0] == 3


def test_stop_abandons_in_flight_work_promptly():
    def attempt(planned, sink, stop):
        stop.wait(30)
        raise StreamCut("stopping")

    r = runner(attempt)
    threading.Timer(0.3, r.stop).start()
    began = time.monotonic()
    assert list(r.run(plan(8))) == []
    # liveness, not speed: the attempts would otherwise block for 30 s
    assert time.monotonic() - began < 15
    assert r.interrupted


def test_partitions_larger_than_the_spool_bound_all_finish_in_order():
    chunk = b"x" * 999 + b"\n"

    def attempt(planned, sink, stop):
        for _ in range(3000):  # ~3 MB a partition, three times the bound
            sink.write(chunk)
        return Spooled(3000)

    r = PartitionRunner(
        attempt=attempt,
        limiter=RateLimiter(max_concurrent=4, per_second=1000, per_hour=100000),
        max_workers=4,
        max_retries=0,
        logger=LOG,
        max_spool_bytes=1 << 20,
    )
    seen = []
    for result in r.run(plan(6)):
        seen.append((result.index, result.ok, result.spool.stat().st_size))
        # the head partition alone, plus at most one 1 MiB buffer per other worker
        assert r.budget.total <= 3_000_000 + 3 * (1 << 20)
    assert seen == [(i, True, 3_000_000) for i in range(6)]
    assert r.budget.total == 0


def test_a_stream_waiting_its_turn_fetches_past_the_window_up_to_the_spool_bound():
    # 100 KB a partition against a 350 KB bound: four fit before it is full, far fewer than the
    # twenty planned and more than the look-ahead window of two (one worker).
    fetched = []

    def attempt(planned, sink, stop):
        sink.write(b"x" * 99_999 + b"\n")
        fetched.append(planned.partition.from_date)
        return Spooled(1)

    r = PartitionRunner(
        attempt=attempt,
        limiter=RateLimiter(max_concurrent=1, per_second=1000, per_hour=100000),
        max_workers=1,
        max_retries=0,
        logger=LOG,
        max_spool_bytes=350_000,
    )
    r.start(plan(20), ahead=True)
    try:
        deadline = time.monotonic() + 30
        previous = -1
        while time.monotonic() < deadline:  # the main thread writing out another stream
            r.pump()
            time.sleep(0.05)
            if len(fetched) == previous and not r._units.pending:
                break
            previous = len(fetched)
        assert len(fetched) == 4, "fetched ahead until the spool bound, and no further"
        assert not r._units.pending, "a partition was started with no room to spool it"
        results = list(r.results())  # its turn: every partition, in order
    finally:
        r.close()
    assert [result.index for result in results] == list(range(20))
    assert all(result.ok for result in results)

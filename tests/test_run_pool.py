"""The one pool, the in-order hand-over, the run loop, and the one retry loop's hooks.

Real threads and real waits on events; no timing is asserted beyond liveness bounds far above
what the work needs.
"""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tap_mixpanel_parallel.http.errors import (
    PartitionRejected,
    RateLimited,
    StreamCut,
    TransientError,
)
from tap_mixpanel_parallel.http.limiter import RateLimiter, StopRequested
from tap_mixpanel_parallel.http.retry import SplitInstead, with_retries
from tap_mixpanel_parallel.run.pool import (
    InOrder,
    RunLoop,
    WorkerPool,
    in_order,
    workers_finished,
)


@settings(max_examples=15, deadline=None)
@given(
    delays=st.lists(st.floats(min_value=0, max_value=0.01), min_size=0, max_size=25),
    workers=st.integers(min_value=1, max_value=4),
)
def test_in_order_hands_back_every_unit_once_in_order_whatever_finishes_first(delays, workers):
    loop = RunLoop()
    stop = threading.Event()

    def run(index, delay):
        time.sleep(delay)
        return index * 10

    got = list(in_order(loop, delays, run, workers=workers, stop=stop))
    assert got == [(delay, i * 10) for i, delay in enumerate(delays)]


def test_a_bounded_window_starts_no_more_than_it_while_the_head_is_slow():
    loop = RunLoop()
    release = threading.Event()
    started = []

    def run(index, _):
        started.append(index)
        if index == 0:
            release.wait(30)
        return index

    pool = WorkerPool(3, loop.wake)
    units = InOrder(list(range(20)), run, pool, window=4)
    units.bounded = True
    try:
        for _ in range(20):
            units.pump()
            time.sleep(0.01)
        assert units.started == 4  # the head and three behind it, however long the head takes
        release.set()
        taken = []
        while len(taken) < 20:
            loop.wake.wait(0.2)
            loop.wake.clear()
            units.pump()
            while units.ready:
                taken.append(units.take()[1].result())
        assert taken == list(range(20))
    finally:
        release.set()
        pool.close()


def test_an_unbounded_window_keeps_starting_as_units_finish_until_may_start_says_no():
    loop = RunLoop()
    pool = WorkerPool(2, loop.wake)
    release = threading.Event()
    allowed = 7

    def run(index, _):
        release.wait(30)
        return index

    units = InOrder(
        list(range(20)), run, pool, window=2, may_start=lambda _: units.started < allowed
    )
    try:
        units.pump()
        # no request starts before a worker is free to read it through
        assert units.started == 2
        release.set()
        deadline = time.monotonic() + 30
        while len(units.ready) < allowed and time.monotonic() < deadline:
            loop.wake.wait(0.2)
            loop.wake.clear()
            units.pump()
        # not bound by the window while nobody takes results: only by may_start
        assert units.started == allowed
        assert [index for index, _ in units.ready] == list(range(allowed))
    finally:
        release.set()
        pool.close()


class _Runner:
    def __init__(self):
        self.stopped = 0
        self.closed = 0
        self.pumped = 0

    def pump(self):
        self.pumped += 1

    def stop(self):
        self.stopped += 1

    def close(self):
        self.closed += 1


def test_the_run_loop_stops_every_stream_and_one_added_later_at_once():
    loop = RunLoop()
    assert not loop.started
    first, hooks = _Runner(), []
    loop.add(first)
    loop.on_stop(lambda: hooks.append("api"))
    assert loop.started
    loop.stop()
    assert first.stopped == 1 and hooks == ["api"]
    late = _Runner()
    loop.add(late)
    assert late.stopped == 1
    loop.on_stop(lambda: hooks.append("late"))
    assert hooks == ["api", "late"]
    loop.close()
    assert first.closed == late.closed == 1
    loop.pump()
    assert first.pumped == 0  # closed runners are no longer fed


def test_waiting_for_one_stream_keeps_every_other_runner_fed():
    loop = RunLoop()
    other = _Runner()
    loop.add(other)
    ticks = []
    loop.wait_for(lambda: len(ticks.append(1) or ticks) > 3)
    assert other.pumped >= 4


def test_closing_a_pool_never_waits_for_a_stuck_worker():
    loop = RunLoop()
    stuck = threading.Event()
    pool = WorkerPool(2, loop.wake)
    futures = [pool.submit(stuck.wait, 30) for _ in range(4)]
    began = time.monotonic()
    pool.close()
    assert time.monotonic() - began < 5  # liveness: the workers block for 30 s
    assert all(f.cancelled() for f in futures[2:])  # queued, never started
    assert not workers_finished(0.1)
    stuck.set()
    assert workers_finished(10)


def _limiter():
    return RateLimiter(max_concurrent=4, per_second=1000, per_hour=100000, bare_429_seconds=0.01)


def _retries(attempt, **hooks):
    """with_retries with quick waits; ``hooks`` set the rest."""
    hooks = {
        "limiter": _limiter(),
        "stop": threading.Event(),
        "max_retries": 5,
        "on_retry": lambda *_: None,
        "max_throttle_streak": 10,
        "backoff_factor": 0.001,
        **hooks,
    }
    return with_retries(attempt, **hooks)


def test_the_retry_loop_stops_before_an_attempt_once_its_runner_is_halted():
    calls = []
    halted = threading.Event()

    def attempt():
        calls.append(1)
        halted.set()  # e.g. another partition hit a fatal error meanwhile
        raise TransientError("reset")

    with pytest.raises(StopRequested):
        _retries(attempt, halted=halted.is_set)
    assert calls == [1]


def test_429s_are_told_to_on_throttle_and_give_up_after_the_streak():
    throttles, retries = [], []

    def attempt():
        raise RateLimited("HTTP 429", retry_after=None)

    with pytest.raises(RateLimited):
        _retries(
            attempt,
            max_retries=0,
            on_retry=lambda *a: retries.append(a),
            max_throttle_streak=2,
            on_throttle=lambda exc, throttle: throttles.append(throttle.streak),
        )
    assert throttles == [1, 2]
    assert retries == []  # 429s spend no retry


def test_a_success_after_retries_returns_its_value():
    outcomes = iter([TransientError("cut"), TransientError("reset"), "whole"])

    def attempt():
        value = next(outcomes)
        if isinstance(value, Exception):
            raise value
        return value

    seen = []
    assert (
        _retries(attempt, max_retries=2, on_retry=lambda number, exc, delay: seen.append(number))
        == "whole"
    )
    assert seen == [1, 2]


def test_split_ends_the_tries_when_the_caller_would_rather_fetch_pieces():
    # a cut range: retried whole once (split says no), then given to the caller to split
    calls, asked = [], []

    def attempt():
        calls.append(1)
        raise StreamCut("export terminated early")

    def split(exc, failures):
        asked.append((type(exc).__name__, failures))
        return failures == 2

    with pytest.raises(SplitInstead) as raised:
        _retries(attempt, split=split)
    assert calls == [1, 1]
    assert asked == [("StreamCut", 1), ("StreamCut", 2)]
    assert raised.value.error.message == "export terminated early"


def test_split_is_not_asked_once_the_retries_are_spent_or_the_error_cannot_be_retried():
    asked = []

    def split(exc, failures):
        asked.append(failures)
        return True

    for error, retries in ((StreamCut("cut"), 0), (PartitionRejected("bad request"), 3)):

        def attempt(error=error):
            raise error

        with pytest.raises(type(error)):
            _retries(attempt, max_retries=retries, split=split)
    assert asked == []

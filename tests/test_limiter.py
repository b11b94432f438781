"""The shared limiter, on a fake clock so the checks do not depend on machine speed."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tap_mixpanel_parallel.http.limiter import (
    BARE_429_GROWTH,
    RETRY_AFTER_CAP_SECONDS,
    WINDOW_MARGIN_SECONDS,
    RateLimiter,
    SlidingWindow,
    StopRequested,
    Throttle,
    per_second_window,
    throttle_seconds,
)


class FakeClock:
    """Time that moves only when the limiter waits (its Condition.wait is patched)."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def make(clock, **kw):
    limiter = RateLimiter(
        max_concurrent=kw.get("max_concurrent", 10),
        per_second=kw.get("per_second", 3),
        per_hour=kw.get("per_hour", 60),
        clock=clock,
        on_wait=kw.get("on_wait"),
    )

    def fake_wait(timeout=None):
        clock.now += timeout
        return False

    limiter._lock.wait = fake_wait
    return limiter


def test_sliding_window():
    w = SlidingWindow(2, 1.0)
    assert w.wait_time(0.0) == 0
    w.record(0.0)
    w.record(0.5)
    assert w.wait_time(0.6) == pytest.approx(0.4)
    assert w.wait_time(1.0) == 0


def test_per_second_windows():
    assert (per_second_window(3).limit, per_second_window(3).seconds) == (
        3,
        1 + WINDOW_MARGIN_SECONDS,
    )
    assert per_second_window(2.5).limit == 2
    slow = per_second_window(0.5)
    assert (slow.limit, slow.seconds) == (1, 2 + WINDOW_MARGIN_SECONDS)


def test_starts_never_exceed_the_per_second_budget():
    clock = FakeClock()
    limiter = make(clock, per_second=3, per_hour=1000)
    stop = threading.Event()
    starts = []
    for _ in range(20):
        with limiter.slot(stop):
            starts.append(clock.now)
    for t in starts:
        assert sum(1 for s in starts if t <= s < t + 1.0) <= 3
    assert limiter.started == 20


def test_hourly_budget_waits_and_announces():
    clock = FakeClock()
    waits = []
    limiter = make(clock, per_second=100, per_hour=5, on_wait=lambda s, why: waits.append(why))
    stop = threading.Event()
    for _ in range(6):
        with limiter.slot(stop):
            pass
    assert clock.now >= 3600
    assert waits and waits[0] == "per-hour"
    assert len(waits) == 1, "a long wait is announced once, not every half second"


def test_a_429_pause_holds_every_request():
    clock = FakeClock()
    limiter = make(clock, per_second=100, per_hour=1000)
    limiter.throttled(30)
    with limiter.slot(threading.Event()):
        assert clock.now >= 30


def test_stop_interrupts_waits():
    clock = FakeClock()
    limiter = make(clock, per_second=100, per_hour=1000)
    limiter.throttled(30)
    stop = threading.Event()
    stop.set()
    with pytest.raises(StopRequested), limiter.slot(stop):
        pass


def peak_concurrency(limiter, threads=8, hold=0.05):
    """Run threads through the limiter, each holding its slot a moment; the most at once."""
    stop = threading.Event()
    lock = threading.Lock()
    inside = []
    peak = []

    def worker():
        with limiter.slot(stop):
            with lock:
                inside.append(1)
                peak.append(len(inside))
            time.sleep(hold)
            with lock:
                inside.pop()

    running = [threading.Thread(target=worker) for _ in range(threads)]
    for t in running:
        t.start()
    for t in running:
        t.join(10)
    return max(peak)


def test_concurrency_is_bounded():
    assert peak_concurrency(RateLimiter(max_concurrent=2, per_second=1000, per_hour=100000)) == 2


def test_429_halves_concurrency_once_per_pause_and_success_grows_it_back():
    clock = FakeClock()
    limiter = make(clock, max_concurrent=8, per_second=1000, per_hour=100000)
    limiter.throttled(2.0)
    assert limiter.concurrency == 4
    limiter.throttled(2.0)  # another 429 from a request already in flight: same episode
    assert limiter.concurrency == 4
    clock.now += 3
    limiter.throttled(2.0)
    assert limiter.concurrency == 2
    for _ in range(2):
        limiter.succeeded()
    assert limiter.concurrency == 3
    for _ in range(3 + 4 + 5 + 6 + 7 + 8):
        limiter.succeeded()
    assert limiter.concurrency == 8, "never above max_concurrent"
    clock.now += 10
    for _ in range(5):
        limiter.throttled(0.0)
        clock.now += 1
    assert limiter.concurrency == 1, "never below one"


def test_the_lowered_limit_holds_requests_back():
    limiter = RateLimiter(max_concurrent=4, per_second=1000, per_hour=100000)
    limiter.throttled(0.0)
    assert limiter.concurrency == 2
    assert peak_concurrency(limiter) == 2


@given(
    retry_after=st.none() | st.floats(0, 1e9),
    streak=st.integers(1, 1000),
    first=st.floats(0.01, 1000),
)
def test_throttle_seconds_grow_with_the_streak_and_stay_bounded(retry_after, streak, first):
    seconds = throttle_seconds(retry_after, streak, first)
    if retry_after is not None:
        assert seconds == min(retry_after, RETRY_AFTER_CAP_SECONDS)
    else:
        assert first <= seconds <= first * BARE_429_GROWTH
        assert seconds <= throttle_seconds(None, streak + 1, first)


def test_a_bare_429_pause_doubles_per_pause_in_a_row_and_resets_on_success():
    clock = FakeClock()
    limiter = make(clock, per_second=100, per_hour=1000)
    pauses = []
    for _ in range(6):
        throttle = limiter.throttled(None)
        pauses.append((throttle.seconds, throttle.streak))
        clock.now += throttle.seconds  # the pause passes; the next 429 starts a new one
    assert pauses == [(30, 1), (60, 2), (120, 3), (240, 4), (300, 5), (300, 6)]
    same_pause = limiter.throttled(None)  # a 429 from a request already in flight
    assert same_pause.streak == 7
    assert limiter.throttled(None).streak == 7
    limiter.succeeded()
    clock.now += 1000
    assert limiter.throttled(None) == Throttle(30, 1)


def test_a_huge_retry_after_is_capped_and_says_so():
    limiter = make(FakeClock(), per_second=100, per_hour=1000)
    assert limiter.throttled(999999) == Throttle(RETRY_AFTER_CAP_SECONDS, 1, 999999)

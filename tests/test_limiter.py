"""The shared limiter, on a fake clock so the checks do not depend on machine speed."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tap_mixpanel_parallel.http.limiter import (
    ANNOUNCE_WAIT_SECONDS,
    BARE_429_GROWTH,
    RECHECK_SECONDS,
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


def virtual(*, max_concurrent=10, per_second=100.0, per_hour=1000, bare=30.0, at=None):
    """A limiter on a clock that moves only while it waits, through its own ``wait`` hook.

    Returns the limiter, the clock, each sleep's length, and each announcement (seconds,
    reason). ``at(now)`` runs after every sleep, under the limiter's lock, as another worker
    taking a 429 at that moment would.
    """
    clock = FakeClock()
    sleeps = []
    announced = []

    def wait(condition, seconds):
        sleeps.append(seconds)
        clock.now += seconds
        if at is not None:
            at(clock.now)
        return False

    limiter = RateLimiter(
        max_concurrent=max_concurrent,
        per_second=per_second,
        per_hour=per_hour,
        clock=clock,
        on_wait=lambda seconds, why: announced.append((seconds, why)),
        wait=wait,
        bare_429_seconds=bare,
    )
    return limiter, clock, sleeps, announced


@given(rate=st.floats(0.05, 20), starts=st.integers(2, 40))
# float rounding once made a full window answer "wait 0" at 33.000000000000014 s
@example(rate=1.0, starts=32)
def test_the_per_second_window_never_lets_more_than_the_rate_start_in_a_second(rate, starts):
    window = per_second_window(rate)
    now = 0.0
    times = []
    for _ in range(starts):
        while (wait := window.wait_time(now)) > 0:
            now += wait
        window.record(now)
        times.append(now)
    allowed = max(1, int(rate))
    for t in times:
        assert sum(1 for s in times if t <= s < t + 1.0) <= allowed
    # and no start waits longer than the rate asks: a full second's worth goes out at once
    assert times[: min(allowed, starts)] == [0.0] * min(allowed, starts)
    if rate < 1:
        assert times[1] == pytest.approx(1 / rate + WINDOW_MARGIN_SECONDS)


@given(first=st.floats(0.5, 1000))
def test_a_bare_429_pauses_for_the_configured_wait(first):
    limiter, _, _, _ = virtual(bare=first)
    assert limiter.throttled(None) == Throttle(first, 1)


@given(
    retry_after=st.sampled_from([0.0, RETRY_AFTER_CAP_SECONDS])
    | st.floats(0, 10 * RETRY_AFTER_CAP_SECONDS)
)
def test_only_a_retry_after_over_the_cap_is_reported_as_capped(retry_after):
    limiter, _, _, _ = virtual()
    throttle = limiter.throttled(retry_after)
    assert throttle.seconds == min(retry_after, RETRY_AFTER_CAP_SECONDS)
    assert throttle.capped_from == (retry_after if retry_after > RETRY_AFTER_CAP_SECONDS else None)


@given(
    max_concurrent=st.integers(1, 40),
    outcomes=st.lists(st.sampled_from(["429", "ok"]), max_size=300),
)
def test_the_limit_halves_per_429_and_grows_by_one_per_run_of_as_many_successes(
    max_concurrent, outcomes
):
    """Each 429 here is its own pause (Retry-After 0), so each one halves the limit."""
    limiter, _, _, _ = virtual(max_concurrent=max_concurrent)
    run = 0  # successes since the limit last changed
    for outcome in outcomes:
        before = limiter.concurrency
        if outcome == "429":
            limiter.throttled(0.0)
            assert limiter.concurrency == max(1, before // 2)
            run = 0
        else:
            limiter.succeeded()
            run = 0 if before == max_concurrent else run + 1
            grown = run == before
            assert limiter.concurrency == before + grown
            if grown:
                run = 0
        assert type(limiter.concurrency) is int
        assert 1 <= limiter.concurrency <= max_concurrent


def test_a_long_wait_is_announced_once_with_its_length_and_reason_and_ends_on_time():
    limiter, clock, sleeps, announced = virtual(per_hour=5)
    stop = threading.Event()
    for _ in range(5):
        with limiter.slot(stop):
            assert clock.now == 0
    with limiter.slot(stop):
        assert clock.now == pytest.approx(3600 + WINDOW_MARGIN_SECONDS)
    assert len(announced) == 1
    assert announced[0][0] == pytest.approx(3600 + WINDOW_MARGIN_SECONDS)
    assert announced[0][1] == "per-hour"
    # a stop is noticed within a recheck however long the wait
    assert max(sleeps) <= RECHECK_SECONDS


def test_a_slow_per_second_budget_and_a_429_pause_are_announced_by_name():
    limiter, _, _, announced = virtual(per_second=0.1)
    stop = threading.Event()
    for _ in range(2):
        with limiter.slot(stop):
            pass
    assert announced == [(pytest.approx(1 / 0.1 + WINDOW_MARGIN_SECONDS), "per-second")]
    limiter, _, _, announced = virtual()
    limiter.throttled(30)
    with limiter.slot(stop):
        pass
    assert announced == [(30, "429 pause")]


@pytest.mark.parametrize(
    ("pause", "logged"),
    [(ANNOUNCE_WAIT_SECONDS, False), (ANNOUNCE_WAIT_SECONDS + 0.5, True)],
)
def test_only_waits_longer_than_the_threshold_are_announced(pause, logged):
    limiter, clock, _, announced = virtual()
    limiter.throttled(pause)
    with limiter.slot(threading.Event()):
        assert clock.now == pause
    assert announced == ([(pause, "429 pause")] if logged else [])


@pytest.mark.parametrize(("later_by", "again"), [(1.0, False), (1.5, True)])
def test_a_pause_moved_later_is_announced_again_only_when_by_more_than_a_second(later_by, again):
    """A 429 from a request in flight, 10 s into a 30 s pause, moves its end later."""

    def another_429(now):
        if now == 10:
            limiter.throttled(30 - now + later_by)

    limiter, clock, _, announced = virtual(at=another_429)
    limiter.throttled(30)
    with limiter.slot(threading.Event()):
        assert clock.now == 30 + later_by
    expected = [(30, "429 pause")] + ([(20 + later_by, "429 pause")] if again else [])
    assert announced == expected


def test_a_429_pause_and_a_budget_asking_the_same_wait_are_announced_as_the_429():
    """On a tie the announcement names the 429: Mixpanel's own answer, logged just before."""
    limiter, clock, _, announced = virtual(per_second=0.1)
    stop = threading.Event()
    with limiter.slot(stop):
        pass
    window_wait = per_second_window(0.1).seconds  # the per-second budget's wait from now
    limiter.throttled(window_wait)
    with limiter.slot(stop):
        assert clock.now == window_wait
    assert announced == [(window_wait, "429 pause")]

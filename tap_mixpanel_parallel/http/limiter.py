"""One rate limiter shared by every worker.

Mixpanel counts queries per project: at most 100 at once, 3 a second, 60 an hour, and answers
429 past that. Every attempt, retries included, passes through :meth:`RateLimiter.slot`, so
the budgets hold for the whole run however many workers retry at the same moment.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

#: A bare 429 (no ``Retry-After``) waits this long by default (setting ``rate_limit_wait``),
#: doubled for each pause in a row without a successful request in between, up to
#: ``BARE_429_GROWTH`` times as long: Mixpanel's budgets (per second, per hour, concurrent
#: queries shared with other clients) take tens of seconds to recover, and Mixpanel's own
#: export client waits 30 s and more.
BARE_429_FIRST_SECONDS = 30.0
BARE_429_GROWTH = 10.0
#: The longest ``Retry-After`` honoured as sent; a longer one is cut to this (and logged), so a
#: proxy's ``Retry-After: 999999`` cannot park the run for days.
RETRY_AFTER_CAP_SECONDS = 600.0

#: A wait longer than this is announced (``on_wait``): the hourly budget, a long 429 pause.
ANNOUNCE_WAIT_SECONDS = 5.0
#: The longest a waiting thread sleeps before it looks again, so a stop is seen this soon.
RECHECK_SECONDS = 0.5

# The server counts arrivals, not our grants; a grant may reach it a little late after a busy
# moment on the machine, so each window is held a little longer than its nominal length.
WINDOW_MARGIN_SECONDS = 0.1


class StopRequested(Exception):
    """The run is stopping; the caller must not start a request."""


class SlidingWindow:
    """At most ``limit`` events in any span of ``seconds``."""

    def __init__(self, limit: int, seconds: float) -> None:
        self.limit = limit
        self.seconds = seconds
        self._times: deque[float] = deque()

    def wait_time(self, now: float) -> float:
        """Seconds until one more event fits (0 when it fits now).

        An event leaves the window when ``its time + seconds <= now``: the same sum the wait is
        computed from, so float rounding can never give a wait of 0 for a window still full.
        """
        while self._times and self._times[0] + self.seconds <= now:
            self._times.popleft()
        if len(self._times) < self.limit:
            return 0.0
        return self._times[0] + self.seconds - now

    def record(self, now: float) -> None:
        """Count an event at ``now``."""
        self._times.append(now)


def per_second_window(rate: float) -> SlidingWindow:
    """A window that keeps starts at or under ``rate`` in every second.

    Rates of 1 and more allow ``floor(rate)`` starts per second; lower rates space single
    starts ``1/rate`` seconds apart.
    """
    if rate >= 1:
        return SlidingWindow(int(rate), 1.0 + WINDOW_MARGIN_SECONDS)
    return SlidingWindow(1, 1.0 / rate + WINDOW_MARGIN_SECONDS)


@dataclass(frozen=True)
class Throttle:
    """One 429 as the limiter took it."""

    #: How long every worker now waits, from this 429 on.
    seconds: float
    #: Pauses in a row without a successful request in between (1 for the first).
    streak: int
    #: The ``Retry-After`` Mixpanel sent, when it was longer than the cap.
    capped_from: float | None = None


def throttle_seconds(
    retry_after: float | None, streak: int, first: float = BARE_429_FIRST_SECONDS
) -> float:
    """The pause for a 429: its ``Retry-After`` up to the cap, else a wait that grows.

    ``streak`` counts pauses in a row (1 for the first); a bare 429 waits ``first`` seconds,
    doubled per pause in a row, never more than ``BARE_429_GROWTH`` times ``first``.
    """
    if retry_after is not None:
        return min(max(retry_after, 0.0), RETRY_AFTER_CAP_SECONDS)
    doublings = min(max(streak - 1, 0), 16)
    return min(first * 2.0**doublings, first * BARE_429_GROWTH)


def _condition_wait(condition: threading.Condition, seconds: float) -> object:
    return condition.wait(seconds)


class RateLimiter:
    """Concurrency limit plus per-second and per-hour request budgets, shared by all workers.

    The concurrency limit is a semaphore whose size adapts: a 429 halves it (at most once per
    pause, so a burst of 429s from requests already in flight counts once) and each run of
    successful requests as long as the limit grows it back by one, up to ``max_concurrent``.
    Mixpanel's concurrency cap is per project and may be shared with other clients, so
    ``max_workers`` is a ceiling, not a promise.

    ``clock`` and ``wait`` (how a thread waits on the limiter's condition) are the limiter's
    only contact with real time, so tests can run its pauses of minutes on a virtual clock.
    """

    def __init__(
        self,
        *,
        max_concurrent: int,
        per_second: float,
        per_hour: int,
        clock: Callable[[], float] = time.monotonic,
        on_wait: Callable[[float, str], None] | None = None,
        wait: Callable[[threading.Condition, float], object] = _condition_wait,
        bare_429_seconds: float = BARE_429_FIRST_SECONDS,
    ) -> None:
        self._lock = threading.Condition()
        self._max_concurrent = max_concurrent
        self.concurrency = max_concurrent
        self._active = 0
        self._successes = 0
        self._windows = {
            "per-second": per_second_window(per_second),
            "per-hour": SlidingWindow(per_hour, 3600.0 + WINDOW_MARGIN_SECONDS),
        }
        self._paused_until = 0.0
        self._streak = 0
        self._bare_429_seconds = bare_429_seconds
        self._clock = clock
        self._wait = wait
        self._on_wait = on_wait
        self._announced_until = 0.0
        self.started = 0

    def throttled(self, retry_after: float | None) -> Throttle:
        """Mixpanel said 429: pause everyone and halve the concurrency limit.

        A 429 that arrives during a pause (from a request already in flight) belongs to the
        same episode: it neither halves the limit again nor lengthens the streak.
        """
        with self._lock:
            now = self._clock()
            if now >= self._paused_until:
                self.concurrency = max(1, self.concurrency // 2)
                self._successes = 0
                self._streak += 1
            seconds = throttle_seconds(retry_after, self._streak, self._bare_429_seconds)
            self._paused_until = max(self._paused_until, now + seconds)
            self._lock.notify_all()
            capped = retry_after if retry_after is not None and retry_after > seconds else None
            return Throttle(self._paused_until - now, self._streak, capped)

    def succeeded(self) -> None:
        """A request went through: after as many as the limit, allow one more at once."""
        with self._lock:
            self._streak = 0
            if self.concurrency >= self._max_concurrent:
                return
            self._successes += 1
            if self._successes >= self.concurrency:
                self.concurrency += 1
                self._successes = 0
                self._lock.notify_all()

    @contextmanager
    def slot(self, stop: threading.Event, *, charge: bool = True) -> Iterator[None]:
        """Block until a request may start, and hold a concurrency slot while it runs.

        ``charge`` False skips the per-second and per-hour budgets (a 429 pause still holds):
        for requests the API is not thought to count, such as further pages of an engage
        session.
        """
        with self._lock:
            while self._active >= self.concurrency:
                if stop.is_set():
                    raise StopRequested
                self._wait(self._lock, 0.2)
            self._active += 1
        try:
            self._take_budget(stop, charge=charge)
            yield
        finally:
            with self._lock:
                self._active -= 1
                self._lock.notify_all()

    def _take_budget(self, stop: threading.Event, *, charge: bool) -> None:
        with self._lock:
            while True:
                if stop.is_set():
                    raise StopRequested
                now = self._clock()
                reason, wait = "429 pause", self._paused_until - now
                windows = self._windows if charge else {}
                for name, window in windows.items():
                    window_wait = window.wait_time(now)
                    if window_wait > wait:
                        reason, wait = name, window_wait
                if wait <= 0:
                    for window in windows.values():
                        window.record(now)
                    self.started += 1
                    return
                if wait > ANNOUNCE_WAIT_SECONDS and now + wait > self._announced_until + 1:
                    self._announced_until = now + wait
                    if self._on_wait is not None:
                        self._on_wait(wait, reason)
                self._wait(self._lock, min(wait, RECHECK_SECONDS))

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
        """Seconds until one more event fits (0 when it fits now)."""
        while self._times and self._times[0] <= now - self.seconds:
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


class RateLimiter:
    """Concurrency limit plus per-second and per-hour request budgets, shared by all workers.

    The concurrency limit is a semaphore whose size adapts: a 429 halves it (at most once per
    pause, so a burst of 429s from requests already in flight counts once) and each run of
    successful requests as long as the limit grows it back by one, up to ``max_concurrent``.
    Mixpanel's concurrency cap is per project and may be shared with other clients, so
    ``max_workers`` is a ceiling, not a promise.
    """

    def __init__(
        self,
        *,
        max_concurrent: int,
        per_second: float,
        per_hour: int,
        clock: Callable[[], float] = time.monotonic,
        on_wait: Callable[[float, str], None] | None = None,
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
        self._clock = clock
        self._on_wait = on_wait
        self._announced_until = 0.0
        self.started = 0

    def throttled(self, seconds: float) -> None:
        """Mixpanel said 429: pause everyone and halve the concurrency limit."""
        with self._lock:
            now = self._clock()
            if now >= self._paused_until:
                self.concurrency = max(1, self.concurrency // 2)
                self._successes = 0
            self._paused_until = max(self._paused_until, now + seconds)
            self._lock.notify_all()

    def succeeded(self) -> None:
        """A request went through: after as many as the limit, allow one more at once."""
        with self._lock:
            if self.concurrency >= self._max_concurrent:
                return
            self._successes += 1
            if self._successes >= self.concurrency:
                self.concurrency += 1
                self._successes = 0
                self._lock.notify_all()

    @contextmanager
    def slot(self, stop: threading.Event) -> Iterator[None]:
        """Block until a request may start, and hold a concurrency slot while it runs."""
        with self._lock:
            while self._active >= self.concurrency:
                if stop.is_set():
                    raise StopRequested
                self._lock.wait(0.2)
            self._active += 1
        try:
            self._take_budget(stop)
            yield
        finally:
            with self._lock:
                self._active -= 1
                self._lock.notify_all()

    def _take_budget(self, stop: threading.Event) -> None:
        with self._lock:
            while True:
                if stop.is_set():
                    raise StopRequested
                now = self._clock()
                reason, wait = "429 pause", self._paused_until - now
                for name, window in self._windows.items():
                    window_wait = window.wait_time(now)
                    if window_wait > wait:
                        reason, wait = name, window_wait
                if wait <= 0:
                    for window in self._windows.values():
                        window.record(now)
                    self.started += 1
                    return
                if wait > 5 and now + wait > self._announced_until + 1:
                    self._announced_until = now + wait
                    if self._on_wait is not None:
                        self._on_wait(wait, reason)
                self._lock.wait(min(wait, 0.5))

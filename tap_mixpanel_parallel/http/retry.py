"""The one retry loop: a unit's attempts under a shared limiter, for every Mixpanel API.

Each attempt takes a limiter slot. A 429 pauses every worker of the same limiter (its
``Retry-After``, else the limiter's growing wait) and narrows their concurrency, since being
over budget is never one worker's problem; it does not spend ``max_retries``, but
``max_throttle_streak`` pauses in a row without a success give up. Any other retryable error
waits python-backoff's exponential delay with full jitter. Fatal and rejected errors and the
last retryable one are raised to the caller, who knows what failing means for its unit. A
caller that can make its unit smaller (the export, for a range Mixpanel cut) says so through
``split``: a failure it would rather fetch in pieces than retry whole ends the tries with
:class:`SplitInstead`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import backoff

from tap_mixpanel_parallel.http.errors import ExportError, RateLimited
from tap_mixpanel_parallel.http.limiter import RateLimiter, StopRequested, Throttle
from tap_mixpanel_parallel.run.status import MAX_THROTTLE_STREAK

MAX_BACKOFF_SECONDS = 60.0

T = TypeVar("T")

#: Told about each retry: attempt number, the error, the delay before the next attempt.
OnRetry = Callable[[int, ExportError, float], None]
#: Told about each 429 that the run waits out: the error and the limiter's pause.
OnThrottle = Callable[[RateLimited, Throttle], None]
#: Asked after a failure that may be retried (429s aside): the error and the failures so far;
#: True means "not again whole: fetch it in pieces".
Split = Callable[[ExportError, int], bool]


class SplitInstead(Exception):
    """The unit is not retried whole: the caller fetches it in smaller pieces."""

    def __init__(self, error: ExportError) -> None:
        super().__init__(error.message)
        self.error = error


def with_retries(
    attempt: Callable[[], T],
    *,
    limiter: RateLimiter,
    stop: threading.Event,
    max_retries: int,
    on_retry: OnRetry,
    max_throttle_streak: int = MAX_THROTTLE_STREAK,
    charge: bool = True,
    backoff_factor: float = 1.0,
    halted: Callable[[], bool] | None = None,
    on_throttle: OnThrottle | None = None,
    split: Split | None = None,
) -> T:
    """``attempt()``'s value, after at most ``max_retries`` retries of retryable errors.

    Raises :class:`StopRequested` as soon as ``stop`` is set (between attempts or while
    waiting) or, before an attempt, ``halted()`` says the unit's runner starts nothing more;
    and the :class:`ExportError` that ended the tries otherwise (a :class:`RateLimited` only
    once ``max_throttle_streak`` pauses in a row were waited out). ``on_throttle`` is told
    about each 429 waited out, instead of ``on_retry``. :class:`SplitInstead` when ``split``
    says a failure that could be retried should be fetched in pieces instead.
    """
    delays = backoff.expo(factor=backoff_factor, max_value=MAX_BACKOFF_SECONDS)
    next(delays)  # the first value of python-backoff generators is a priming value
    attempts = failures = 0
    while True:
        if stop.is_set() or (halted is not None and halted()):
            raise StopRequested
        attempts += 1
        try:
            with limiter.slot(stop, charge=charge):
                value = attempt()
        except ExportError as exc:
            if stop.is_set():
                raise StopRequested from None
            if isinstance(exc, RateLimited):
                throttle = limiter.throttled(exc.retry_after)
                if throttle.streak > max_throttle_streak:
                    raise
                if on_throttle is not None:
                    on_throttle(exc, throttle)
                else:
                    on_retry(attempts, exc, throttle.seconds)
                continue  # the limiter holds the next slot until the pause is over
            failures += 1
            if exc.fatal or not exc.retryable or failures > max_retries:
                raise
            if split is not None and split(exc, failures):
                raise SplitInstead(exc) from None
            delay = backoff.full_jitter(next(delays))
            on_retry(attempts, exc, delay)
            if stop.wait(delay):
                raise StopRequested from None
            continue
        limiter.succeeded()
        return value

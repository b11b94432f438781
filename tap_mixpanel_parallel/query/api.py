"""What every Query/App API stream of one run shares: its budget, sessions and stop switch.

The Query API has its own budget (5 concurrent queries and 60 an hour per project), separate
from the raw export's, so it has its own :class:`RateLimiter`: however much of the export's
hourly budget ``events`` used, the query streams start with theirs whole, and the other way
round, and ``events`` fetching beside a query stream takes nothing from it. The query streams
of one run share this one limiter, so together they stay within budget.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from tap_mixpanel_parallel.http.errors import ExportError
from tap_mixpanel_parallel.http.limiter import RateLimiter
from tap_mixpanel_parallel.http.retry import with_retries
from tap_mixpanel_parallel.http.session import SessionPool
from tap_mixpanel_parallel.query.client import QUERY_ACCEPT
from tap_mixpanel_parallel.run.pool import RunLoop
from tap_mixpanel_parallel.settings import Settings

#: The Query API documents no per-second budget; this only keeps a runaway loop polite.
QUERY_REQUESTS_PER_SECOND = 100.0

T = TypeVar("T")


class QueryApi:
    """The Query API budget and per-thread sessions of one run."""

    def __init__(
        self, settings: Settings, user_agent: str, logger: logging.Logger, loop: RunLoop
    ) -> None:
        self.settings = settings
        #: The run's loop: query runners are driven and stopped by it, with every other stream.
        self.loop = loop
        self.logger = logger
        self.limiter = RateLimiter(
            max_concurrent=settings.query_max_workers,
            per_second=QUERY_REQUESTS_PER_SECOND,
            per_hour=settings.query_max_requests_per_hour,
            bare_429_seconds=settings.rate_limit_wait,
            on_wait=lambda seconds, why: logger.info(
                "Query API rate limit (%s): waiting %.0fs before the next request", why, seconds
            ),
        )
        self.sessions = SessionPool(settings.authorization, user_agent, QUERY_ACCEPT)
        self.stop_event = threading.Event()
        #: True when a signal cut a query stream short: what it was reading is still owed.
        self.cut = False
        #: API name -> why its streams may not start (an earlier one got a 401 or 403).
        self.refused: dict[str, str] = {}
        loop.on_stop(self.stop_event.set)

    @property
    def interrupted(self) -> bool:
        """True once a signal stopped the query streams."""
        return self.stop_event.is_set()

    def call(self, what: str, attempt: Callable[[], T]) -> T:
        """One request (a list, a funnel window) with the shared retries, on this thread."""

        def on_retry(number: int, exc: ExportError, delay: float) -> None:
            self.logger.warning(
                "%s: attempt %d failed (%s); retrying in %.1fs", what, number, exc.message, delay
            )

        return with_retries(
            attempt,
            limiter=self.limiter,
            stop=self.stop_event,
            max_retries=self.settings.max_retries,
            on_retry=on_retry,
        )

    def close(self) -> None:
        """Release every thread's connections."""
        self.sessions.close()

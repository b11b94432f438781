"""How a unit of work (a partition, a page, a query) ended, and when the run gives up on 429s."""

from __future__ import annotations

from enum import Enum

#: 429s do not spend ``max_retries`` (being told to wait is not a failure); instead the run
#: gives up on Mixpanel after this many 429 pauses in a row with no successful request in
#: between (37 minutes of waiting at the default ``rate_limit_wait`` when no 429 carries a
#: ``Retry-After``).
MAX_THROTTLE_STREAK = 10


class Status(Enum):
    """How a partition's last attempt ended."""

    OK = "ok"
    FAILED = "failed"  # out of retries, or rejected: owed to the next run
    FATAL = "fatal"  # no partition can succeed: the run stops
    STOPPED = "stopped"  # abandoned because the run is stopping

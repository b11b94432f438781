"""What a run will cost, how large its partitions should be, and how a cut partition splits.

Mixpanel's export budget is per project: 60 requests an hour, 3 a second, 100 at once. A run
that needs more requests than the hour allows waits for the window to slide, so the cheapest
way to make a long backfill fast is to ask for fewer, larger ranges; a range Mixpanel cannot
serve whole (it cuts the body or the request times out) is asked for again in halves. All of
it is pure, so hypothesis and the simulation benchmark (``benchmarks/backfill_sim.py``) drive
the same functions the tap runs.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass

from tap_mixpanel_parallel.export.partitions import (
    PlannedPartition,
    incremental_start,
    plan_partitions,
    subtract_ranges,
)
from tap_mixpanel_parallel.run.dates import ONE_DAY, Partition

HOUR_SECONDS = 3600.0
#: Share of the hourly budget ``fit_budget`` plans for; the rest is kept for retries and for
#: the halves of partitions Mixpanel cuts, so those do not push the run into the next hour.
FIT_BUDGET_SHARE = 0.8
#: Largest partition ``fit_budget`` plans (the bound of ``partition_days``): past it a run is
#: long whatever the size, and a huge range is the likeliest to be cut.
MAX_FIT_DAYS = 100
FIXED = "fixed"
FIT_BUDGET = "fit_budget"
PARTITION_MODES = (FIXED, FIT_BUDGET)


# -- the hourly budget ---------------------------------------------------------------------------


def earliest_starts(requests: int, per_hour: int, per_second: float) -> list[float]:
    """The earliest second each of ``requests`` may start, from a fresh budget at 0.

    Request ``k`` waits for the ``per_hour``-th request before it to leave the hour, and for
    the per-second window (``floor(per_second)`` starts a second, or one every
    ``1/per_second`` seconds below 1), as :class:`~tap_mixpanel_parallel.http.limiter.RateLimiter`
    grants them.
    """
    starts: list[float] = []
    if math.isinf(per_second):
        burst = max(requests, 1)
    else:
        burst = int(per_second) if per_second >= 1 else 1
    spacing = 1.0 if per_second >= 1 else 1.0 / per_second
    for k in range(requests):
        t = 0.0
        if k >= burst:
            t = max(t, starts[k - burst] + spacing)
        if k >= per_hour:
            t = max(t, starts[k - per_hour] + HOUR_SECONDS)
        starts.append(t)
    return starts


def least_seconds(requests: int, per_hour: int, per_second: float) -> float:
    """When the last of ``requests`` may start at the earliest: the run's floor of wall time.

    What Mixpanel then takes to serve that request comes on top and cannot be known up front.
    """
    if requests <= 0:
        return 0.0
    # Past the first few hours the pattern repeats: count whole hours, simulate the rest.
    whole_hours = max(requests - 1, 0) // per_hour
    rest = requests - whole_hours * per_hour
    return whole_hours * HOUR_SECONDS + earliest_starts(rest, per_hour, per_second)[-1]


@dataclass(frozen=True)
class Cost:
    """What a run will cost, as logged before its first request."""

    export_requests: int
    query_requests: int
    #: Least wall time the export budget allows, in seconds (from a fresh hour).
    export_seconds: float
    #: The same for the Query API's known requests.
    query_seconds: float

    @property
    def least_seconds(self) -> float:
        """The export and the Query API have budgets of their own: the longer one bounds."""
        return max(self.export_seconds, self.query_seconds)


def run_cost(
    *,
    export_requests: int,
    per_hour: int,
    per_second: float,
    query_requests: int = 0,
    query_per_hour: int = 60,
) -> Cost:
    """The cost of a run from its request counts and the two budgets."""
    return Cost(
        export_requests=export_requests,
        query_requests=query_requests,
        export_seconds=least_seconds(export_requests, per_hour, per_second),
        # The Query API has no documented per-second limit: only its hour counts here.
        query_seconds=least_seconds(query_requests, query_per_hour, math.inf),
    )


def seconds_left(
    *,
    elapsed: float,
    finished: int,
    total: int,
    requests_started: int,
    per_hour: int,
    per_second: float,
) -> float | None:
    """Time left: the longer of what the pace so far and what the hourly budget allow.

    ``finished`` of ``total`` partitions are done after ``elapsed`` seconds, for which
    ``requests_started`` requests went out. Each partition left costs at least one request, and
    the budget's floor counts from the run's start. None before the first partition is done and
    when nothing is left to say (nothing is left).
    """
    left = total - finished
    if left <= 0:
        return 0.0
    budget = least_seconds(requests_started + left, per_hour, per_second) - elapsed
    if finished == 0:
        return max(budget, 0.0) if budget > 0 else None
    pace = elapsed / finished * left
    return max(pace, budget, 0.0)


def duration(seconds: float) -> str:
    """A short human duration: ``45s``, ``12m``, ``3h05m``."""
    whole = max(round(seconds), 0)
    if whole < 60:
        return f"{whole}s"
    minutes = math.ceil(whole / 60)
    if minutes < 60:
        return f"{minutes}m"
    return f"{minutes // 60}h{minutes % 60:02d}m"


# -- partition sizes -----------------------------------------------------------------------------


def partitions_needed(piece_days: Sequence[int], size: int) -> int:
    """How many partitions of ``size`` days the contiguous pieces of ``piece_days`` make."""
    return sum(-(-days // size) for days in piece_days if days > 0)


def fit_partition_days(
    piece_days: Sequence[int],
    *,
    default_days: int,
    requests: int,
    min_partitions: int,
    max_days: int = MAX_FIT_DAYS,
) -> int:
    """Days per partition so the pieces cost at most ``requests`` and keep the workers busy.

    ``default_days`` stands when it already fits; when it needs more than ``requests``
    partitions, the smallest size that fits (at most ``max_days``, where the run spans several
    hours whatever the size); when it gives fewer than ``min_partitions`` (the workers), the
    largest smaller size that gives enough, as long as that still fits ``requests``: waiting a
    whole hour costs more than idle workers do.
    """
    default_days = max(1, min(default_days, max_days))
    if sum(piece_days) <= 0:
        return default_days
    requests = max(requests, 1)
    if partitions_needed(piece_days, default_days) > requests:
        for size in range(default_days + 1, max_days + 1):
            if partitions_needed(piece_days, size) <= requests:
                return size
        return max_days
    want = min(min_partitions, requests)
    size = default_days
    while size > 1 and partitions_needed(piece_days, size) < want:
        if partitions_needed(piece_days, size - 1) > requests:
            break
        size -= 1
    return size


def fit_requests(per_hour: int, reserved: int) -> int:
    """The requests ``fit_budget`` may plan for new partitions this hour.

    ``reserved`` requests are owed anyway (failed partitions retried as recorded).
    """
    return max(int(per_hour * FIT_BUDGET_SHARE) - reserved, 1)


def plan_run(
    *,
    mode: str,
    start_date: dt.date,
    end_date: dt.date,
    partition_days: int,
    lookback_days: int,
    bookmark: dt.date | None,
    failed: Sequence[Partition],
    per_hour: int,
    max_workers: int,
) -> list[PlannedPartition]:
    """The run's partitions: ``partition_days`` each (``fixed``), or sized by the budget.

    Only the size of the new partitions changes with the mode; failed partitions are retried
    as recorded and the bookmark means the same, so a state written under either mode resumes
    under the other.
    """
    size = partition_days
    if mode == FIT_BUDGET:
        first = incremental_start(start_date, bookmark, lookback_days)
        pieces = subtract_ranges(first, end_date, failed)
        size = fit_partition_days(
            [(b - a).days + 1 for a, b in pieces],
            default_days=partition_days,
            requests=fit_requests(per_hour, len(set(failed))),
            min_partitions=max_workers,
        )
    return plan_partitions(
        start_date=start_date,
        end_date=end_date,
        partition_days=size,
        lookback_days=lookback_days,
        bookmark=bookmark,
        failed=failed,
    )


# -- splitting -----------------------------------------------------------------------------------


def halves(partition: Partition) -> tuple[Partition, Partition]:
    """The two halves of a partition of two days or more; the first is the longer when odd."""
    if partition.days < 2:
        msg = f"partition {partition} is one day: it cannot be split"
        raise ValueError(msg)
    first_days = (partition.days + 1) // 2
    middle = partition.from_date + dt.timedelta(days=first_days - 1)
    return Partition(partition.from_date, middle), Partition(middle + ONE_DAY, partition.to_date)


def can_split(partition: Partition) -> bool:
    """A partition splits down to single days, no further."""
    return partition.days > 1


def too_large_days(cut: Sequence[int], served: Sequence[int]) -> int | None:
    """The size from which this run's ranges are mostly cut: fetch those in halves up front.

    ``cut`` and ``served`` are the sizes, in days, of the ranges Mixpanel cut (or timed out
    on) and served so far. The answer is the smallest size ``s`` for which ranges of ``s`` days
    or more were cut at least twice and more often than served; None while there is none. A
    few weeks too large (a launch) leave it None; a project whose every large range is cut
    stops paying a wasted request for each one.
    """
    for size in sorted(set(cut)):
        cuts = sum(1 for days in cut if days >= size)
        served_ = sum(1 for days in served if days >= size)
        if cuts >= 2 and cuts > served_:
            return size
    return None


SPLIT = "split"
RETRY = "retry"
GIVE_UP = "give_up"


def after_failure(
    piece: Partition, failures: int, max_retries: int, *, retryable: bool, splittable: bool
) -> str:
    """What to do after the ``failures``-th failed attempt at ``piece`` (429s aside).

    A range Mixpanel cut or timed out on is retried as its halves instead of whole, as long
    as a retry is allowed at all (``max_retries`` 0 means none); each half then has retries of
    its own. A single day, or any other error, is retried whole until the retries run out.
    """
    if not retryable or failures > max_retries:
        return GIVE_UP
    if splittable and can_split(piece):
        return SPLIT
    return RETRY


@dataclass(frozen=True)
class Pieces:
    """The ranges of one planned partition still to fetch, in date order.

    Fetching takes the first range; Mixpanel serving it settles it (:meth:`settled`), Mixpanel
    cutting it replaces it with its halves (:meth:`split`). Whatever the sequence, the ranges
    settled so far followed by :attr:`todo` are exactly the partition, contiguous, in order.
    """

    todo: tuple[Partition, ...]

    @classmethod
    def of(cls, partition: Partition) -> Pieces:
        """The whole partition, not yet fetched."""
        return cls((partition,))

    @property
    def next(self) -> Partition | None:
        """The range to fetch now (None once all are settled)."""
        return self.todo[0] if self.todo else None

    def settled(self) -> Pieces:
        """The first range is settled (exported, or given up as failed)."""
        return Pieces(self.todo[1:])

    def split(self) -> Pieces:
        """The first range is fetched again as its halves."""
        return Pieces((*halves(self.todo[0]), *self.todo[1:]))

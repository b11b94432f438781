"""Date windows and the plan of what a run owes.

Mixpanel's export API takes inclusive ``from_date``/``to_date`` days, so every window here is an
inclusive pair of dates. Everything in this module is pure: the plan is a function of settings,
"today" and the incoming state, which is what lets hypothesis check it over any input.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tap_mixpanel_parallel.compat import override

ONE_DAY = dt.timedelta(days=1)


@dataclass(frozen=True, order=True)
class Partition:
    """An inclusive range of project-timezone days fetched as one export request."""

    from_date: dt.date
    to_date: dt.date

    def __post_init__(self) -> None:
        if self.from_date > self.to_date:
            msg = f"partition from_date {self.from_date} is after to_date {self.to_date}"
            raise ValueError(msg)

    @property
    def days(self) -> int:
        """Number of days covered, both ends included."""
        return (self.to_date - self.from_date).days + 1

    @override
    def __str__(self) -> str:
        return f"{self.from_date.isoformat()}..{self.to_date.isoformat()}"


def split_date_range(start: dt.date, end: dt.date, partition_days: int) -> list[Partition]:
    """Cut ``start..end`` (inclusive) into contiguous windows of ``partition_days`` days.

    The last window is shorter when the range does not divide evenly. An empty range
    (``start > end``) gives no windows rather than an error, because "nothing is owed"
    is an ordinary outcome of planning.
    """
    if partition_days < 1:
        msg = f"partition_days must be at least 1, got {partition_days}"
        raise ValueError(msg)
    step = dt.timedelta(days=partition_days)
    windows: list[Partition] = []
    cursor = start
    while cursor <= end:
        last = min(cursor + step - ONE_DAY, end)
        windows.append(Partition(cursor, last))
        cursor = last + ONE_DAY
    return windows


def subtract_ranges(
    start: dt.date, end: dt.date, holes: Iterable[Partition]
) -> list[tuple[dt.date, dt.date]]:
    """The sub-ranges of ``start..end`` not covered by any of ``holes``.

    Used so that a day already owed through ``failed_partitions`` is not fetched a second
    time by the incremental range in the same run.
    """
    pieces: list[tuple[dt.date, dt.date]] = []
    cursor = start
    for hole in sorted(holes):
        if hole.to_date < cursor or hole.from_date > end:
            continue
        if hole.from_date > cursor:
            pieces.append((cursor, hole.from_date - ONE_DAY))
        cursor = max(cursor, hole.to_date + ONE_DAY)
        if cursor > end:
            break
    if cursor <= end:
        pieces.append((cursor, end))
    return pieces


@dataclass(frozen=True)
class PlannedPartition:
    """A partition the run will fetch, and whether settling it may move the bookmark."""

    partition: Partition
    retry_of_failed: bool


def incremental_start(start_date: dt.date, bookmark: dt.date | None, lookback_days: int) -> dt.date:
    """First day of the incremental range: the day after the bookmark, minus the lookback.

    The lookback re-reads days that mobile SDKs may still be delivering late events for; it
    never reaches before ``start_date``.
    """
    if bookmark is None:
        return start_date
    return max(start_date, bookmark + ONE_DAY - dt.timedelta(days=lookback_days))


def plan_partitions(
    *,
    start_date: dt.date,
    end_date: dt.date,
    partition_days: int,
    lookback_days: int,
    bookmark: dt.date | None,
    failed: Sequence[Partition],
) -> list[PlannedPartition]:
    """What this run owes: failed partitions first, then the incremental range.

    Failed partitions are retried exactly as they were recorded, whatever the current
    ``start_date``/``end_date``, because dropping one would lose its events for good. The
    incremental range skips the days those retries already cover.
    """
    planned = [PlannedPartition(p, retry_of_failed=True) for p in dict.fromkeys(failed)]
    first = incremental_start(start_date, bookmark, lookback_days)
    for piece_start, piece_end in subtract_ranges(first, end_date, failed):
        planned.extend(
            PlannedPartition(p, retry_of_failed=False)
            for p in split_date_range(piece_start, piece_end, partition_days)
        )
    return planned

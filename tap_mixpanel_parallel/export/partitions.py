"""Date windows and the plan of what a run owes.

Mixpanel's export API takes inclusive ``from_date``/``to_date`` days, so every window here is an
inclusive pair of dates. Everything in this module is pure: the plan is a function of settings,
"today" and the incoming state, which is what lets hypothesis check it over any input.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tap_mixpanel_parallel.run.dates import ONE_DAY, Partition, split_date_range


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

"""Inclusive ranges of days, and cutting a range into them.

Mixpanel's APIs take inclusive ``from_date``/``to_date`` days, so every range here is an
inclusive pair of dates. Pure, so hypothesis can check it over any input.
"""

from __future__ import annotations

import datetime as dt
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

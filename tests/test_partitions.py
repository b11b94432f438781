"""The date split and the plan: examples beside hypothesis properties."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tap_mixpanel_parallel.export.partitions import (
    incremental_start,
    plan_partitions,
    subtract_ranges,
)
from tap_mixpanel_parallel.run.dates import Partition, split_date_range

D = dt.date
days = st.dates(min_value=D(2015, 1, 1), max_value=D(2030, 12, 31))


def test_split_examples():
    assert split_date_range(D(2024, 1, 1), D(2024, 1, 14), 7) == [
        Partition(D(2024, 1, 1), D(2024, 1, 7)),
        Partition(D(2024, 1, 8), D(2024, 1, 14)),
    ]
    assert split_date_range(D(2024, 1, 1), D(2024, 1, 10), 7) == [
        Partition(D(2024, 1, 1), D(2024, 1, 7)),
        Partition(D(2024, 1, 8), D(2024, 1, 10)),
    ]
    assert split_date_range(D(2024, 1, 1), D(2024, 1, 1), 7) == [
        Partition(D(2024, 1, 1), D(2024, 1, 1))
    ]
    assert split_date_range(D(2024, 1, 2), D(2024, 1, 1), 7) == []
    # 2024 is a leap year: February 29 is a day like any other.
    assert split_date_range(D(2024, 2, 26), D(2024, 3, 3), 2)[1] == Partition(
        D(2024, 2, 28), D(2024, 2, 29)
    )


def test_split_rejects_bad_size():
    with pytest.raises(ValueError, match="partition_days"):
        split_date_range(D(2024, 1, 1), D(2024, 1, 2), 0)


def test_partition_rejects_reversed_range():
    with pytest.raises(ValueError, match="after"):
        Partition(D(2024, 1, 2), D(2024, 1, 1))
    assert str(Partition(D(2024, 1, 1), D(2024, 1, 7))) == "2024-01-01..2024-01-07"
    assert Partition(D(2024, 1, 1), D(2024, 1, 7)).days == 7


@given(start=days, length=st.integers(0, 800), size=st.integers(1, 100))
def test_split_covers_exactly_in_order(start, length, size):
    end = start + dt.timedelta(days=length)
    windows = split_date_range(start, end, size)
    assert windows[0].from_date == start
    assert windows[-1].to_date == end
    for left, right in itertools.pairwise(windows):
        # contiguous: no gap, no overlap (to_date is inclusive)
        assert right.from_date == left.to_date + dt.timedelta(days=1)
    assert all(1 <= w.days <= size for w in windows)
    assert all(w.days == size for w in windows[:-1])
    assert sum(w.days for w in windows) == length + 1


@given(
    start=days,
    length=st.integers(0, 400),
    # holes placed around the range (days from its start), so they overlap it and each other
    holes=st.lists(st.tuples(st.integers(-40, 440), st.integers(0, 30))),
)
# a hole that reaches the range's last day, after one that ends the day before it
@example(start=D(2024, 1, 1), length=4, holes=[(0, 3), (4, 0)])
def test_subtract_ranges_is_the_set_difference(start, length, holes):
    end = start + dt.timedelta(days=length)
    parts = [
        Partition(start + dt.timedelta(days=h), start + dt.timedelta(days=h + n)) for h, n in holes
    ]
    pieces = subtract_ranges(start, end, parts)
    covered = set()
    for a, b in pieces:
        assert a <= b
        n = (b - a).days + 1
        new = {a + dt.timedelta(days=i) for i in range(n)}
        assert not covered & new
        covered |= new
    expected = {start + dt.timedelta(days=i) for i in range(length + 1)}
    for p in parts:
        expected -= {p.from_date + dt.timedelta(days=i) for i in range(p.days)}
    assert covered == expected
    assert pieces == sorted(pieces)


def test_incremental_start():
    assert incremental_start(D(2024, 1, 1), None, 5) == D(2024, 1, 1)
    assert incremental_start(D(2024, 1, 1), D(2024, 3, 10), 0) == D(2024, 3, 11)
    assert incremental_start(D(2024, 1, 1), D(2024, 3, 10), 5) == D(2024, 3, 6)
    assert incremental_start(D(2024, 3, 8), D(2024, 3, 10), 5) == D(2024, 3, 8)


def test_plan_retries_failed_first_and_skips_their_days():
    failed = [Partition(D(2024, 3, 4), D(2024, 3, 10))]
    plan = plan_partitions(
        start_date=D(2024, 1, 1),
        end_date=D(2024, 3, 20),
        partition_days=7,
        lookback_days=5,
        bookmark=D(2024, 3, 10),
        failed=failed,
    )
    assert [(str(p.partition), p.retry_of_failed) for p in plan] == [
        ("2024-03-04..2024-03-10", True),
        ("2024-03-11..2024-03-17", False),
        ("2024-03-18..2024-03-20", False),
    ]


def test_plan_nothing_owed():
    plan = plan_partitions(
        start_date=D(2024, 1, 1),
        end_date=D(2024, 1, 10),
        partition_days=7,
        lookback_days=0,
        bookmark=D(2024, 1, 10),
        failed=[],
    )
    assert plan == []


@given(
    start=days,
    length=st.integers(0, 400),
    size=st.integers(1, 30),
    lookback=st.integers(0, 10),
    bookmark_offset=st.none() | st.integers(-5, 420),
    failed=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 20)), max_size=4),
)
def test_plan_owes_each_day_once(start, length, size, lookback, bookmark_offset, failed):
    end = start + dt.timedelta(days=length)
    bookmark = None if bookmark_offset is None else start + dt.timedelta(days=bookmark_offset)
    failed_parts = sorted(
        {
            Partition(start + dt.timedelta(days=a), start + dt.timedelta(days=a + n))
            for a, n in failed
        }
    )
    # failed partitions recorded by earlier runs never overlap each other
    disjoint = []
    for p in failed_parts:
        if not disjoint or p.from_date > disjoint[-1].to_date:
            disjoint.append(p)
    plan = plan_partitions(
        start_date=start,
        end_date=end,
        partition_days=size,
        lookback_days=lookback,
        bookmark=bookmark,
        failed=disjoint,
    )
    seen: list[dt.date] = []
    for planned in plan:
        p = planned.partition
        seen.extend(p.from_date + dt.timedelta(days=i) for i in range(p.days))
        if not planned.retry_of_failed:
            assert p.days <= size
            assert start <= p.from_date <= p.to_date <= end
    assert len(seen) == len(set(seen)), "a day is planned twice"
    first = incremental_start(start, bookmark, lookback)
    owed = {first + dt.timedelta(days=i) for i in range(max(0, (end - first).days + 1))}
    for p in disjoint:
        owed |= {p.from_date + dt.timedelta(days=i) for i in range(p.days)}
    assert set(seen) == owed
    n_failed = len(disjoint)
    assert [p.partition for p in plan[:n_failed]] == disjoint
    assert all(not p.retry_of_failed for p in plan[n_failed:])
    incremental = [p.partition for p in plan[n_failed:]]
    assert incremental == sorted(incremental)

"""The run's plan, partition sizes and splits: pure functions, examples beside hypothesis."""

from __future__ import annotations

import datetime as dt
import itertools
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tap_mixpanel_parallel.export.plan import (
    FIT_BUDGET,
    FIXED,
    Pieces,
    can_split,
    duration,
    earliest_starts,
    fit_partition_days,
    fit_requests,
    halves,
    least_seconds,
    partitions_needed,
    plan_run,
    run_cost,
    seconds_left,
)
from tap_mixpanel_parallel.export.state import (
    dump_state,
    load_state,
    settle_done,
    settle_failed,
)
from tap_mixpanel_parallel.run.dates import Partition

D = dt.date
TODAY = D(2030, 1, 1)
days = st.dates(min_value=D(2015, 1, 1), max_value=D(2030, 12, 31))


def day_set(partitions):
    return [p.from_date + dt.timedelta(days=i) for p in partitions for i in range(p.days)]


# -- the budget ----------------------------------------------------------------------------------


def test_least_seconds_examples():
    assert least_seconds(0, 60, 3) == 0
    assert least_seconds(1, 60, 3) == 0
    assert least_seconds(3, 60, 3) == 0  # three a second: the first three go at once
    assert least_seconds(4, 60, 3) == 1
    assert least_seconds(60, 60, 3) == 19
    assert least_seconds(61, 60, 3) == 3600  # the 61st waits for the first to leave the hour
    assert least_seconds(105, 60, 3) == 3600 + 14
    assert least_seconds(121, 60, 3) == 7200
    assert least_seconds(3, 60, 0.5) == 4  # below one a second: spaced out


@given(
    n=st.integers(1, 400),
    per_hour=st.integers(1, 100),
    per_second=st.sampled_from([0.5, 1, 2, 3, 7.5]),
)
def test_least_seconds_is_the_last_earliest_start_and_respects_both_windows(
    n, per_hour, per_second
):
    starts = earliest_starts(n, per_hour, per_second)
    assert least_seconds(n, per_hour, per_second) == pytest.approx(starts[-1])
    assert starts == sorted(starts)
    for i, t in enumerate(starts):
        assert sum(1 for s in starts if t - 3600 < s <= t) <= per_hour, i
    assert least_seconds(n + 1, per_hour, per_second) >= least_seconds(n, per_hour, per_second)
    assert least_seconds(n, per_hour, per_second) >= (n - 1) // per_hour * 3600


def test_run_cost_takes_the_longer_of_the_two_budgets():
    cost = run_cost(export_requests=105, per_hour=60, per_second=3, query_requests=3)
    assert (cost.export_requests, cost.query_requests) == (105, 3)
    assert cost.least_seconds == cost.export_seconds == 3614
    assert run_cost(
        export_requests=1, per_hour=60, per_second=3, query_requests=61
    ).least_seconds == pytest.approx(3600)


def test_seconds_left_from_the_pace_and_the_budget():
    # 10 of 100 done in 60s: the pace says 540s more; 90 more requests need the next hour, the
    # last of them starting 13s into it
    left = seconds_left(
        elapsed=60, finished=10, total=100, requests_started=10, per_hour=60, per_second=3
    )
    assert left == 3600 + 13 - 60
    # the budget does not bind: the pace does
    assert seconds_left(
        elapsed=60, finished=10, total=20, requests_started=10, per_hour=60, per_second=3
    ) == pytest.approx(60)
    assert (
        seconds_left(elapsed=5, finished=0, total=5, requests_started=1, per_hour=60, per_second=3)
        is None
    )
    assert (
        seconds_left(elapsed=5, finished=5, total=5, requests_started=5, per_hour=60, per_second=3)
        == 0
    )


@given(
    elapsed=st.floats(0, 10000),
    finished=st.integers(0, 200),
    more=st.integers(0, 200),
    started=st.integers(0, 400),
    per_hour=st.integers(1, 100),
)
def test_seconds_left_is_never_negative(elapsed, finished, more, started, per_hour):
    left = seconds_left(
        elapsed=elapsed,
        finished=finished,
        total=finished + more,
        requests_started=started,
        per_hour=per_hour,
        per_second=3,
    )
    assert left is None or left >= 0


def test_duration_text():
    assert [duration(s) for s in (0, 45, 61, 3599, 3600, 3 * 3600 + 5 * 60)] == [
        "0s",
        "45s",
        "2m",
        "1h00m",
        "1h00m",
        "3h05m",
    ]


# -- partition sizes -----------------------------------------------------------------------------


def test_fit_examples_from_the_issue():
    # two years, 60 an hour less the headroom: 48 requests, so 16-day partitions (46 of them)
    size = fit_partition_days(
        [730], default_days=7, requests=fit_requests(60, 0), min_partitions=10
    )
    assert (size, partitions_needed([730], size)) == (16, 46)
    # a month with ten workers: 7-day partitions would leave five idle
    assert fit_partition_days([30], default_days=7, requests=48, min_partitions=10) == 3
    # a small incremental run with plenty of budget: one-day partitions, one per worker
    assert fit_partition_days([6], default_days=7, requests=48, min_partitions=10) == 1
    # the default fits: kept
    assert fit_partition_days([300], default_days=7, requests=48, min_partitions=10) == 7
    # ten years do not fit the hour even at the cap: the cap
    assert fit_partition_days([3650], default_days=7, requests=10, min_partitions=10) == 100
    # fewer requests than workers: the budget wins over idle workers
    assert fit_partition_days([30], default_days=7, requests=2, min_partitions=10) == 15


@given(
    pieces=st.lists(st.integers(0, 800), min_size=1, max_size=5),
    default=st.integers(1, 30),
    requests=st.integers(1, 200),
    workers=st.integers(1, 100),
)
def test_fit_partition_days_fits_the_budget_when_any_size_can(pieces, default, requests, workers):
    size = fit_partition_days(
        pieces, default_days=default, requests=requests, min_partitions=workers
    )
    assert 1 <= size <= 100
    needed = partitions_needed(pieces, size)
    if partitions_needed(pieces, 100) <= requests:
        assert needed <= requests
    if partitions_needed(pieces, default) > requests:
        assert size >= default  # only ever larger when the budget binds
        assert size == 100 or partitions_needed(pieces, size - 1) > requests  # the smallest
    elif partitions_needed(pieces, default) >= workers:
        assert size == default  # the default stands when it fits and keeps the workers busy
    else:
        assert size <= default
        # no larger size would give the workers as many partitions within the budget
        assert size == default or partitions_needed(pieces, size + 1) < min(workers, requests)


@given(
    start=days,
    length=st.integers(0, 800),
    default=st.integers(1, 30),
    per_hour=st.integers(1, 200),
    workers=st.integers(1, 100),
    lookback=st.integers(0, 10),
    bookmark_offset=st.none() | st.integers(-5, 820),
    mode=st.sampled_from([FIXED, FIT_BUDGET]),
)
def test_either_mode_owes_each_day_once(
    start, length, default, per_hour, workers, lookback, bookmark_offset, mode
):
    end = start + dt.timedelta(days=length)
    bookmark = None if bookmark_offset is None else start + dt.timedelta(days=bookmark_offset)
    plan = plan_run(
        mode=mode,
        start_date=start,
        end_date=end,
        partition_days=default,
        lookback_days=lookback,
        bookmark=bookmark,
        failed=[],
        per_hour=per_hour,
        max_workers=workers,
    )
    owed = day_set(p.partition for p in plan)
    assert len(owed) == len(set(owed))
    first = start if bookmark is None else max(start, bookmark + dt.timedelta(days=1 - lookback))
    assert set(owed) == {first + dt.timedelta(days=i) for i in range((end - first).days + 1)}
    if mode == FIXED:
        assert all(p.partition.days <= default for p in plan)


# -- splitting -----------------------------------------------------------------------------------


def test_halves_examples():
    week = Partition(D(2024, 1, 1), D(2024, 1, 7))
    assert halves(week) == (
        Partition(D(2024, 1, 1), D(2024, 1, 4)),
        Partition(D(2024, 1, 5), D(2024, 1, 7)),
    )
    assert halves(Partition(D(2024, 2, 28), D(2024, 2, 29))) == (
        Partition(D(2024, 2, 28), D(2024, 2, 28)),
        Partition(D(2024, 2, 29), D(2024, 2, 29)),
    )
    day = Partition(D(2024, 1, 1), D(2024, 1, 1))
    assert not can_split(day)
    with pytest.raises(ValueError, match="one day"):
        halves(day)


@given(start=days, length=st.integers(1, 400))
def test_halves_cover_the_partition_exactly(start, length):
    p = Partition(start, start + dt.timedelta(days=length))
    a, b = halves(p)
    assert a.from_date == p.from_date and b.to_date == p.to_date
    assert b.from_date == a.to_date + dt.timedelta(days=1)
    assert a.days - b.days in (0, 1)


@given(start=days, length=st.integers(0, 100), ops=st.lists(st.booleans(), max_size=300))
def test_pieces_always_cover_the_partition_in_order(start, length, ops):
    whole = Partition(start, start + dt.timedelta(days=length))
    pieces = Pieces.of(whole)
    settled: list[Partition] = []
    for split in ops:
        if pieces.next is None:
            break
        if split and can_split(pieces.next):
            pieces = pieces.split()
        else:
            settled.append(pieces.next)
            pieces = pieces.settled()
        ranges = [*settled, *pieces.todo]
        assert ranges[0].from_date == whole.from_date and ranges[-1].to_date == whole.to_date
        for left, right in itertools.pairwise(ranges):
            assert right.from_date == left.to_date + dt.timedelta(days=1)


# -- every day exactly once, whatever the splits, kills, resumes and modes -----------------------

#: What Mixpanel does with one request: serve it, cut it (too large), or fail it for good.
outcome = st.sampled_from(["ok", "ok", "cut", "fail"])


def fetch(partition: Partition, draw) -> list[tuple[Partition, bool]]:
    """A worker's pieces for one planned partition: (piece, exported) in date order."""
    pieces = Pieces.of(partition)
    done: list[tuple[Partition, bool]] = []
    while (piece := pieces.next) is not None:
        answer = draw(piece)
        if answer == "cut" and can_split(piece):
            pieces = pieces.split()
            continue
        done.append((piece, answer == "ok"))
        pieces = pieces.settled()
    return done


@settings(max_examples=300, deadline=None)
@given(
    length=st.integers(0, 90),
    runs=st.integers(1, 5),
    data=st.data(),
)
def test_every_day_is_emitted_exactly_once_across_splits_kills_and_resumes(length, runs, data):
    start = D(2024, 1, 1)
    end = start + dt.timedelta(days=length)
    state_json: dict = {}
    emitted: list[Partition] = []
    for run in range(runs + 1):
        last = run == runs  # a last run where Mixpanel serves everything (but still cuts)
        state = load_state(state_json)
        plan = plan_run(
            mode=data.draw(st.sampled_from([FIXED, FIT_BUDGET])),
            start_date=start,
            end_date=end,
            partition_days=data.draw(st.integers(1, 20)),
            lookback_days=0,
            bookmark=state.bookmark,
            failed=state.failed_partitions,
            per_hour=data.draw(st.integers(1, 60)),
            max_workers=data.draw(st.integers(1, 12)),
        )
        results = []
        for planned in plan:
            if last:  # still cuts what it cuts, but serves every single day

                def draw(piece):
                    return "cut" if can_split(piece) and data.draw(st.booleans()) else "ok"
            else:

                def draw(piece):
                    return data.draw(outcome)

            results += [(planned, piece, ok) for piece, ok in fetch(planned.partition, draw)]
        # a kill leaves a settled prefix of the pieces, each with its STATE
        kill = len(results) if last else data.draw(st.integers(0, len(results)))
        for planned, piece, ok in results[:kill]:
            if ok:
                state = settle_done(state, planned, TODAY, piece)
                emitted.append(piece)
            else:
                state = settle_failed(state, planned, "cut", 1, TODAY, piece)
            owed = day_set(state.failed_partitions)
            assert len(owed) == len(set(owed)), "a day is owed twice"
            assert not set(owed) & set(day_set(emitted)), "an emitted day is still owed"
            state_json = dump_state(state)
    counts = Counter(day_set(emitted))
    assert all(n == 1 for n in counts.values()), "a day was emitted twice"
    assert set(counts) == {start + dt.timedelta(days=i) for i in range(length + 1)}
    assert load_state(state_json).failed == ()


def test_a_failed_partition_retried_in_pieces_leaves_only_what_still_fails():
    from tap_mixpanel_parallel.export.partitions import PlannedPartition
    from tap_mixpanel_parallel.export.state import ExportState, FailedPartition

    week = Partition(D(2024, 1, 1), D(2024, 1, 7))
    state = ExportState(D(2024, 1, 31), (FailedPartition(week, "cut", 6),))
    retry = PlannedPartition(week, retry_of_failed=True)
    first, rest = halves(week)
    state = settle_done(state, retry, TODAY, first)
    assert [(str(f.partition), f.attempts) for f in state.failed] == [("2024-01-05..2024-01-07", 6)]
    a, b = halves(rest)
    state = settle_failed(state, retry, "500", 2, TODAY, a)
    assert [(str(f.partition), f.error, f.attempts) for f in state.failed] == [
        ("2024-01-05..2024-01-06", "500", 8),
        ("2024-01-07..2024-01-07", "cut", 6),
    ]
    state = settle_done(state, retry, TODAY, b)
    assert [str(f.partition) for f in state.failed] == ["2024-01-05..2024-01-06"]
    assert state.bookmark == D(2024, 1, 31)  # a retry never moves the bookmark


def test_after_failure_splits_only_cut_ranges_and_only_when_a_retry_is_allowed():
    from tap_mixpanel_parallel.export.plan import GIVE_UP, RETRY, SPLIT, after_failure

    week = Partition(D(2024, 1, 1), D(2024, 1, 7))
    day = Partition(D(2024, 1, 1), D(2024, 1, 1))
    cut = {"retryable": True, "splittable": True}
    assert after_failure(week, 1, 5, **cut) == SPLIT
    assert after_failure(day, 1, 5, **cut) == RETRY
    assert after_failure(day, 6, 5, **cut) == GIVE_UP
    assert after_failure(week, 1, 0, **cut) == GIVE_UP  # no retries: no halves either
    assert after_failure(week, 1, 5, retryable=True, splittable=False) == RETRY  # a 503
    assert after_failure(week, 1, 5, retryable=False, splittable=False) == GIVE_UP  # a 400


def test_too_large_days_needs_more_cuts_than_serves_and_two_at_least():
    from tap_mixpanel_parallel.export.plan import too_large_days

    assert too_large_days([], []) is None
    assert too_large_days([16], []) is None  # one cut is a week too large, not a size
    assert too_large_days([16, 16], []) == 16
    assert too_large_days([16, 16], [16, 16]) is None  # as often served as cut
    assert too_large_days([16, 16, 8, 8], [16, 4, 4]) == 8
    assert too_large_days([16, 16, 8, 8, 8], [4, 4, 16]) == 8


@given(cut=st.lists(st.integers(1, 60), max_size=30), served=st.lists(st.integers(1, 60)))
def test_too_large_days_is_a_size_that_was_cut_more_than_served(cut, served):
    from tap_mixpanel_parallel.export.plan import too_large_days

    size = too_large_days(cut, served)
    if size is not None:
        assert size in cut
        cuts = sum(1 for d in cut if d >= size)
        assert cuts >= 2 and cuts > sum(1 for d in served if d >= size)


# -- time left in the progress output ------------------------------------------------------------


def test_progress_shows_time_left_from_the_budget_and_the_pace(caplog):
    import logging

    from tap_mixpanel_parallel.export.partitions import PlannedPartition
    from tap_mixpanel_parallel.export.runner import PartitionResult
    from tap_mixpanel_parallel.progress import Progress
    from tap_mixpanel_parallel.run.status import Status

    now = [0.0]
    started = [0]
    logger = logging.getLogger("test-plan-progress")
    progress = Progress(
        105,
        logger,
        clock=lambda: now[0],
        bar=False,
        budget=(60, 3),
        requests=lambda: started[0],
    )
    assert progress.time_left() == pytest.approx(3614)  # nothing done: the budget's floor
    week = Partition(D(2024, 1, 1), D(2024, 1, 7))
    planned = PlannedPartition(week, False)
    now[0], started[0] = 60.0, 10
    with caplog.at_level(logging.INFO, logger="test-plan-progress"):
        progress.partition_finished(PartitionResult(0, planned, Status.OK, records=5, attempts=1))
    # 104 more requests after 10: the last starts in the second hour; the pace says 104 minutes
    assert (
        "partition 1/105 2024-01-01..2024-01-07: 5 records in 0.0s ok (1 attempt, 1h44m left)"
        in (caplog.text)
    )
    assert progress.line().endswith("1h44m left")
    # a piece of a split partition names both, and counts the partition once, at its last piece
    first, rest = halves(week)
    with caplog.at_level(logging.INFO, logger="test-plan-progress"):
        progress.partition_finished(
            PartitionResult(1, planned, Status.OK, records=1, piece=first, last=False)
        )
        assert progress.finished == 1
        progress.partition_finished(
            PartitionResult(1, planned, Status.FAILED, error="cut", piece=rest, last=True)
        )
    assert "partition 2/105 2024-01-01..2024-01-07 piece 2024-01-01..2024-01-04" in caplog.text
    assert (progress.finished, progress.ok, progress.failed) == (2, 1, 1)

"""State: the bookmark and failed_partitions over any sequence of runs."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tap_mixpanel_parallel.export.partitions import Partition, PlannedPartition, plan_partitions
from tap_mixpanel_parallel.export.state import (
    ExportState,
    StateError,
    dump_state,
    load_state,
    settle_done,
    settle_failed,
)

D = dt.date
TODAY = D(2030, 1, 1)


def planned(a, b, retry=False):
    return PlannedPartition(Partition(a, b), retry_of_failed=retry)


def test_round_trip_and_shape():
    state = ExportState(D(2024, 3, 10), ())
    state = settle_failed(state, planned(D(2024, 3, 11), D(2024, 3, 17)), "HTTP 503", 6, TODAY)
    dumped = dump_state(state)
    assert dumped == {
        "replication_key": "time",
        "replication_key_value": "2024-03-17",
        "failed_partitions": [
            {"from_date": "2024-03-11", "to_date": "2024-03-17", "error": "HTTP 503", "attempts": 6}
        ],
    }
    assert load_state(dumped) == state
    assert load_state({}) == ExportState()


def test_failed_again_sums_attempts_and_success_removes():
    p = planned(D(2024, 1, 1), D(2024, 1, 7))
    state = settle_failed(ExportState(), p, "first", 6, TODAY)
    retry = planned(D(2024, 1, 1), D(2024, 1, 7), retry=True)
    state = settle_failed(state, retry, "second", 6, TODAY)
    assert [(f.error, f.attempts) for f in state.failed] == [("second", 12)]
    state = settle_done(state, retry, TODAY)
    assert state.failed == ()
    assert state.bookmark == D(2024, 1, 7)


def test_bookmark_never_covers_today_and_never_moves_back():
    today = D(2024, 1, 5)
    state = settle_done(ExportState(), planned(D(2024, 1, 1), D(2024, 1, 5)), today)
    assert state.bookmark == D(2024, 1, 4)
    state = settle_done(state, planned(D(2024, 1, 1), D(2024, 1, 2)), today)
    assert state.bookmark == D(2024, 1, 4)


@pytest.mark.parametrize(
    ("state", "match"),
    [
        ({"replication_key_value": 5}, "replication_key_value"),
        ({"replication_key_value": "yesterday"}, "not a date"),
        ({"failed_partitions": {}}, "must be a list"),
        ({"failed_partitions": ["x"]}, "must be an object"),
        ({"failed_partitions": [{"from_date": "2024-01-02", "to_date": "2024-01-01"}]}, "after"),
        ({"failed_partitions": [{"from_date": "2024-01-02"}]}, "to_date"),
    ],
)
def test_bad_state_is_named(state, match):
    with pytest.raises(StateError, match=match):
        load_state(state)


run_strategy = st.tuples(
    st.lists(st.booleans(), min_size=1, max_size=40),  # outcome of each planned partition
    st.none() | st.integers(0, 40),  # interrupted after this many settled partitions
)


@settings(max_examples=300, deadline=None)
@given(
    length=st.integers(0, 120),
    size=st.integers(1, 10),
    runs=st.lists(run_strategy, min_size=1, max_size=6),
    final_outcomes=st.lists(st.booleans(), min_size=1, max_size=40),
)
def test_runs_cover_the_range_exactly_once(length, size, runs, final_outcomes):
    """Any sequence of outcomes and restarts: every day emitted at most once, and the final
    state lists exactly what never succeeded (lookback 0, as for a resumed backfill)."""
    start = D(2024, 1, 1)
    end = start + dt.timedelta(days=length)
    state_json: dict = {}
    emitted: list[Partition] = []
    ever_failed: set[Partition] = set()
    for outcomes, interrupt_at in [*runs, (final_outcomes, None)]:
        state = load_state(state_json)
        plan = plan_partitions(
            start_date=start,
            end_date=end,
            partition_days=size,
            lookback_days=0,
            bookmark=state.bookmark,
            failed=state.failed_partitions,
        )
        # the runner settles partitions in plan order; a stop leaves a settled prefix
        stop = len(plan) if interrupt_at is None else min(interrupt_at, len(plan))
        for i, p in enumerate(plan[:stop]):
            if outcomes[i % len(outcomes)]:
                state = settle_done(state, p, TODAY)
                emitted.append(p.partition)
            else:
                state = settle_failed(state, p, "boom", 1, TODAY)
                ever_failed.add(p.partition)
        state_json = dump_state(state)

    final = load_state(state_json)
    days = [p.from_date + dt.timedelta(days=i) for p in emitted for i in range(p.days)]
    assert len(days) == len(set(days)), "an event day was emitted twice"
    failed_days = {
        f.from_date + dt.timedelta(days=i) for f in final.failed_partitions for i in range(f.days)
    }
    assert not failed_days & set(days)
    everything = {start + dt.timedelta(days=i) for i in range(length + 1)}
    # the last run ran to the end: every day is emitted or owed as a failed partition
    assert set(days) | failed_days == everything
    never_succeeded = {p for p in ever_failed if p not in emitted}
    assert set(final.failed_partitions) == never_succeeded
    assert final.bookmark == end

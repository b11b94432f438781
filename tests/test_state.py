"""State: the bookmark and failed_partitions over any sequence of runs."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tap_mixpanel_parallel.export.partitions import PlannedPartition, plan_partitions
from tap_mixpanel_parallel.export.state import (
    ExportState,
    FailedPartition,
    bookmark_in_future,
    dump_state,
    load_state,
    merge_overlapping,
    read_state_file,
    settle_done,
    settle_failed,
)
from tap_mixpanel_parallel.run.dates import Partition
from tap_mixpanel_parallel.run.state import StateError

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


# -- hand-edited and foreign state ----------------------------------------------------------------

day = st.integers(0, 60).map(lambda n: D(2024, 1, 1) + dt.timedelta(days=n))
span = st.tuples(day, st.integers(0, 12)).map(lambda t: (t[0], t[0] + dt.timedelta(days=t[1])))


def days_of(partitions):
    return [p.from_date + dt.timedelta(days=i) for p in partitions for i in range(p.days)]


@settings(max_examples=300, deadline=None)
@given(spans=st.lists(span, max_size=12), attempts=st.lists(st.integers(0, 9), min_size=12))
def test_overlapping_failed_partitions_are_merged_into_disjoint_ones(spans, attempts):
    failed = [
        FailedPartition(Partition(a, b), f"error {i}", attempts[i])
        for i, (a, b) in enumerate(spans)
    ]
    merged = merge_overlapping(failed)
    merged_days = days_of(f.partition for f in merged)
    assert len(merged_days) == len(set(merged_days)), "a day is owed twice"
    assert set(merged_days) == set(days_of(f.partition for f in failed))
    for entry in failed:  # each hand-edited range lies inside one merged range
        (home,) = [
            m
            for m in merged
            if m.partition.from_date <= entry.partition.from_date
            and entry.partition.to_date <= m.partition.to_date
        ]
        assert home.attempts >= entry.attempts
    if len(set(spans)) == len(spans) and all(
        a.partition.to_date < b.partition.from_date or b.partition.to_date < a.partition.from_date
        for i, a in enumerate(failed)
        for b in failed[i + 1 :]
    ):
        assert merged == tuple(failed), "disjoint ranges are kept as they are, in order"


@settings(max_examples=300, deadline=None)
@given(
    spans=st.lists(span, max_size=8),
    bookmark=st.none() | day,
    length=st.integers(0, 80),
    size=st.integers(1, 10),
    lookback=st.integers(0, 10),
)
def test_a_plan_from_any_hand_edited_state_fetches_no_day_twice(
    spans, bookmark, length, size, lookback
):
    raw = {
        "failed_partitions": [
            {"from_date": a.isoformat(), "to_date": b.isoformat(), "error": "x", "attempts": 1}
            for a, b in spans
        ]
    }
    if bookmark is not None:
        raw["replication_key_value"] = bookmark.isoformat()
    state = load_state(raw)
    plan = plan_partitions(
        start_date=D(2024, 1, 1),
        end_date=D(2024, 1, 1) + dt.timedelta(days=length),
        partition_days=size,
        lookback_days=lookback,
        bookmark=state.bookmark,
        failed=state.failed_partitions,
    )
    planned_days = days_of(p.partition for p in plan)
    assert len(planned_days) == len(set(planned_days)), "a day is fetched twice in one run"
    assert set(days_of(Partition(a, b) for a, b in spans)) <= set(planned_days)


SINGER_IO = {"bookmarks": {"export": "2024-01-01T00:00:00Z"}}


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "is empty"),
        ("   \n", "is empty"),
        ("{not json", "is not JSON"),
        ("[]", "not a list"),
        ('"2024-01-01"', "not a str"),
        (json.dumps(SINGER_IO), "singer-io tap-mixpanel's shape"),
        ('{"bookmarks": []}', "bookmarks must be an object"),
        ('{"bookmarks": {"events": "2024-01-01"}}', "bookmarks.events must be an object"),
        ('{"bookmarks": {"events": {"replication_key_value": 20240101}}}', "YYYY-MM-DD"),
        (
            '{"bookmarks": {"events": {"failed_partitions": [{"from_date": "2024-01-01",'
            ' "to_date": "2024-01-07", "attempts": "six"}]}}}',
            "attempts must be a whole number",
        ),
        (
            '{"bookmarks": {"events": {"failed_partitions": [{"from_date": "2024-01-01",'
            ' "to_date": "2024-01-07", "error": 503}]}}}',
            "error must be a string",
        ),
    ],
)
def test_unreadable_or_foreign_state_files_are_named(text, match):
    with pytest.raises(StateError, match=match) as caught:
        read_state_file(text, "state.json")
    assert "\n" not in str(caught.value)


def test_a_state_of_other_streams_and_no_bookmarks_is_fine():
    assert read_state_file("{}", "s") == {}
    other = {"bookmarks": {"engage": {"x": 1}}, "currently_syncing": None}
    assert read_state_file(json.dumps(other), "s") == other


def test_a_bookmark_after_yesterday_is_read_as_yesterday():
    today = D(2024, 5, 10)
    assert bookmark_in_future(ExportState(D(2024, 5, 9)), today) is None
    assert bookmark_in_future(ExportState(None), today) is None
    assert bookmark_in_future(ExportState(D(2024, 5, 10)), today) == D(2024, 5, 9)
    assert bookmark_in_future(ExportState(D(2099, 1, 1)), today) == D(2024, 5, 9)


GOOD = {"from_date": "2024-01-01", "to_date": "2024-01-07", "error": "HTTP 503", "attempts": 6}
BAD_FIELDS = {
    "from_date": [None, 20240101, "Jan 1"],
    "to_date": [None, 20240107, "soon"],
    "attempts": [-1, 1.5, True, "six"],
    "error": [503, None],
}


@given(
    before=st.integers(0, 4),
    field=st.sampled_from(sorted(BAD_FIELDS)),
    pick=st.integers(0, 3),
)
def test_a_bad_failed_partition_is_named_by_index_and_field_and_says_what_to_do(
    before, field, pick
):
    values = BAD_FIELDS[field]
    entries = [GOOD] * before + [{**GOOD, field: values[pick % len(values)]}]
    with pytest.raises(StateError) as caught:
        load_state({"failed_partitions": entries})
    message = str(caught.value)
    assert message.startswith(f"state failed_partitions[{before}].{field} ")
    assert message.endswith("; fix or delete the state")


@pytest.mark.parametrize(
    ("entry", "starts"),
    [
        ({"replication_key_value": "March"}, "state replication_key_value "),
        ({"replication_key_value": 20240310}, "state replication_key_value "),
        ({"failed_partitions": "2024-01-01"}, "state failed_partitions must be a list"),
        ({"failed_partitions": [GOOD, "x"]}, "state failed_partitions[1] must be an object"),
        ({"failed_partitions": [{**GOOD, "to_date": "2023-12-31"}]}, "state failed_partitions[0] "),
    ],
)
def test_every_unreadable_events_entry_names_its_key_and_says_what_to_do(entry, starts):
    with pytest.raises(StateError) as caught:
        load_state(entry)
    assert str(caught.value).startswith(starts)
    assert str(caught.value).endswith("; fix or delete the state")


def test_singer_io_state_says_how_to_go_on_from_its_day():
    with pytest.raises(StateError) as caught:
        read_state_file(json.dumps(SINGER_IO), "state.json")
    message = str(caught.value)
    assert message.startswith("state has singer-io tap-mixpanel's shape (bookmarks.export)")
    assert message.endswith("set start_date to it and run without --state")


@given(
    st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1)),
    st.booleans(),
)
def test_a_date_time_bookmark_is_read_as_its_day(moment, aware):
    """A hand-edited or foreign bookmark may carry a time (and an offset): its day counts."""
    if aware:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    assert load_state({"replication_key_value": moment.isoformat()}).bookmark == moment.date()
    state = {"failed_partitions": [{"from_date": moment.isoformat(), "to_date": "2100-01-01"}]}
    assert load_state(state).failed[0].partition.from_date == moment.date()


@given(
    st.lists(
        st.tuples(st.integers(0, 60), st.integers(0, 10)).map(
            lambda t: {
                "from_date": (D(2024, 1, 1) + dt.timedelta(days=t[0] * 20)).isoformat(),
                "to_date": (D(2024, 1, 1) + dt.timedelta(days=t[0] * 20 + t[1])).isoformat(),
            }
        ),
        min_size=1,
        max_size=5,
        unique_by=lambda e: e["from_date"],
    )
)
def test_a_failed_partition_with_only_its_dates_is_owed_with_no_attempts_and_no_error(entries):
    """Such an entry is how a user asks for days again by hand: nothing was tried yet."""
    state = load_state({"failed_partitions": entries})
    assert [(f.error, f.attempts) for f in state.failed] == [("", 0)] * len(entries)
    assert [str(f.partition) for f in state.failed] == [
        f"{e['from_date']}..{e['to_date']}" for e in entries
    ]
    dumped = dump_state(state)["failed_partitions"]
    assert all(d["error"] == "" and d["attempts"] == 0 for d in dumped)


# -- a failed partition settled a piece at a time -------------------------------------------------


def test_a_piece_in_the_middle_of_an_owed_range_splits_it_around_the_piece():
    before = FailedPartition(Partition(D(2024, 1, 1), D(2024, 1, 3)), "before", 1)
    week = FailedPartition(Partition(D(2024, 2, 1), D(2024, 2, 7)), "cut", 6)
    after = FailedPartition(Partition(D(2024, 3, 1), D(2024, 3, 2)), "after", 2)
    state = ExportState(D(2024, 3, 31), (before, week, after))
    retry = planned(D(2024, 2, 1), D(2024, 2, 7), retry=True)
    piece = Partition(D(2024, 2, 3), D(2024, 2, 4))

    failed_again = settle_failed(state, retry, "500", 2, TODAY, piece)
    assert failed_again == ExportState(
        D(2024, 3, 31),
        (
            before,
            FailedPartition(Partition(D(2024, 2, 1), D(2024, 2, 2)), "cut", 6),
            FailedPartition(piece, "500", 8),
            FailedPartition(Partition(D(2024, 2, 5), D(2024, 2, 7)), "cut", 6),
            after,
        ),
    )
    done = settle_done(state, retry, TODAY, piece)
    assert done == ExportState(
        D(2024, 3, 31),
        (
            before,
            FailedPartition(Partition(D(2024, 2, 1), D(2024, 2, 2)), "cut", 6),
            FailedPartition(Partition(D(2024, 2, 5), D(2024, 2, 7)), "cut", 6),
            after,
        ),
    )


def test_a_piece_of_a_new_partition_is_owed_alone_and_its_days_only():
    week = planned(D(2024, 2, 1), D(2024, 2, 7))
    piece = Partition(D(2024, 2, 1), D(2024, 2, 3))
    state = settle_failed(ExportState(), week, "cut", 3, TODAY, piece)
    assert state == ExportState(D(2024, 2, 3), (FailedPartition(piece, "cut", 3),))
    rest = Partition(D(2024, 2, 4), D(2024, 2, 7))
    state = settle_done(state, week, TODAY, rest)
    assert state == ExportState(D(2024, 2, 7), (FailedPartition(piece, "cut", 3),))


def owed_after(failed, index, piece, again):
    """What the failed list must be once ``piece`` of ``failed[index]`` is settled, day by day:
    the entry's other days keep its error and attempts, the piece (when ``again`` failed) takes
    their place with the attempts summed, and nothing else moves."""
    entry = failed[index]
    span = entry.partition
    around = []
    if span.from_date < piece.from_date:
        left = Partition(span.from_date, piece.from_date - dt.timedelta(days=1))
        around.append(FailedPartition(left, entry.error, entry.attempts))
    if again is not None:
        around.append(FailedPartition(piece, again.error, again.attempts + entry.attempts))
    if piece.to_date < span.to_date:
        right = Partition(piece.to_date + dt.timedelta(days=1), span.to_date)
        around.append(FailedPartition(right, entry.error, entry.attempts))
    return (*failed[:index], *around, *failed[index + 1 :])


@settings(max_examples=300, deadline=None)
@given(
    gaps=st.lists(st.tuples(st.integers(1, 5), st.integers(0, 9)), min_size=1, max_size=5),
    attempts=st.lists(st.integers(0, 9), min_size=5, max_size=5),
    data=st.data(),
)
def test_settling_a_piece_of_an_owed_range_keeps_exactly_its_other_days(gaps, attempts, data):
    failed = []
    start = D(2024, 1, 1)
    for i, (gap, length) in enumerate(gaps):
        start += dt.timedelta(days=gap)
        end = start + dt.timedelta(days=length)
        failed.append(FailedPartition(Partition(start, end), f"error {i}", attempts[i]))
        start = end + dt.timedelta(days=1)
    failed = tuple(failed)
    index = data.draw(st.integers(0, len(failed) - 1))
    span = failed[index].partition
    first = data.draw(st.integers(0, span.days - 1))
    last = data.draw(st.integers(first, span.days - 1))
    piece = Partition(
        span.from_date + dt.timedelta(days=first), span.from_date + dt.timedelta(days=last)
    )
    bookmark = D(2024, 12, 31)
    state = ExportState(bookmark, failed)
    retry = planned(span.from_date, span.to_date, retry=True)

    again = FailedPartition(piece, "again", data.draw(st.integers(1, 9)))
    assert settle_failed(state, retry, "again", again.attempts, TODAY, piece) == ExportState(
        bookmark, owed_after(failed, index, piece, again)
    )
    assert settle_done(state, retry, TODAY, piece) == ExportState(
        bookmark, owed_after(failed, index, piece, None)
    )

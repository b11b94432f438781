"""Pure pieces of the query streams: paging arithmetic, the engage bookmark, page parsing."""

from __future__ import annotations

import datetime as dt
import io
import json
from array import array

import msgspec
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tap_mixpanel_parallel.query.paging import (
    Session,
    broken_split,
    is_short,
    page_count,
    pages_to_add,
    repeated_keys,
)
from tap_mixpanel_parallel.query.records import PageMalformed, ProfileEncoder
from tap_mixpanel_parallel.query.state import (
    EngageState,
    ahead_of,
    dump_bookmark,
    dump_engage_state,
    engage_where,
    format_last_seen,
    full_read_due,
    later,
    load_bookmark,
    load_engage_state,
    parse_last_seen,
)
from tap_mixpanel_parallel.run.state import StateError
from tap_mixpanel_parallel.run.text import REPLACEMENT
from tests.helpers import machine_zone

UTC = dt.timezone.utc


@given(total=st.integers(0, 10**7), size=st.integers(1, 10**5))
def test_planned_pages_cover_the_total_exactly(total, size):
    pages = page_count(total, size)
    assert pages >= 1
    # Every profile falls in one planned page and no planned page after the first is empty.
    assert (pages - 1) * size < max(total, 1) <= pages * size


@given(total=st.integers(0, 10**6), size=st.integers(1, 5000))
def test_a_last_page_that_would_be_full_is_followed_by_one_asked_for_with_it(total, size):
    planned = Session("s", size, total).planned_pages
    full_last = total > 0 and total % size == 0
    assert planned == page_count(total, size) + full_last


@given(total=st.integers(0, 5000), size=st.integers(1, 700), extra=st.integers(0, 3))
# pages of one profile: each full page asks for the next
@example(total=0, size=1, extra=3)
def test_paging_until_a_short_page_reads_everything_even_when_total_is_short(total, size, extra):
    """Mixpanel's total may be lower than what the session holds: pages are asked for while
    full, so every profile is read and no page past the first empty one is asked for."""
    held = total + extra * size  # what the session really holds
    known = Session("s", size, total).planned_pages
    counts: dict[int, int] = {}
    short = False
    page = 0
    while page < known:
        counts[page] = max(0, min(size, held - page * size))
        short = short or counts[page] < size
        known += pages_to_add(known, counts, short_seen=short, open_ended=False, window=5)
        page += 1
    assert sum(counts.values()) == held
    assert known <= page_count(held, size) + 1
    assert broken_split(counts, size) is None


@given(
    held=st.integers(0, 5000),
    size=st.integers(1, 700),
    window=st.integers(1, 6),
    order=st.randoms(use_true_random=False),
)
def test_without_total_pages_go_a_window_ahead_and_end_at_the_first_short_one(
    held, size, window, order
):
    """Pages come back in any order; every profile is read, at most ``window`` pages are in
    flight, and no more than a window of pages past the end is asked for."""
    counts = {0: min(size, held)}
    short = counts[0] < size
    known = 1 + pages_to_add(1, counts, short_seen=short, open_ended=True, window=window)
    in_flight = set(range(1, known))
    while in_flight:
        assert len(in_flight) <= window
        page = order.choice(sorted(in_flight))
        in_flight.discard(page)
        counts[page] = max(0, min(size, held - page * size))
        short = short or counts[page] < size
        more = pages_to_add(known, counts, short_seen=short, open_ended=True, window=window)
        in_flight.update(range(known, known + more))
        known += more
    assert sum(counts.values()) == held
    assert known <= page_count(held, size) + 1 + window
    assert broken_split(counts, size) is None


@given(size=st.integers(1, 10**4), count=st.integers(0, 2 * 10**4))
@example(size=1, count=1)
@example(size=1, count=0)
@example(size=2, count=2)
def test_only_a_page_under_the_page_size_is_short(size, count):
    """A full page, even of a page size of one, goes on to the next; one profile fewer ends."""
    assert is_short(count, size) == (count < size)
    assert not is_short(size, size)
    assert is_short(size - 1, size)


@given(window=st.integers(1, 8), in_flight=st.integers(0, 12), received=st.integers(1, 20))
@example(window=5, in_flight=5, received=1)
def test_no_page_is_added_while_the_window_is_full(window, in_flight, received):
    """Pages asked for and not yet back count against the window; a full (or overfull, after a
    smaller window) window asks for none."""
    known = received + in_flight
    got = range(received)
    more = pages_to_add(known, got, short_seen=False, open_ended=True, window=window)
    assert more == max(0, window - in_flight)
    assert pages_to_add(known, got, short_seen=True, open_ended=True, window=window) == 0


def test_a_short_page_before_the_last_non_empty_one_is_a_broken_split():
    assert broken_split({0: 9, 1: 10, 2: 5}, 10) is not None
    assert "page 0 held 9" in (broken_split({0: 9, 1: 10, 2: 5}, 10) or "")
    assert broken_split({0: 10, 1: 10, 2: 5}, 10) is None
    assert broken_split({0: 10, 1: 5, 2: 0, 3: 0}, 10) is None
    assert broken_split({0: 10, 1: 0, 2: 1}, 10) is not None


@given(st.lists(st.lists(st.integers(0, 2**64 - 1), max_size=50), max_size=20))
def test_repeated_keys_counts_every_key_seen_before(pages):
    flat = [key for keys in pages for key in keys]
    assert repeated_keys(array("Q", keys) for keys in pages) == len(flat) - len(set(flat))


@given(
    total=st.integers(-10, 10**6),
    size=st.integers(-5, 0),
    page=st.integers(0, 5),
    count=st.integers(0, 10**4),
)
def test_a_page_size_under_one_plans_page_zero_alone_and_never_asks_for_more(
    total, size, page, count
):
    """Not a size Mixpanel sends; if it did, paging must end, not loop."""
    assert page_count(total, size) == 1
    assert is_short(count, size)
    for open_ended in (False, True):
        received = range(page + 1)
        assert not pages_to_add(
            page + 1, received, short_seen=is_short(count, size), open_ended=open_ended, window=5
        )


@given(size=st.integers(1, 50), known=st.integers(1, 8), data=st.data())
def test_a_short_page_is_flagged_only_before_the_last(size, known, data):
    counts = [size] * (known - 1) + [data.draw(st.integers(1, size))]
    short = data.draw(st.integers(0, known - 1))
    counts[short] = data.draw(st.integers(0, size - 1))
    broken = broken_split(dict(enumerate(counts)), size)
    assert (broken is not None) == (short < known - 1)
    assert broken is None or broken.startswith(f"page {short} held")


@given(
    st.datetimes(min_value=dt.datetime(2000, 1, 2), max_value=dt.datetime(2099, 12, 30)),
    st.integers(-12 * 60, 14 * 60),
)
def test_last_seen_is_read_and_written_in_utc_whatever_the_machine_zone(moment, offset):
    moment = moment.replace(microsecond=0)
    sent = moment.replace(tzinfo=dt.timezone(dt.timedelta(minutes=offset)))
    in_utc = sent.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    with machine_zone("Asia/Kathmandu"):  # +05:45: no hour-aligned coincidence
        parsed = parse_last_seen(sent.isoformat())
        assert parsed is not None
        assert parsed.utcoffset() == dt.timedelta(0)
        assert format_last_seen(sent) == in_utc
        assert format_last_seen(parsed) == in_utc


@given(
    st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1)),
    st.integers(0, 400),
)
def test_the_bookmark_round_trips_and_the_lookback_reaches_back(moment, lookback):
    moment = moment.replace(microsecond=0, tzinfo=UTC)
    state = dump_bookmark(moment, "last_seen")
    assert state == {
        "replication_key": "last_seen",
        "replication_key_value": format_last_seen(moment),
    }
    assert load_bookmark(state, "engage") == moment
    where = engage_where(moment, lookback, full_refresh=False)
    since = moment - dt.timedelta(days=lookback)
    assert where == f'properties["$last_seen"] >= "{since.strftime("%Y-%m-%dT%H:%M:%S")}"'


def test_no_bookmark_or_a_full_refresh_reads_every_profile():
    moment = dt.datetime(2024, 3, 1, tzinfo=UTC)
    assert engage_where(None, 5, full_refresh=False) is None
    assert engage_where(moment, 5, full_refresh=True) is None
    assert load_bookmark({}, "engage") is None


def test_an_unreadable_bookmark_is_a_state_error_naming_the_key():
    with pytest.raises(StateError, match=r"bookmarks\.engage\.replication_key_value"):
        load_bookmark({"replication_key_value": "yesterday"}, "engage")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-01-31T12:00:00", dt.datetime(2024, 1, 31, 12, tzinfo=UTC)),
        ("2024-01-31T12:00:00Z", dt.datetime(2024, 1, 31, 12, tzinfo=UTC)),
        ("2024-01-31T12:00:00z", dt.datetime(2024, 1, 31, 12, tzinfo=UTC)),
        ("2024-01-31T12:00:00.5Z", dt.datetime(2024, 1, 31, 12, 0, 0, 500000, tzinfo=UTC)),
        ("Z", None),
        ("2024-01-31T13:00:00+01:00", dt.datetime(2024, 1, 31, 12, tzinfo=UTC)),
        ("not a date", None),
        (1706702400, None),
        (None, None),
        ("", None),
    ],
)
def test_last_seen_is_read_as_utc(raw, expected):
    assert parse_last_seen(raw) == expected


@given(st.lists(st.none() | st.datetimes(timezones=st.just(UTC)), max_size=8))
def test_later_is_the_max_of_what_is_known(moments):
    result = None
    for m in moments:
        result = later(result, m)
    known = [m for m in moments if m is not None]
    assert result == (max(known) if known else None)


SECONDS = st.datetimes(
    min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1), timezones=st.just(UTC)
).map(lambda moment: moment.replace(microsecond=0))


@given(bookmark=st.none() | SECONDS, last_full_read=st.none() | SECONDS)
def test_the_engage_state_round_trips_in_the_sdks_shape(bookmark, last_full_read):
    state = EngageState(bookmark, last_full_read)
    dumped = dump_engage_state(state, "last_seen")
    expected: dict[str, object] = {"replication_key": "last_seen"}
    if bookmark is not None:
        expected["replication_key_value"] = format_last_seen(bookmark)
    if last_full_read is not None:
        expected["last_full_read"] = format_last_seen(last_full_read)
    assert dumped == expected
    assert load_engage_state(dumped) == state


def test_a_first_run_has_an_empty_engage_state():
    assert load_engage_state({}) == EngageState(None, None)
    assert load_engage_state({"replication_key_value": None, "last_full_read": None}) == (
        EngageState()
    )
    assert EngageState() == EngageState(None, None)


@pytest.mark.parametrize("raw", ["last week", "", 1706702400])
def test_an_unreadable_last_full_read_is_a_state_error_naming_the_key(raw):
    given = {"replication_key_value": "2024-01-31T12:00:00", "last_full_read": raw}
    with pytest.raises(StateError) as caught:
        load_engage_state(given)
    assert str(caught.value) == (
        f"bookmarks.engage.last_full_read: {raw!r} is not an ISO 8601 date-time"
    )


def test_an_unreadable_engage_bookmark_is_a_state_error_naming_the_key():
    with pytest.raises(StateError) as caught:
        load_engage_state({"replication_key_value": "soon", "last_full_read": "2024-01-31"})
    assert str(caught.value) == (
        "bookmarks.engage.replication_key_value: 'soon' is not an ISO 8601 date-time"
    )


@given(moment=st.none() | SECONDS, clock=SECONDS)
@example(moment=dt.datetime(2024, 1, 31, tzinfo=UTC), clock=dt.datetime(2024, 1, 31, tzinfo=UTC))
def test_only_a_moment_after_the_clock_is_ahead_of_it(moment, clock):
    expected = moment if moment is not None and moment > clock else None
    assert ahead_of(moment, clock) == expected


def test_a_moment_a_second_after_the_clock_is_ahead_of_it():
    clock = dt.datetime(2024, 1, 31, 12, tzinfo=UTC)
    second = dt.timedelta(seconds=1)
    assert ahead_of(clock + second, clock) == clock + second
    assert ahead_of(clock, clock) is None
    assert ahead_of(clock - second, clock) is None
    assert ahead_of(None, clock) is None


NOW = dt.datetime(2024, 3, 10, 6, tzinfo=UTC)
BOOKMARK = dt.datetime(2024, 3, 9, tzinfo=UTC)


@pytest.mark.parametrize("every_days", [None, 1, 7])
@pytest.mark.parametrize("last_full_read", [None, NOW])
def test_a_forced_or_first_engage_run_reads_every_profile(every_days, last_full_read):
    assert full_read_due(EngageState(None, last_full_read), NOW, every_days, forced=False)
    assert full_read_due(EngageState(BOOKMARK, last_full_read), NOW, every_days, forced=True)
    assert full_read_due(EngageState(None, last_full_read), NOW, every_days, forced=True)


def test_without_a_full_refresh_period_an_engage_run_with_a_bookmark_is_incremental():
    assert not full_read_due(EngageState(BOOKMARK, None), NOW, None, forced=False)
    assert not full_read_due(EngageState(BOOKMARK, BOOKMARK), NOW, None, forced=False)


@given(every_days=st.integers(1, 400), age=st.integers(0, 500 * 86400))
@example(every_days=7, age=7 * 86400)
@example(every_days=7, age=7 * 86400 - 1)
@example(every_days=1, age=86400 - 1)
def test_a_full_read_is_due_once_the_period_has_passed_since_the_last(every_days, age):
    last = NOW - dt.timedelta(seconds=age)
    due = full_read_due(EngageState(BOOKMARK, last), NOW, every_days, forced=False)
    assert due == (age >= every_days * 86400)
    # Never read in full yet (a state from before the setting): due at once.
    assert full_read_due(EngageState(BOOKMARK, None), NOW, every_days, forced=False)


PAGE = {
    "page": 0,
    "page_size": 2,
    "session_id": "s1",
    "status": "ok",
    "total": 3,
    "results": [
        {
            "$distinct_id": "a",
            "$properties": {"$last_seen": "2024-01-02T00:00:00", "n": {"x": [1, 2]}},
        },
        {"$distinct_id": 42, "$properties": {"$email": "b@example.com"}},
    ],
}


def test_a_page_becomes_records_with_properties_untouched():
    sink = io.BytesIO()
    written = ProfileEncoder("engage", as_messages=False).write_page(
        json.dumps(PAGE).encode(), sink, "2024-01-01T00:00:00+00:00"
    )
    records = [json.loads(line) for line in sink.getvalue().splitlines()]
    assert records == [
        {
            "distinct_id": "a",
            "last_seen": "2024-01-02T00:00:00+00:00",
            "properties": PAGE["results"][0]["$properties"],
        },
        {"distinct_id": "42", "last_seen": None, "properties": {"$email": "b@example.com"}},
    ]
    assert (written.count, written.session_id, written.page_size, written.total) == (2, "s1", 2, 3)
    assert written.max_last_seen == dt.datetime(2024, 1, 2, tzinfo=UTC)


def test_members_carry_the_cohort_and_the_key_only_as_whole_messages():
    sink = io.BytesIO()
    ProfileEncoder(
        "cohort_members", as_messages=True, extra={"cohort_id": 7}, with_profile=False
    ).write_page(json.dumps(PAGE).encode(), sink, "T")
    messages = [json.loads(line) for line in sink.getvalue().splitlines()]
    assert [m["record"] for m in messages] == [
        {"cohort_id": 7, "distinct_id": "a"},
        {"cohort_id": 7, "distinct_id": "42"},
    ]
    assert {(m["type"], m["stream"], m["time_extracted"]) for m in messages} == {
        ("RECORD", "cohort_members", "T")
    }


def test_a_cut_page_and_a_foreign_answer_are_told_apart():
    body = json.dumps(PAGE).encode()
    with pytest.raises(msgspec.DecodeError):
        ProfileEncoder("engage", as_messages=False).write_page(body[:-5], io.BytesIO(), "T")
    with pytest.raises(PageMalformed):
        ProfileEncoder("engage", as_messages=False).write_page(
            b'{"status":"ok"}', io.BytesIO(), "T"
        )


# -- funnels ---------------------------------------------------------------------------------------

from tap_mixpanel_parallel.query.funnels import (  # noqa: E402
    dump_funnel_bookmarks,
    load_funnel_bookmarks,
    plan_funnel_windows,
    settled,
)

D0 = dt.date(2024, 1, 1)


@given(
    days=st.integers(0, 400),
    window=st.integers(1, 90),
    lookback=st.integers(0, 30),
    marks=st.dictionaries(st.sampled_from([1, 2, 3]), st.integers(-5, 420), max_size=3),
)
def test_funnel_windows_cover_each_funnel_once_from_its_bookmark(days, window, lookback, marks):
    end = D0 + dt.timedelta(days=days)
    bookmarks = {k: D0 + dt.timedelta(days=v) for k, v in marks.items()}
    plan = plan_funnel_windows(
        [(1, "a"), (2, "b"), (3, None)],
        bookmarks,
        start=D0,
        end=end,
        window_days=window,
        lookback_days=lookback,
    )
    for funnel in (1, 2, 3):
        mine = [p.window for p in plan if p.funnel_id == funnel]
        first = D0
        if funnel in bookmarks:
            first = max(D0, bookmarks[funnel] + dt.timedelta(days=1 - lookback))
        covered = [w.from_date + dt.timedelta(days=n) for w in mine for n in range(w.days)]
        expected = [first + dt.timedelta(days=n) for n in range((end - first).days + 1)]
        assert covered == expected  # contiguous, in order, each day once
        assert all(w.days <= window for w in mine)


def test_funnel_bookmarks_round_trip_and_never_settle_today():
    marks = {7001: dt.date(2024, 2, 1), 7002: dt.date(2024, 1, 5)}
    assert load_funnel_bookmarks(dump_funnel_bookmarks(marks)) == marks
    assert load_funnel_bookmarks({}) == {}
    from tap_mixpanel_parallel.run.dates import Partition

    today = dt.date(2024, 3, 10)
    assert settled(Partition(dt.date(2024, 3, 1), today), today) == dt.date(2024, 3, 9)
    assert settled(Partition(dt.date(2024, 2, 1), dt.date(2024, 2, 9)), today) == dt.date(
        2024, 2, 9
    )
    with pytest.raises(StateError, match="7001"):
        load_funnel_bookmarks({"funnels": {"7001": "soon"}})


# -- the Query API limiter: pages of a session may go uncharged ------------------------------------


def test_uncharged_slots_skip_the_hourly_budget_but_not_a_429_pause():
    import threading

    from tests.test_limiter import FakeClock, make

    clock = FakeClock()
    limiter = make(clock, max_concurrent=5, per_second=1000, per_hour=2)
    stop = threading.Event()
    for _ in range(2):
        with limiter.slot(stop):
            pass
    for _ in range(50):  # pages after the first: the hourly budget is already spent
        with limiter.slot(stop, charge=False):
            pass
    assert clock.now == 0.0
    with limiter.slot(stop):  # a new query waits for the hour to pass
        pass
    assert clock.now >= 3600
    limiter.throttled(30.0)
    paused_at = clock.now
    with limiter.slot(stop, charge=False):
        pass
    assert clock.now >= paused_at + 30.0


def test_sanitize_text_cleans_nul_and_bad_utf8_anywhere_in_a_profile():
    body = (
        b'{"page":0,"page_size":5,"session_id":"s","status":"ok","total":1,"results":[{"$distinct_id":"a\\u0000",'
        b'"$properties":{"k\\u0000":{"deep":["x\\u0000y"]},"name":"caf\xe9"}}]}'
    )
    sink = io.BytesIO()
    ProfileEncoder("engage", as_messages=False, sanitize=True).write_page(body, sink, "T")
    (record,) = [json.loads(line) for line in sink.getvalue().splitlines()]
    assert record["distinct_id"] == "a\ufffd"
    assert record["properties"] == {"k\ufffd": {"deep": ["x\ufffdy"]}, "name": "caf\ufffd"}
    clean = io.BytesIO()
    ProfileEncoder("engage", as_messages=False).write_page(json.dumps(PAGE).encode(), clean, "T")
    kept = io.BytesIO()
    ProfileEncoder("engage", as_messages=False, sanitize=True).write_page(
        json.dumps(PAGE).encode(), kept, "T"
    )
    assert kept.getvalue() == clean.getvalue()


@pytest.mark.parametrize("sanitize", [False, True])
def test_invalid_utf8_in_a_profiles_key_loads_whatever_msgspec_raises_for_it(sanitize):
    """msgspec up to 0.22 raises UnicodeDecodeError here, 0.23 a DecodeError: both load."""
    props = b'{"$last_seen":"2024-01-02T00:00:00","name":"caf\xe9"}'
    body = (
        b'{"page":0,"page_size":5,"session_id":"s","status":"ok","total":2,"results":['
        b'{"$distinct_id":"d\xfe","$properties":' + props + b"},"
        b'{"$distinct_id":"ok","$properties":{}}]}'
    )
    sink = io.BytesIO()
    written = ProfileEncoder("engage", as_messages=False, sanitize=sanitize).write_page(
        body, sink, "T"
    )
    first, second = sink.getvalue().splitlines()
    record = json.loads(first.decode("utf-8", "replace"))
    assert record["distinct_id"] == "d" + REPLACEMENT
    assert record["last_seen"] == "2024-01-02T00:00:00+00:00"
    assert json.loads(second)["distinct_id"] == "ok"
    assert written.count == 2
    if sanitize:
        assert record["properties"]["name"] == "caf" + REPLACEMENT
        first.decode("utf-8")  # valid UTF-8 throughout
    else:
        assert first.endswith(b'"properties":' + props + b"}")  # the bytes Mixpanel sent

"""People profiles when Mixpanel answers oddly, against a fake server that answers as Mixpanel
documents (``status: error`` bodies, the ``uncached query`` message, the expression grammar) and
as users have seen it answer (no ``total``, a short middle page, a session shifting under writes,
a ``$last_seen`` in 2099, invalid UTF-8): every profile arrives exactly once, or the stream fails
loudly and keeps its state."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from tap_mixpanel_parallel.testing.fake_server import Faults
from tests.helpers import SECRET
from tests.test_cli_query import (
    START,
    engage_bookmark,
    expected_profiles,
    query_config,
    records_of,
)

ENGAGE = "/api/query/engage"
OLD_BOOKMARK = {"replication_key": "last_seen", "replication_key_value": "2023-01-01T00:00:00"}


def engage_requests(server):
    return [r for r in server.requests_log if r.path == ENGAGE]


def assert_every_profile_once(run, server, since=None):
    ids = [r["distinct_id"] for r in records_of(run, "engage")]
    assert len(ids) == len(set(ids)), "a profile was emitted twice"
    assert set(ids) == set(expected_profiles(server, since))


def assert_failed_with_state_kept(run, state):
    assert run.returncode == 1, run.stderr
    assert records_of(run, "engage") == []
    assert engage_bookmark(run) == state["bookmarks"]["engage"]
    assert "Traceback" not in run.stderr


# -- a page is accepted only when Mixpanel says it is good ---------------------------------------


@pytest.mark.parametrize("with_results", [True, False], ids=["empty-results", "no-results"])
def test_a_status_error_page_is_retried_like_a_5xx(fake_server, run_tap, catalog_for, with_results):
    faults = Faults(status_error_page=3, status_error_times=2, status_error_results=with_results)
    server = fake_server(start=START, days=3, profiles=600, faults=faults)
    config = query_config(server)
    run = run_tap(config, extra_args=catalog_for(config, "engage"))
    assert run.returncode == 0, run.stderr
    assert_every_profile_once(run, server)
    assert server.query.status_errors_sent == 2
    assert "Query failed: internal error, please retry" in run.stderr  # quoted on the retry


def test_a_status_error_that_never_clears_fails_quoting_mixpanel_trimmed_and_redacted(
    fake_server, run_tap, catalog_for
):
    message = f"Query failed for {SECRET} " + "because " * 200
    faults = Faults(
        status_error_page=2,
        status_error_times=1000,
        status_error_results=True,
        status_error_message=message,
    )
    server = fake_server(start=START, days=3, profiles=600, faults=faults)
    config = query_config(server, max_retries=2)
    state = {"bookmarks": {"engage": OLD_BOOKMARK}}
    run = run_tap(config, state, extra_args=catalog_for(config, "engage"))
    assert_failed_with_state_kept(run, state)
    assert SECRET not in run.stderr + run.stdout
    failed = [line for line in run.stderr.splitlines() if "stream engage failed" in line]
    assert failed and "Query failed for ***" in failed[0]
    assert "because " * 60 not in failed[0]  # trimmed, not the whole body


# -- bookmarks never run ahead of the run's clock -------------------------------------------------


def test_a_last_seen_in_the_future_does_not_become_the_bookmark(fake_server, run_tap, catalog_for):
    server = fake_server(start=START, days=3, profiles=300)
    server.query.data.touch([5], dt.datetime(2099, 1, 1, 12, 0))
    config = query_config(server)
    args = catalog_for(config, "engage")
    before = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
    first = run_tap(config, extra_args=args)
    after = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    assert first.returncode == 0, first.stderr
    assert_every_profile_once(first, server)
    mark = dt.datetime.fromisoformat(engage_bookmark(first)["replication_key_value"])
    assert before <= mark <= after
    assert "2099-01-01T12:00:00" in first.stderr and "future" in first.stderr
    # The next run asks from the run's clock less the lookback, and still finds profile 5.
    second = run_tap(config, first.last_state, extra_args=args)
    assert second.returncode == 0, second.stderr
    assert engage_requests(server)[-1].params["where"] == (
        f'properties["$last_seen"] >= "{mark.isoformat()}"'
    )
    assert [r["distinct_id"] for r in records_of(second, "engage")] == ["user-0000005"]


def test_a_future_bookmark_is_warned_about_and_clamped(fake_server, run_tap, catalog_for):
    server = fake_server(start=START, days=3, profiles=300)
    config = query_config(server)
    args = catalog_for(config, "engage")
    future = {"replication_key": "last_seen", "replication_key_value": "2099-06-01T00:00:00"}
    run = run_tap(config, {"bookmarks": {"engage": future}}, extra_args=args)
    assert run.returncode == 0, run.stderr
    assert "bookmarks.engage" in run.stderr and "2099-06-01T00:00:00" in run.stderr
    where = engage_requests(server)[-1].params["where"]
    since = where.split('"')[-2]
    assert since < dt.datetime.now(dt.timezone.utc).replace(tzinfo=None).isoformat()
    # Nothing was seen after the clamped bookmark: the bookmark stays the run's clock, no later.
    mark = engage_bookmark(run)["replication_key_value"]
    assert mark < "2099"


def test_a_full_refresh_replaces_the_bookmark(fake_server, run_tap, catalog_for):
    server = fake_server(start=START, days=3, profiles=300)
    config = query_config(server, engage_full_refresh=True)
    future = {"replication_key": "last_seen", "replication_key_value": "2099-06-01T00:00:00"}
    run = run_tap(
        config, {"bookmarks": {"engage": future}}, extra_args=catalog_for(config, "engage")
    )
    assert run.returncode == 0, run.stderr
    assert_every_profile_once(run, server)
    newest = max(p["$last_seen"] for p in expected_profiles(server).values() if "$last_seen" in p)
    assert engage_bookmark(run)["replication_key_value"] == newest


# -- no total, a short middle page, a duplicated profile ------------------------------------------


def test_without_total_pages_flow_side_by_side(fake_server, run_tap, catalog_for):
    faults = Faults(engage_no_total=True)
    server = fake_server(start=START, days=3, profiles=2000, latency=0.05, faults=faults)
    config = query_config(server, engage_page_size=100, query_max_workers=5)
    run = run_tap(config, extra_args=catalog_for(config, "engage"))
    assert run.returncode == 0, run.stderr
    assert_every_profile_once(run, server)
    assert server.max_in_flight >= 3  # not one page at a time
    assert server.query.sessions_created == 1


@pytest.mark.parametrize("total", [True, False], ids=["with-total", "no-total"])
def test_a_short_middle_page_restarts_the_query(fake_server, run_tap, catalog_for, total):
    faults = Faults(engage_no_total=not total, short_page=7)
    server = fake_server(start=START, days=3, profiles=2000, faults=faults)
    config = query_config(server, engage_page_size=100)
    run = run_tap(config, extra_args=catalog_for(config, "engage"))
    assert run.returncode == 0, run.stderr
    assert_every_profile_once(run, server)
    assert server.query.sessions_created == 2
    assert "page 7" in run.stderr


def test_short_middle_pages_that_persist_fail_the_stream_and_keep_its_state(
    fake_server, run_tap, catalog_for
):
    faults = Faults(engage_no_total=True, short_page=7, short_page_sessions=1000)
    server = fake_server(start=START, days=3, profiles=2000, faults=faults)
    config = query_config(server, engage_page_size=100, max_retries=2)
    state = {"bookmarks": {"engage": OLD_BOOKMARK}}
    run = run_tap(config, state, extra_args=catalog_for(config, "engage"))
    assert_failed_with_state_kept(run, state)
    assert server.query.sessions_created == 3


def test_a_session_that_shifts_under_writes_restarts_the_query(fake_server, run_tap, catalog_for):
    server = fake_server(start=START, days=3, profiles=2000, faults=Faults(shifting_sessions=1))
    config = query_config(server, engage_page_size=100)
    run = run_tap(config, extra_args=catalog_for(config, "engage"))
    assert run.returncode == 0, run.stderr
    assert_every_profile_once(run, server)
    assert server.query.sessions_created == 2
    assert "twice" in run.stderr


def test_a_session_that_always_shifts_fails_the_stream_and_keeps_its_state(
    fake_server, run_tap, catalog_for
):
    server = fake_server(start=START, days=3, profiles=2000, faults=Faults(shifting_sessions=99))
    config = query_config(server, engage_page_size=100, max_retries=1)
    state = {"bookmarks": {"engage": OLD_BOOKMARK}}
    run = run_tap(config, state, extra_args=catalog_for(config, "engage"))
    assert_failed_with_state_kept(run, state)


# -- an expired session, as Mixpanel words it ------------------------------------------------------


@pytest.mark.parametrize("status", [400, 404, 200])
def test_mixpanels_uncached_query_answer_restarts_the_query(
    fake_server, run_tap, catalog_for, status
):
    faults = Faults(expire_sessions=1, expire_after_pages=3, session_gone_status=status)
    server = fake_server(start=START, days=3, profiles=1000, faults=faults)
    config = query_config(server)
    run = run_tap(config, extra_args=catalog_for(config, "engage"))
    assert run.returncode == 0, run.stderr
    assert_every_profile_once(run, server)
    assert server.query.sessions_created == 2
    assert "uncached query" in run.stderr
    assert "starting the query again with a new session" in run.stderr


# -- every stream's state is checked before the first request -------------------------------------


@pytest.mark.parametrize(
    "bookmarks",
    [
        {"engage": {"replication_key_value": "garbage"}},
        {"engage": {"replication_key_value": 12345}},
        {"engage": {"replication_key_value": {"a": 1}}},
        {"engage": {"replication_key_value": "2025-13-45T00:00:00"}},
        {"engage": {"replication_key_value": "2024-01-01T00:00:00", "last_full_read": "soon"}},
        {"funnels": {"replication_key": "date", "funnels": {"7001": "not a day"}}},
        {"funnels": {"replication_key": "date", "funnels": ["7001"]}},
    ],
    ids=["word", "number", "object", "no-such-day", "last-full-read", "funnel-day", "funnels"],
)
def test_a_bad_query_stream_bookmark_is_one_line_and_exit_2_before_any_request(
    fake_server, run_tap, catalog_for, bookmarks
):
    server = fake_server(start=START, days=3, profiles=50, cohorts=1, annotations=2)
    config = query_config(server)
    args = catalog_for(config, "annotations", "cohorts", "engage")
    run = run_tap(config, {"bookmarks": bookmarks}, extra_args=args)
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    assert server.requests_log == []
    (line,) = [line for line in run.stderr.splitlines() if "invalid state" in line]
    assert f"bookmarks.{next(iter(bookmarks))}" in line


# -- the SDK record path and invalid UTF-8 ---------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        {"stream_maps": {"engage": {"__alias__": "people", "plan": "properties['plan']"}}},
        {"flattening_enabled": True, "flattening_max_depth": 1},
    ],
    ids=["stream-maps", "flattening"],
)
def test_the_sdk_record_path_survives_invalid_utf8_in_a_profile(
    fake_server, run_tap, catalog_for, extra
):
    server = fake_server(start=START, days=3, profiles=120, awkward_profiles=True)
    config = query_config(server, sanitize_text=False, **extra)
    run = run_tap(config, extra_args=catalog_for(config, "engage"))
    assert run.returncode == 0, run.stderr
    records = [m["record"] for m in run.messages if m["type"] == "RECORD"]
    assert len(records) == 120
    odd = next(r for r in records if r["distinct_id"] == "user-0000001")
    text = json.dumps(odd, ensure_ascii=False)
    # Flattening writes nested objects as JSON text, where U+FFFD may stay escaped.
    assert "caf\ufffd\ufffd ok" in text or "caf\\\\ufffd\\\\ufffd ok" in text
    assert run.messages[-1]["type"] == "STATE"
    assert engage_bookmark(run)["replication_key_value"]


def test_the_sdk_record_path_survives_invalid_utf8_in_an_event(fake_server, run_tap, catalog_for):
    server = fake_server(start=START, days=2, awkward_events=True)
    config = query_config(
        server, sanitize_text=False, stream_maps={"events": {"__alias__": "happenings"}}
    )
    run = run_tap(config, extra_args=catalog_for(config, "events"))
    assert run.returncode == 0, run.stderr
    happenings = [m for m in run.messages if m.get("stream") == "happenings"]
    assert len([m for m in happenings if m["type"] == "RECORD"]) == 2 * (100 + 5)
    assert "\ufffd" in run.stdout.encode().decode("utf-8")
    assert run.messages[-1]["type"] == "STATE"


# -- what incremental engage cannot see ------------------------------------------------------------


def test_an_incremental_read_of_no_profile_despite_its_bookmark_warns(
    fake_server, run_tap, catalog_for
):
    server = fake_server(start=START, days=3, profiles=300, where_strict_grammar=True)
    config = query_config(server)
    args = catalog_for(config, "engage")
    first = run_tap(config, extra_args=args)
    assert first.returncode == 0, first.stderr
    second = run_tap(config, first.last_state, extra_args=args)
    assert second.returncode == 0, second.stderr
    assert records_of(second, "engage") == []
    warning = [
        line for line in second.stderr.splitlines() if "WARN" in line and "0 profiles" in line
    ]
    assert warning and "engage_full_refresh" in warning[0]


def test_engage_full_refresh_days_reads_everyone_again_when_due(fake_server, run_tap, catalog_for):
    server = fake_server(start=START, days=3, profiles=300)
    config = query_config(server, engage_full_refresh_days=7)
    args = catalog_for(config, "engage")
    first = run_tap(config, extra_args=args)
    assert first.returncode == 0, first.stderr
    stamp = engage_bookmark(first)["last_full_read"]
    assert dt.datetime.fromisoformat(stamp) <= dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    # Not due yet: incremental, and the stamp stays.
    second = run_tap(config, first.last_state, extra_args=args)
    assert "where" in engage_requests(server)[-1].params
    assert engage_bookmark(second)["last_full_read"] == stamp
    # Due: a full read, and a new stamp.
    old = {**engage_bookmark(second), "last_full_read": "2020-01-01T00:00:00"}
    third = run_tap(config, {"bookmarks": {"engage": old}}, extra_args=args)
    assert third.returncode == 0, third.stderr
    assert "where" not in engage_requests(server)[-1].params
    assert len(records_of(third, "engage")) == 300
    assert engage_bookmark(third)["last_full_read"] > "2020-01-01T00:00:00"

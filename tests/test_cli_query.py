"""The query streams through the real CLI against the fake server: every profile and member
exactly once through retries, cut bodies, expiring sessions and 429s; bookmarks; failures."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import signal
import time
from collections import Counter

from tap_mixpanel_parallel.testing.fake_server import Faults
from tests.helpers import PROJECT_ID, SECRET, base_config

START = dt.date(2024, 1, 1)
QUERY_STREAMS = ("engage", "cohorts", "cohort_members", "annotations")


def query_config(server, **overrides):
    """Fast budgets for tests; the export is left out by the catalog."""
    config = base_config(
        server,
        query_max_requests_per_hour=100000,
        max_retries=8,
        engage_page_size=50,
        rate_limit_wait=0.2,  # a bare 429 waits this, doubling: short here
    )
    config.update(overrides)
    return config


def records_of(run, stream):
    return [m["record"] for m in run.messages if m["type"] == "RECORD" and m["stream"] == stream]


def engage_bookmark(run):
    return run.last_state["bookmarks"].get("engage")


def expected_profiles(server, since=None):
    data = server.query.data
    return {data.distinct_id(i): data.properties(i) for i in data.matching(since)}


FAULTS = Faults(
    seed=11,
    cut_rate=0.15,
    rate_429=0.15,
    retry_after=0.05,
    rate_5xx=0.1,
    expire_sessions=1,
    expire_after_pages=3,
)


def test_every_profile_exactly_once_through_cuts_429s_5xx_and_an_expired_session(
    fake_server, run_tap, catalog_for
):
    server = fake_server(start=START, days=3, profiles=1234, faults=FAULTS)
    config = query_config(server)
    run = run_tap(config, extra_args=catalog_for(config, "engage"))
    assert run.returncode == 0, run.stderr
    records = records_of(run, "engage")
    ids = [r["distinct_id"] for r in records]
    assert len(ids) == len(set(ids)) == 1234
    expected = expected_profiles(server)
    for record in records:
        assert record["properties"] == expected[record["distinct_id"]]
        seen = record["properties"].get("$last_seen")
        assert record["last_seen"] == (None if seen is None else seen + "+00:00")
    newest = max(p["$last_seen"] for p in expected.values() if "$last_seen" in p)
    assert engage_bookmark(run) == {"replication_key": "last_seen", "replication_key_value": newest}
    faults = Counter(r.fault for r in server.requests_log if r.path == "/api/query/engage")
    assert faults["cut"] and faults["429"] and faults["5xx"], faults
    assert server.query.sessions_created >= 2  # the first session expired mid-way
    assert "starting the query again with a new session" in run.stderr
    # Records come before the one STATE that carries the bookmark: nothing after it is owed.
    kinds = [m["type"] for m in run.messages if m["type"] in ("RECORD", "STATE")]
    assert kinds.index("STATE", kinds.index("RECORD")) > len(kinds) - 3


def test_pages_are_fetched_side_by_side_within_the_query_budget(fake_server, run_tap, catalog_for):
    server = fake_server(start=START, days=3, profiles=2000, latency=0.05)
    config = query_config(server, query_max_workers=3)
    run = run_tap(config, extra_args=catalog_for(config, "engage"))
    assert run.returncode == 0, run.stderr
    assert len(records_of(run, "engage")) == 2000
    engage = [r for r in server.requests_log if r.path == "/api/query/engage"]
    # 40 full pages and the one after, asked for with them: a full page may not be the last.
    assert len(engage) == 41
    assert sorted(int(r.params.get("page", 0)) for r in engage) == list(range(41))
    # Pages overlapped, never more than query_max_workers at once, all of one session.
    assert 2 <= server.max_in_flight <= 3
    assert {r.params.get("session_id") for r in engage[1:]} == {engage[1].params["session_id"]}
    assert all(r.headers.get("Content-Type") == "application/x-www-form-urlencoded" for r in engage)


def test_incremental_runs_read_updated_profiles_with_the_lookback(
    fake_server, run_tap, catalog_for
):
    server = fake_server(start=START, days=3, profiles=600)
    config = query_config(server, lookback_days=1)
    args = catalog_for(config, "engage")
    first = run_tap(config, extra_args=args)
    assert first.returncode == 0, first.stderr
    bookmark = engage_bookmark(first)["replication_key_value"]
    # Three profiles are updated after the first run.
    later = dt.datetime.fromisoformat(bookmark) + dt.timedelta(hours=5)
    server.query.data.touch([3, 77, 500], later)
    second = run_tap(config, first.last_state, extra_args=args)
    assert second.returncode == 0, second.stderr
    since = (dt.datetime.fromisoformat(bookmark) - dt.timedelta(days=1)).isoformat()
    assert set(r["distinct_id"] for r in records_of(second, "engage")) == set(
        expected_profiles(server, since)
    )
    assert {"user-0000003", "user-0000077", "user-0000500"} <= {
        r["distinct_id"] for r in records_of(second, "engage")
    }
    where = [r.params.get("where") for r in server.requests_log if r.path.endswith("engage")]
    assert where[-1] == f'properties["$last_seen"] >= "{since}"'
    assert engage_bookmark(second)["replication_key_value"] == later.isoformat()
    # The switch reads everything again, whatever the bookmark.
    full = run_tap({**config, "engage_full_refresh": True}, second.last_state, extra_args=args)
    assert len(records_of(full, "engage")) == 600


def test_a_session_that_keeps_expiring_fails_the_stream_not_the_run(
    fake_server, run_tap, catalog_for
):
    server = fake_server(
        start=START,
        days=3,
        profiles=300,
        cohorts=2,
        annotations=3,
        faults=Faults(expire_sessions=1000, expire_after_pages=1),
    )
    config = query_config(server, max_retries=2)
    state = {
        "bookmarks": {
            "engage": {
                "replication_key": "last_seen",
                "replication_key_value": "2023-01-01T00:00:00",
            }
        }
    }
    run = run_tap(config, state, extra_args=catalog_for(config, "engage", "cohorts", "annotations"))
    assert run.returncode == 1, run.stderr
    assert records_of(run, "engage") == []
    assert len(records_of(run, "cohorts")) == 2
    assert len(records_of(run, "annotations")) == 3
    assert engage_bookmark(run) == state["bookmarks"]["engage"]
    last = run.stderr.strip().splitlines()
    assert any("stream engage failed" in line and "expired 3 times" in line for line in last[-4:])


def test_cohort_members_every_member_once_cohorts_side_by_side(fake_server, run_tap, catalog_for):
    # 429s without Retry-After here: the tap's own backoff decides the waits.
    faults = dataclasses.replace(FAULTS, retry_after=None)
    server = fake_server(start=START, days=3, profiles=900, cohorts=4, faults=faults)
    config = query_config(server, engage_page_size=40, rate_limit_wait=0.05)
    run = run_tap(config, extra_args=catalog_for(config, "cohort_members", "cohorts"))
    assert run.returncode == 0, run.stderr
    members = records_of(run, "cohort_members")
    pairs = [(m["cohort_id"], m["distinct_id"]) for m in members]
    expected = [
        (cohort, server.query.data.distinct_id(i))
        for cohort in server.query.data.cohort_ids()
        for i in server.query.data.matching(cohort=cohort)
    ]
    assert len(pairs) == len(set(pairs))
    assert sorted(pairs) == sorted(expected)
    # Each cohort is emitted whole, in the order of cohorts/list.
    order = [cohort for cohort, _ in pairs]
    assert order == sorted(order)
    assert all(set(m) == {"cohort_id", "distinct_id"} for m in members)
    cohorts = records_of(run, "cohorts")
    assert [c["id"] for c in cohorts] == [101, 102, 103, 104]
    assert cohorts[0]["created"] == "2024-01-01T10:00:00+00:00"
    assert cohorts[0]["count"] == 450 and cohorts[0]["is_visible"] is True
    forms = [r.params for r in server.requests_log if r.path == "/api/query/engage"]
    assert {f.get("filter_by_cohort") for f in forms} == {
        json.dumps({"id": c}) for c in server.query.data.cohort_ids()
    }


def test_cohort_members_is_not_selected_by_default(fake_server, run_tap):
    server = fake_server(start=START, days=2, profiles=10, cohorts=1)
    run = run_tap(query_config(server))
    assert run.returncode == 0, run.stderr
    assert {m["stream"] for m in run.messages if m["type"] == "SCHEMA"} == {
        "annotations",
        "cohorts",
        "engage",
        "events",
    }


def test_annotations_from_the_app_api_or_the_legacy_endpoint(fake_server, run_tap, catalog_for):
    server = fake_server(start=START, days=3, annotations=2)
    config = query_config(server)
    run = run_tap(config, extra_args=catalog_for(config, "annotations"))
    assert run.returncode == 0, run.stderr
    assert records_of(run, "annotations") == [
        {
            "id": 500 + n,
            "date": f"2024-01-0{n + 1}T12:00:00+00:00",
            "description": f"Release {n + 1}",
            "project_id": PROJECT_ID,
            "user": {"id": 9, "first_name": "Ada", "last_name": "Lovelace"},
            "tags": [{"id": 1, "name": "release"}],
        }
        for n in range(2)
    ]
    assert [r.path for r in server.requests_log] == [f"/api/app/projects/{PROJECT_ID}/annotations"]

    # The legacy endpoint serves the last 90 days only: a dataset of this week.
    recent = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=2)
    legacy_server = fake_server(
        start=recent, days=3, annotations=2, service_account=None, api_secret="legacy-secret-x1"
    )
    legacy = {
        k: v
        for k, v in query_config(legacy_server, api_secret="legacy-secret-x1").items()
        if not k.startswith("service_account")
    }
    legacy_run = run_tap(legacy, extra_args=catalog_for(legacy, "annotations"))
    assert legacy_run.returncode == 0, legacy_run.stderr
    assert [a["id"] for a in records_of(legacy_run, "annotations")] == [500, 501]
    assert all(a["user"] is None for a in records_of(legacy_run, "annotations"))
    (request,) = legacy_server.requests_log
    assert request.path == "/api/2.0/annotations"
    assert request.params["from_date"] == recent.isoformat()


def test_bad_credentials_stop_the_run_with_exit_2_and_no_secret(fake_server, run_tap, catalog_for):
    server = fake_server(
        start=START, days=2, profiles=10, faults=Faults(status_override=401, echo_credentials=True)
    )
    config = query_config(server)
    run = run_tap(config, extra_args=catalog_for(config, *QUERY_STREAMS))
    assert run.returncode == 2, run.stderr
    assert "HTTP 401" in run.stderr
    assert SECRET not in run.stderr + run.stdout
    # The first query stream stopped the run: no other one sent a request.
    assert len(server.requests_log) == 1


def test_the_sdk_record_path_gives_the_same_profiles(fake_server, run_tap, catalog_for):
    server = fake_server(start=START, days=2, profiles=120)
    config = query_config(
        server, stream_maps={"engage": {"__alias__": "people", "plan": "properties['plan']"}}
    )
    run = run_tap(config, extra_args=catalog_for(config, "engage"))
    assert run.returncode == 0, run.stderr
    people = records_of(run, "people")
    assert len(people) == 120
    expected = expected_profiles(server)
    for record in people:
        assert record["plan"] == expected[record["distinct_id"]]["plan"]
        assert record["properties"] == expected[record["distinct_id"]]


def test_funnels_every_row_once_then_only_the_lookback(fake_server, run_tap, catalog_for):
    server = fake_server(
        start=START, days=70, funnels=2, faults=Faults(seed=5, rate_429=0.2, retry_after=0.05)
    )
    # No conversion window: the re-read here is the look-back's alone.
    config = query_config(
        server,
        end_date="2024-03-10",
        funnels_window_days=30,
        lookback_days=3,
        funnels_conversion_window_days=0,
    )
    args = catalog_for(config, "funnels")
    first = run_tap(config, extra_args=args)
    assert first.returncode == 0, first.stderr
    rows = records_of(first, "funnels")
    keys = [(r["funnel_id"], r["date"]) for r in rows]
    days = [(START + dt.timedelta(days=n)).isoformat() for n in range(70)]
    assert sorted(keys) == sorted((f, d) for f in (7001, 7002) for d in days)
    assert len(keys) == len(set(keys))
    sample = next(r for r in rows if r == rows[5])
    expected = server.query.data.funnel_day(
        sample["funnel_id"], dt.date.fromisoformat(sample["date"])
    )
    assert (sample["steps"], sample["analysis"]) == (expected["steps"], expected["analysis"])
    bookmarks = first.last_state["bookmarks"]["funnels"]["funnels"]
    assert bookmarks == {"7001": "2024-03-10", "7002": "2024-03-10"}

    second = run_tap(config, first.last_state, extra_args=args)
    assert second.returncode == 0, second.stderr
    assert sorted({r["date"] for r in records_of(second, "funnels")}) == [
        "2024-03-08",
        "2024-03-09",
        "2024-03-10",
    ]


def test_a_signal_mid_query_emits_nothing_of_it_and_writes_out_no_other_stream(
    fake_server, start_tap
):
    server = fake_server(start=START, days=3, events_per_day=5, profiles=2000, latency=0.3)
    state = {
        "bookmarks": {
            "engage": {
                "replication_key": "last_seen",
                "replication_key_value": "2023-01-01T00:00:00",
            }
        }
    }
    proc = start_tap(query_config(server), state)

    def pages_seen():
        return sum(r.path == "/api/query/engage" for r in list(server.requests_log))

    deadline = time.monotonic() + 60
    while pages_seen() < 5:
        assert time.monotonic() < deadline and proc.poll() is None, "engage never started"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 143, stderr[-3000:]
    messages = [json.loads(line) for line in stdout.splitlines() if line]
    assert not [
        m for m in messages if m["type"] == "RECORD" and m["stream"] in ("engage", "events")
    ]
    states = [m["value"] for m in messages if m["type"] == "STATE"]
    assert states and all(s["bookmarks"]["engage"] == state["bookmarks"]["engage"] for s in states)
    # events was fetched beside engage, and nothing of it was written: no bookmark either
    assert all("events" not in s["bookmarks"] for s in states)
    assert "interrupted" in stderr


def test_a_plan_without_the_query_api_fails_those_streams_not_the_export(
    fake_server, run_tap, catalog_for
):
    server = fake_server(start=START, days=3, events_per_day=4, profiles=50)
    server.routes = {
        path: (handler if path == "/api/2.0/export" else _answer_402)
        for path, handler in server.routes.items()
    }
    config = query_config(server)
    run = run_tap(config, extra_args=catalog_for(config, "engage", "cohorts", "events"))
    assert run.returncode == 1, run.stderr
    assert len(records_of(run, "events")) == 12
    assert records_of(run, "engage") == []
    for stream in ("engage", "cohorts"):
        assert f"stream {stream} failed" in run.stderr
    assert "plan does not include the Query API" in run.stderr
    assert "retrying" not in run.stderr


def _answer_402(app, request):
    app.send_error(request, 402)

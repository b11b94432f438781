"""Query/App API streams against Mixpanel's documented refusals: one funnel, cohort or API that
fails does so alone and keeps its own state; funnel days are read again until their conversion
window passed; a dripping body cannot outlast request_timeout; group cohorts, the legacy
annotations range and whatever else annotations carry."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tap_mixpanel_parallel.query.funnels import plan_funnel_windows
from tap_mixpanel_parallel.query.lists import legacy_annotations_start
from tap_mixpanel_parallel.testing.fake_server import Faults
from tests.helpers import PROJECT_ID
from tests.test_cli_query import catalog_for, query_config, records_of

__all__ = ["catalog_for"]  # a fixture, used by name

START = dt.date(2024, 1, 1)
FUNNELS = "/api/query/funnels"
APP_ANNOTATIONS = f"/api/app/projects/{PROJECT_ID}/annotations"


def funnel_bookmarks(run):
    return run.last_state["bookmarks"]["funnels"]["funnels"]


def test_a_failing_funnel_fails_alone_and_keeps_its_own_bookmark(fake_server, run_tap, catalog_for):
    statuses = {f"{FUNNELS}?funnel_id=7001": 400, f"{FUNNELS}?funnel_id=7002": 500}
    server = fake_server(start=START, days=20, funnels=4, faults=Faults(query_statuses=statuses))
    config = query_config(server, max_retries=1, funnels_window_days=10)
    old = {str(f): "2024-01-05" for f in (7001, 7002, 7003, 7004)}
    state = {"bookmarks": {"funnels": {"replication_key": "date", "funnels": old}}}
    run = run_tap(config, state, extra_args=catalog_for(config, "funnels"))
    assert run.returncode == 1, run.stderr[-3000:]
    rows = records_of(run, "funnels")
    # Funnels 3 and 4 load whole, after funnel 1 answered 400 and funnel 2 a 500.
    # From the bookmark less Mixpanel's default conversion window of 7 days (not before
    # start_date), in two windows of 10 days.
    days = [(START + dt.timedelta(days=n)).isoformat() for n in range(20)]
    assert sorted((r["funnel_id"], r["date"]) for r in rows) == [
        (f, d) for f in (7003, 7004) for d in days
    ]
    assert funnel_bookmarks(run) == {
        "7001": "2024-01-05",
        "7002": "2024-01-05",
        "7003": "2024-01-20",
        "7004": "2024-01-20",
    }
    # The log says which bookmarks moved and which did not.
    assert "its state is unchanged" not in run.stderr
    (line,) = [x for x in run.stderr.splitlines() if "stream funnels failed" in x]
    assert "2 of 4 funnels failed" in line
    assert "funnel 7001" in line and "funnel 7002" in line
    assert "the failed funnels' bookmarks are unchanged" in line
    assert "HTTP 400" in line and "HTTP 500" in line


def test_a_failing_cohort_fails_alone(fake_server, run_tap, catalog_for):
    broken = '/api/query/engage?filter_by_cohort={"id": 102}'
    server = fake_server(
        start=START, days=3, profiles=60, cohorts=3, faults=Faults(query_statuses={broken: 400})
    )
    config = query_config(server)
    run = run_tap(config, extra_args=catalog_for(config, "cohort_members"))
    assert run.returncode == 1, run.stderr[-3000:]
    members = {(m["cohort_id"], m["distinct_id"]) for m in records_of(run, "cohort_members")}
    data = server.query.data
    assert members == {
        (c, data.distinct_id(i)) for c in (101, 103) for i in data.matching(cohort=c)
    }
    assert "1 of 3 cohorts failed: cohort_members: cohort 102" in run.stderr


def test_funnel_days_are_read_again_until_their_conversion_window_passed(
    fake_server, run_tap, catalog_for
):
    # The server's today is the tap's: the last days' conversions are still arriving.
    today = dt.datetime.now(dt.timezone.utc).date()
    server = fake_server(start=today - dt.timedelta(days=30), days=31, funnels=2)
    config = query_config(server, lookback_days=5)
    del config["end_date"]
    args = catalog_for(config, "funnels")
    first = run_tap(config, extra_args=args)
    assert first.returncode == 0, first.stderr[-3000:]
    # Four days later (for the server): conversions went on arriving for the recent days.
    server.add_days(4)
    second = run_tap(config, first.last_state, extra_args=args)
    assert second.returncode == 0, second.stderr[-3000:]
    stored = {}
    for row in records_of(first, "funnels") + records_of(second, "funnels"):
        stored[(row["funnel_id"], row["date"])] = row  # as an upserting target keeps them
    data = server.query.data
    for (funnel, day), row in sorted(stored.items()):
        expected = data.funnel_day(funnel, dt.date.fromisoformat(day))
        assert row["analysis"] == expected["analysis"], (funnel, day)
    # Mixpanel's default window is 7 days: the second run went back that far, not 5.
    second_days = {row["date"] for row in records_of(second, "funnels")}
    assert min(second_days) == (today - dt.timedelta(days=7)).isoformat()


def test_a_403_from_the_app_api_stops_annotations_only(fake_server, run_tap, catalog_for):
    server = fake_server(
        start=START,
        days=3,
        events_per_day=3,
        profiles=20,
        cohorts=2,
        annotations=3,
        faults=Faults(query_statuses={APP_ANNOTATIONS: 403}),
    )
    config = query_config(server)
    run = run_tap(
        config, extra_args=catalog_for(config, "annotations", "cohorts", "engage", "events")
    )
    assert run.returncode == 2, run.stderr[-3000:]
    assert records_of(run, "annotations") == []
    assert len(records_of(run, "cohorts")) == 2
    assert len(records_of(run, "engage")) == 20
    assert len(records_of(run, "events")) == 9
    assert run.last_state["bookmarks"]["events"]["replication_key_value"] == "2024-01-03"
    assert any(
        "stream annotations" in line and "HTTP 403" in line and "App API" in line
        for line in run.stderr.splitlines()
    )


def test_a_403_from_the_query_api_stops_its_streams_the_export_runs(
    fake_server, run_tap, catalog_for
):
    server = fake_server(
        start=START,
        days=3,
        events_per_day=3,
        profiles=20,
        cohorts=2,
        annotations=3,
        faults=Faults(query_statuses={"/api/query/cohorts/list": 403}),
    )
    config = query_config(server)
    names = ("annotations", "cohorts", "engage", "events")
    engage = {"replication_key": "last_seen", "replication_key_value": "2023-01-01T00:00:00"}
    state = {"bookmarks": {"engage": engage}}
    run = run_tap(config, state, extra_args=catalog_for(config, *names))
    assert run.returncode == 2, run.stderr[-3000:]
    # The streams that were stopped, or not started, keep their state as given.
    for value in run.states:
        assert value["bookmarks"]["engage"] == engage
        assert "cohorts" not in value["bookmarks"]
    assert len(records_of(run, "annotations")) == 3  # the App API said nothing against it
    assert records_of(run, "cohorts") == records_of(run, "engage") == []
    assert not [r for r in server.requests_log if r.path == "/api/query/engage"]
    assert len(records_of(run, "events")) == 9
    lines = run.stderr.splitlines()
    assert any("stream cohorts" in x and "HTTP 403" in x and "Query API" in x for x in lines)
    assert any("stream engage" in x and "not started" in x for x in lines)


@pytest.mark.parametrize("drip_headers", [False, True], ids=["body-drips", "headers-drip"])
def test_a_query_api_drip_cannot_hold_a_request_past_request_timeout(
    fake_server, run_tap, catalog_for, drip_headers
):
    # A byte a second: the page's ~1.5 KB would take 25 minutes, its headers alone 90 s.
    server = fake_server(
        start=START,
        days=3,
        profiles=5,
        faults=Faults(drip_seconds=1.0, drip_headers=drip_headers),
    )
    config = query_config(server, request_timeout=2, max_retries=0)
    run = run_tap(config, extra_args=catalog_for(config, "engage"), timeout=60)
    assert run.returncode == 1, run.stderr[-3000:]
    assert records_of(run, "engage") == []
    assert "request_timeout of 2s passed" in run.stderr
    assert all(r.bytes_sent < 1000 for r in server.requests_log)


def test_group_cohorts_are_queried_with_their_data_group_id(fake_server, run_tap, catalog_for):
    server = fake_server(start=START, days=3, profiles=40, cohorts=3, group_cohorts=1)
    config = query_config(server)
    run = run_tap(config, extra_args=catalog_for(config, "cohorts", "cohort_members"))
    assert run.returncode == 0, run.stderr[-3000:]
    cohorts = {c["id"]: c for c in records_of(run, "cohorts")}
    assert cohorts[103]["data_group_id"] == "1" and cohorts[101]["data_group_id"] is None
    members = records_of(run, "cohort_members")
    groups = [m for m in members if m["cohort_id"] == 103]
    data = server.query.data
    assert sorted(m["distinct_id"] for m in groups) == [
        data.group_key(i) for i in data.matching(cohort=103)
    ]
    assert all(m["data_group_id"] == "1" for m in groups)
    users = [m for m in members if m["cohort_id"] != 103]
    assert len(users) == len(data.matching(cohort=101)) + len(data.matching(cohort=102))
    assert all(m.get("data_group_id") is None for m in users)
    forms = [r.params for r in server.requests_log if r.path == "/api/query/engage"]
    assert {f.get("data_group_id") for f in forms} == {None, "1"}


def test_legacy_annotations_ask_only_for_the_days_mixpanel_serves(
    fake_server, run_tap, catalog_for
):
    today = dt.datetime.now(dt.timezone.utc).date()
    start = today - dt.timedelta(days=200)
    server = fake_server(
        start=start, days=201, annotations=201, service_account=None, api_secret="legacy-x1"
    )
    config = {
        k: v
        for k, v in query_config(server, api_secret="legacy-x1").items()
        if not k.startswith("service_account")
    }
    run = run_tap(config, extra_args=catalog_for(config, "annotations"))
    assert run.returncode == 0, run.stderr[-3000:]
    (request,) = server.requests_log
    first = dt.date.fromisoformat(request.params["from_date"])
    assert (today - first).days <= 90
    dates = sorted(a["date"][:10] for a in records_of(run, "annotations"))
    assert dates[0] == first.isoformat() and dates[-1] == today.isoformat()
    assert "before " + first.isoformat() in run.stderr  # the user is told what is not read
    assert "service account" in run.stderr


def test_annotations_keep_whatever_else_mixpanel_sends(fake_server, run_tap, catalog_for):
    server = fake_server(start=START, days=3, annotations=2, annotation_extras=True)
    config = query_config(server)
    run = run_tap(config, extra_args=catalog_for(config, "annotations"))
    assert run.returncode == 0, run.stderr[-3000:]
    for annotation in records_of(run, "annotations"):
        assert annotation["user"] == {
            "id": 9,
            "first_name": "Ada",
            "last_name": "Lovelace",
            "email": "ada@example.com",
        }
        assert annotation["tags"] == [{"id": 1, "name": "release", "color": "#3366ff"}]


def test_the_readme_exit_codes_put_a_query_api_402_under_exit_1():
    readme = (__import__("pathlib").Path(__file__).parents[1] / "README.md").read_text()
    codes = " ".join(readme.split("Exit codes:", 1)[1].split("\n\n", 1)[0].split())
    one, two = codes.split("`2`", 1)
    assert "402" in one, one
    assert "401/402/403" not in two, two


@given(
    bookmark=st.dates(dt.date(2020, 1, 1), dt.date(2030, 1, 1)),
    later=st.integers(1, 60),
    lookback=st.integers(0, 30),
    window=st.integers(0, 120),
    window_days=st.integers(1, 90),
)
def test_every_funnel_day_not_final_when_last_read_is_read_again(
    bookmark, later, lookback, window, window_days
):
    # The run that wrote the bookmark ran the day after it; a day was final then only once
    # the conversion window had passed after it.
    start = dt.date(2020, 1, 1)
    last_read = bookmark + dt.timedelta(days=1)
    plan = plan_funnel_windows(
        [(7001, None)],
        {7001: bookmark},
        start=start,
        end=bookmark + dt.timedelta(days=later),
        window_days=window_days,
        lookback_days=max(lookback, window),
    )
    planned = {
        w.window.from_date + dt.timedelta(days=n)
        for w in plan
        for n in range((w.window.to_date - w.window.from_date).days + 1)
    }
    not_final = {
        last_read - dt.timedelta(days=age)
        for age in range(1, window + 1)
        if last_read - dt.timedelta(days=age) >= start
    }
    assert not_final <= planned


def test_legacy_annotations_never_ask_past_90_days_nor_before_start_date():
    today = dt.date(2024, 6, 30)
    assert legacy_annotations_start(dt.date(2024, 1, 1), today) == dt.date(2024, 4, 2)
    assert (today - legacy_annotations_start(dt.date(2000, 1, 1), today)).days == 89
    assert legacy_annotations_start(dt.date(2024, 6, 1), today) == dt.date(2024, 6, 1)

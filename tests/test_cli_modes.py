"""Behaviour beyond the plain export: SDK record path, selection, timezones, lookback, auth."""

from __future__ import annotations

import datetime as dt
import json
import subprocess

from tests.helpers import EVENT_COLUMNS, SECRET, TAP, base_config, discover, expected_ids

D = dt.date


def test_stream_maps_use_the_sdk_path_with_the_same_records(fake_server, run_tap):
    server = fake_server(start=D(2024, 1, 1), days=10, events_per_day=15)
    fast = run_tap(base_config(server))
    mapped = run_tap(
        base_config(
            server,
            stream_maps={
                "events": {"__alias__": "mixpanel_events", "event_upper": "event.upper()"}
            },
        )
    )
    assert fast.returncode == 0, fast.stderr
    assert mapped.returncode == 0, mapped.stderr
    streams = {m["stream"] for m in mapped.messages if m["type"] == "RECORD"}
    assert streams == {"mixpanel_events"}
    by_id = {r["insert_id"]: r for r in fast.records}
    assert len(mapped.records) == len(fast.records) == 150
    for record in mapped.records:
        original = by_id[record["insert_id"]]
        assert record == {**original, "event_upper": original["event"].upper()}


def test_deselected_fields_are_dropped(fake_server, run_tap, tmp_path):
    server = fake_server(start=D(2024, 1, 1), days=3, events_per_day=5)
    config = base_config(server)
    catalog = discover(config, tmp_path)
    (events,) = [s for s in catalog["streams"] if s["tap_stream_id"] == "events"]
    for entry in events["metadata"]:
        if entry["breadcrumb"] == []:
            entry["metadata"]["selected"] = True
        elif entry["breadcrumb"] == ["properties", "properties"]:
            entry["metadata"]["selected"] = False
    catalog_path = tmp_path / "catalog.json"
    catalog_path.write_text(json.dumps(catalog))
    run = run_tap(config, extra_args=("--catalog", str(catalog_path)))
    assert run.returncode == 0, run.stderr
    assert len(run.records) == 15
    assert all("properties" not in r for r in run.records)
    assert all(set(r) == EVENT_COLUMNS - {"properties"} for r in run.records)


def test_local_timezone_project_times_become_utc(fake_server, run_tap):
    server = fake_server(start=D(2024, 7, 1), days=2, events_per_day=10, timezone="Asia/Tokyo")
    run = run_tap(base_config(server, project_timezone="Asia/Tokyo"))
    assert run.returncode == 0, run.stderr
    for record in run.records:
        local = dt.datetime.fromtimestamp(record["properties"]["time"], dt.timezone.utc)
        utc = dt.datetime.fromisoformat(record["time"])
        # Tokyo is UTC+9 all year: the local-epoch number is 9 hours ahead of real UTC
        assert local - utc == dt.timedelta(hours=9)


def test_time_in_ms_and_event_filter(fake_server, run_tap):
    server = fake_server(start=D(2024, 1, 1), days=3, events_per_day=40)
    names = ["Sign Up", "Purchase"]
    run = run_tap(base_config(server, time_in_ms=True, event_names=names))
    assert run.returncode == 0, run.stderr
    expected = [
        e["properties"]["$insert_id"]
        for e in server.events(D(2024, 1, 1), D(2024, 1, 3), event_names=names)
    ]
    assert expected
    assert sorted(run.insert_ids()) == sorted(expected)
    assert {r["event"] for r in run.records} <= set(names)
    assert all(r["properties"]["time"] > 10**12 for r in run.records)
    assert all("." in r["time"] for r in run.records)


def test_lookback_emits_late_events(fake_server, run_tap):
    server = fake_server(
        start=D(2024, 1, 1), days=10, events_per_day=30, late_fraction=0.3, late_days=2
    )
    config = base_config(server, lookback_days=3)
    first = run_tap(config)
    assert first.returncode == 0, first.stderr
    seen_first = set(first.insert_ids())
    server.add_days(2)
    second = run_tap({**config, "end_date": server.today.isoformat()}, state=first.last_state)
    assert second.returncode == 0, second.stderr
    late = set(expected_ids(server, D(2024, 1, 8), D(2024, 1, 10))) - seen_first
    assert late, "the fake server delivered no late events for the lookback window"
    assert late <= set(second.insert_ids()), "late events in the lookback window were dropped"
    everything = set(expected_ids(server, D(2024, 1, 1), D(2024, 1, 12)))
    assert seen_first | set(second.insert_ids()) == everything


def test_legacy_api_secret(fake_server, run_tap):
    server = fake_server(
        start=D(2024, 1, 1), days=2, events_per_day=5, service_account=None, api_secret=SECRET
    )
    config = base_config(server, api_secret=SECRET)
    for key in ("service_account_username", "service_account_secret", "project_id"):
        config.pop(key)
    run = run_tap(config)
    assert run.returncode == 0, run.stderr
    assert len(run.records) == 10
    assert all("project_id" not in r.params for r in server.requests_log)
    assert SECRET not in run.stderr + run.stdout


def test_settings_from_environment(fake_server, run_tap, tmp_path):
    server = fake_server(start=D(2024, 1, 1), days=2, events_per_day=5)
    env = {
        f"TAP_MIXPANEL_PARALLEL_{k.upper()}": str(v)
        for k, v in base_config(server).items()
        # the SDK reads integer, boolean and array settings from the environment, not numbers
        if k != "max_requests_per_second"
    }
    proc = subprocess.run(
        [TAP, "--config", "ENV"],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, **env},
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count('"type":"RECORD"') == 10


def test_future_end_date_is_clamped_and_today_is_not_bookmarked(fake_server, run_tap):
    today = dt.datetime.now(dt.timezone.utc).date()
    start = today - dt.timedelta(days=3)
    server = fake_server(start=start, days=4, events_per_day=5, today=today)
    run = run_tap(base_config(server, end_date=(today + dt.timedelta(days=30)).isoformat()))
    assert run.returncode == 0, run.stderr
    assert f"end_date {today + dt.timedelta(days=30)} is after today" in run.stderr
    assert sorted(run.insert_ids()) == sorted(expected_ids(server, start, today))
    # today is not over: the next run must read it again
    assert run.bookmark["replication_key_value"] == (today - dt.timedelta(days=1)).isoformat()


def test_a_closed_stdout_stops_the_tap_with_one_line(fake_server, tmp_path):
    server = fake_server(start=D(2024, 1, 1), days=60, events_per_day=2000)
    config_path = tmp_path / "c.json"
    config_path.write_text(json.dumps(base_config(server)))
    proc = subprocess.Popen(
        [TAP, "--config", str(config_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().startswith('{"type":"SCHEMA"')
    proc.stdout.close()  # the reader goes away, as a crashed target would
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "stdout was closed by its reader" in stderr
    assert "Traceback" not in stderr.split("stdout was closed")[1]


def test_connection_test_stops_after_one_record(fake_server, run_tap):
    server = fake_server(start=D(2024, 1, 1), days=21, events_per_day=50)
    run = run_tap(base_config(server, max_workers=1), extra_args=("--test",))
    assert run.returncode == 0, run.stderr
    assert len(run.records) == 1
    exports = [r for r in server.requests_log if r.path == "/api/2.0/export"]
    assert len(exports) <= 2, "a connection test should not export the whole range"

"""The real CLI against the fake server: the guarantees of the core export."""

from __future__ import annotations

import datetime as dt
import itertools
from collections import Counter

from tap_mixpanel_parallel.testing.fake_server import Faults
from tests.helpers import EVENT_COLUMNS, SECRET, base_config, expected_ids, export_requests

D = dt.date


def test_every_event_exactly_once_in_inclusive_weeks(fake_server, run_tap):
    server = fake_server(start=D(2024, 1, 1), days=45, events_per_day=40)
    run = run_tap(base_config(server))
    assert run.returncode == 0, run.stderr
    ids = run.insert_ids()
    assert Counter(ids).most_common(1)[0][1] == 1, "an event was emitted twice"
    assert sorted(ids) == sorted(expected_ids(server, D(2024, 1, 1), D(2024, 2, 14)))

    ranges = sorted(
        (D.fromisoformat(r.from_date), D.fromisoformat(r.to_date)) for r in export_requests(server)
    )
    assert ranges[0][0] == D(2024, 1, 1)
    assert ranges[-1][1] == D(2024, 2, 14)
    for (_, a_to), (b_from, _) in itertools.pairwise(ranges):
        assert b_from == a_to + dt.timedelta(days=1), "gap or overlap between partitions"
    assert all((b - a).days + 1 == 7 for a, b in ranges[:-1])
    assert (ranges[-1][1] - ranges[-1][0]).days + 1 == 45 - 6 * 7

    assert run.bookmark["replication_key_value"] == "2024-02-14"
    assert run.bookmark["failed_partitions"] == []
    # records carry the whole properties object, nested values as JSON
    first = run.records[0]
    assert set(first) == EVENT_COLUMNS
    assert isinstance(first["properties"], dict)
    assert first["time"].endswith("+00:00")
    assert "partition 7/7" in run.stderr
    assert "export finished: 1800 records, 7 partitions ok, 0 failed" in run.stderr
    assert '"metric":"record_count","value":1800' in run.stderr
    assert SECRET not in run.stderr + run.stdout


def test_concurrency_is_parallel_but_capped(fake_server, run_tap, catalog_for):
    server = fake_server(start=D(2024, 1, 1), days=70, events_per_day=5, latency=0.6)
    config = base_config(server, max_workers=3, partition_days=7)
    # events alone: the query streams, fetched beside it, have a budget of their own
    run = run_tap(config, extra_args=catalog_for(config, "events"))
    assert run.returncode == 0, run.stderr
    assert server.max_in_flight > 1, "partitions were fetched one at a time"
    assert server.max_in_flight <= 3


def test_request_starts_respect_the_per_second_budget(fake_server, run_tap):
    server = fake_server(start=D(2024, 1, 1), days=60, events_per_day=2)
    run = run_tap(base_config(server, max_workers=10, partition_days=3, max_requests_per_second=3))
    assert run.returncode == 0, run.stderr
    starts = sorted(r.started for r in export_requests(server))
    assert len(starts) == 20
    for t in starts:
        assert sum(1 for s in starts if t <= s < t + 1.0) <= 3


def test_failing_partition_is_saved_and_the_rest_emitted(fake_server, run_tap):
    server = fake_server(
        start=D(2024, 1, 1),
        days=28,
        events_per_day=10,
        faults=Faults(fail_ranges={("2024-01-08", "2024-01-14"): 500}),
    )
    config = base_config(server, max_retries=1)
    run = run_tap(config)
    assert run.returncode != 0
    failed = run.bookmark["failed_partitions"]
    assert [(f["from_date"], f["to_date"], f["attempts"]) for f in failed] == [
        ("2024-01-08", "2024-01-14", 2)
    ]
    assert "500" in failed[0]["error"]
    healthy = expected_ids(server, D(2024, 1, 1), D(2024, 1, 7)) + expected_ids(
        server, D(2024, 1, 15), D(2024, 1, 28)
    )
    assert sorted(run.insert_ids()) == sorted(healthy)
    assert "1 partition failed and are saved in state" in run.stderr
    assert "2024-01-08..2024-01-14" in run.stderr.splitlines()[-1]

    # the next run, against a healthy server, fetches only that partition
    server.faults = Faults()
    server.reset_stats()
    again = run_tap(config, state=run.last_state)
    assert again.returncode == 0, again.stderr
    assert sorted(again.insert_ids()) == sorted(expected_ids(server, D(2024, 1, 8), D(2024, 1, 14)))
    assert again.bookmark["failed_partitions"] == []
    assert [(r.from_date, r.to_date) for r in export_requests(server)] == [
        ("2024-01-08", "2024-01-14")
    ]


def test_resumed_run_fetches_only_what_is_owed(fake_server, run_tap):
    server = fake_server(start=D(2024, 1, 1), days=14, events_per_day=10)
    config = base_config(server, lookback_days=2)
    first = run_tap(config)
    assert first.returncode == 0, first.stderr
    assert first.bookmark["replication_key_value"] == "2024-01-14"

    server.add_days(7)
    server.reset_stats()
    second = run_tap({**config, "end_date": server.today.isoformat()}, state=first.last_state)
    assert second.returncode == 0, second.stderr
    # bookmark 01-14, lookback 2: from 01-13 to the new end (01-21)
    assert sorted((r.from_date, r.to_date) for r in export_requests(server)) == [
        ("2024-01-13", "2024-01-19"),
        ("2024-01-20", "2024-01-21"),
    ]
    assert sorted(second.insert_ids()) == sorted(
        expected_ids(server, D(2024, 1, 13), D(2024, 1, 21))
    )
    assert second.bookmark["replication_key_value"] == "2024-01-21"

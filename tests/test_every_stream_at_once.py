"""Streams selected together are fetched side by side and written out whole, one at a time.

The real CLI against the fake server, with `events` (the export's budget) and `engage` (the
Query API's) selected. Proven by the server's request log, not by time: export and engage
requests were in flight at the same moment, each family within its own concurrency. What
reaches stdout stays as a single writer makes it: every record once, each stream's records in
one block (never inside another stream's), and every STATE covering only records before it.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
from collections import Counter

from tap_mixpanel_parallel.testing.fake_server import Faults
from tests.helpers import (
    all_ids,
    base_config,
    export_requests,
    most_at_once,
    parse_messages,
    tap_args,
    wait_for,
)

START = dt.date(2024, 1, 1)
DAYS = 8


def side_by_side_config(server, **overrides):
    config = base_config(
        server,
        partition_days=1,
        max_workers=2,
        query_max_workers=2,
        engage_page_size=50,
        query_max_requests_per_hour=100000,
    )
    config.update(overrides)
    return config


def engage_requests(server):
    return [r for r in server.requests_log if r.path == "/api/query/engage"]


def test_events_and_engage_fetch_side_by_side_each_within_its_budget(
    fake_server, run_tap, catalog_for
):
    server = fake_server(start=START, days=DAYS, events_per_day=20, profiles=400, latency=0.15)
    config = side_by_side_config(server)
    run = run_tap(config, extra_args=catalog_for(config, "events", "engage"))
    assert run.returncode == 0, run.stderr[-3000:]

    exports, pages = export_requests(server), engage_requests(server)
    assert len(exports) == DAYS
    assert len(pages) >= 400 // 50
    # an export request and an engage page were in flight at the same moment
    assert any(e.started < p.ended and p.started < e.ended for e in exports for p in pages)
    # each family within its own budget, however the other is doing
    assert most_at_once(exports) <= 2
    assert most_at_once(pages) <= 2

    # every record once
    ids = [
        m["record"]["insert_id"]
        for m in run.messages
        if m.get("stream") == "events" and "record" in m
    ]
    assert Counter(ids).most_common(1)[0][1] == 1
    assert sorted(ids) == all_ids(server)
    profiles = [
        m["record"]["distinct_id"]
        for m in run.messages
        if m["type"] == "RECORD" and m["stream"] == "engage"
    ]
    assert len(profiles) == len(set(profiles)) == 400


def test_each_stream_is_written_whole_and_state_follows_what_was_written(
    fake_server, run_tap, catalog_for
):
    server = fake_server(start=START, days=DAYS, events_per_day=20, profiles=300, latency=0.1)
    config = side_by_side_config(server)
    run = run_tap(config, extra_args=catalog_for(config, "events", "engage"))
    assert run.returncode == 0, run.stderr[-3000:]
    messages = run.messages

    # each stream's records in one block: no record of another stream inside it
    for stream in ("events", "engage"):
        at = [i for i, m in enumerate(messages) if m.get("stream") == stream and "record" in m]
        assert at, stream
        inside = {messages[i].get("stream") for i in range(at[0], at[-1] + 1)}
        assert inside <= {stream, None}, f"{stream} records interleaved with {inside}"
        schema = next(
            i for i, m in enumerate(messages) if m["type"] == "SCHEMA" and m["stream"] == stream
        )
        assert schema < at[0]

    # a STATE never covers a day or a profile not written before it
    written_days: set[str] = set()
    engage_written = 0
    for message in messages:
        if message["type"] == "RECORD" and message["stream"] == "events":
            written_days.add(_day(message["record"]["time"]))
        elif message["type"] == "RECORD" and message["stream"] == "engage":
            engage_written += 1
        elif message["type"] == "STATE":
            bookmarks = message["value"].get("bookmarks", {})
            mark = bookmarks.get("events", {}).get("replication_key_value")
            if mark is not None:
                owed = {
                    (START + dt.timedelta(days=n)).isoformat()
                    for n in range(DAYS)
                    if START + dt.timedelta(days=n) <= dt.date.fromisoformat(mark)
                }
                assert owed <= written_days, f"STATE at {mark} before its days were written"
            if bookmarks.get("engage", {}).get("replication_key_value") is not None:
                assert engage_written == 300, "the engage bookmark came before its profiles"
    assert (
        run.bookmark["replication_key_value"] == (START + dt.timedelta(days=DAYS - 1)).isoformat()
    )


def test_ranges_split_beside_engage_still_deliver_every_event_once(
    fake_server, run_tap, catalog_for
):
    # every export request for more than two days is cut, while engage pages beside it
    server = fake_server(
        start=START,
        days=14,
        events_per_day=10,
        profiles=200,
        latency=0.1,
        faults=Faults(cut_longer_than_days=2),
    )
    config = side_by_side_config(server, partition_days=7)
    run = run_tap(config, extra_args=catalog_for(config, "events", "engage"))
    assert run.returncode == 0, run.stderr[-3000:]

    ids = [
        m["record"]["insert_id"]
        for m in run.messages
        if m.get("stream") == "events" and "record" in m
    ]
    assert Counter(ids).most_common(1)[0][1] == 1, "an event was delivered twice"
    assert sorted(ids) == all_ids(server)
    assert run.bookmark["failed_partitions"] == []
    exports, pages = export_requests(server), engage_requests(server)
    assert {r.fault for r in exports if r.fault is not None} == {"too_large"}
    assert all(days_of(r) <= 2 for r in exports if r.fault is None)
    assert any(e.started < p.ended and p.started < e.ended for e in exports for p in pages)
    profiles = [
        m["record"]["distinct_id"]
        for m in run.messages
        if m["type"] == "RECORD" and m["stream"] == "engage"
    ]
    assert len(profiles) == len(set(profiles)) == 200
    assert "fetching it in halves" in run.stderr


def days_of(request) -> int:
    return (
        dt.date.fromisoformat(request.to_date) - dt.date.fromisoformat(request.from_date)
    ).days + 1


def _day(time: str) -> str:
    return time[:10]


def test_a_signal_stops_every_stream_and_leaves_no_spool_folder(fake_server, tmp_path, catalog_for):
    # engage is written out first; events, fetched beside it, is slow and large
    server = fake_server(start=START, days=30, events_per_day=400, profiles=3000, latency=0.3)
    config = side_by_side_config(server, engage_page_size=100)
    args = [*tap_args(tmp_path, config, None), *catalog_for(config, "events", "engage")]
    spools = tmp_path / "spools"
    spools.mkdir()
    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(spools)},
    )
    try:
        wait_for(lambda: export_requests(server) and len(engage_requests(server)) >= 3, 60)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, stderr[-3000:]
    messages = parse_messages(stdout)
    assert not [m for m in messages if m["type"] == "RECORD" and m["stream"] == "events"]
    assert all("events" not in m["value"]["bookmarks"] for m in messages if m["type"] == "STATE")
    assert "interrupted" in stderr
    assert list(spools.iterdir()) == [], "a spool folder was left behind"

"""State files as users hand them over: broken, foreign, edited, shared. The real CLI."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import time
from collections import Counter

import pytest

from tests.helpers import TAP, base_config, expected_ids, parse_messages

D = dt.date
START = D(2024, 1, 1)
SINGER_IO = {"bookmarks": {"export": "2024-01-01T00:00:00Z"}}


def run_with_state_text(tmp_path, config, text, *, timeout=120):
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config))
    state_path = tmp_path / "state.json"
    state_path.write_text(text)
    return subprocess.run(
        [TAP, "--config", str(config_path), "--state", str(state_path)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "is empty"),
        ("{'bookmarks': {}}", "is not JSON (line 1 column 2)"),
        ("[]", "not a list"),
        (json.dumps(SINGER_IO), "singer-io tap-mixpanel's shape"),
        ('{"bookmarks": {"events": {"replication_key_value": 20240101}}}', "YYYY-MM-DD"),
        ('{"bookmarks": {"events": {"failed_partitions": "2024-01-01"}}}', "must be a list"),
    ],
)
def test_a_bad_state_file_exits_2_with_one_line_and_no_request(fake_server, tmp_path, text, says):
    server = fake_server(start=START, days=3, events_per_day=5)
    proc = run_with_state_text(tmp_path, base_config(server), text)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1, proc.stderr
    assert "invalid state" in errors[0]
    assert says in errors[0]
    assert "state" in errors[0].split(says)[1], "the line says what to do"
    assert proc.stdout == ""
    assert server.requests_log == []


def test_a_bookmark_in_the_future_is_warned_about_and_read_as_yesterday(fake_server, run_tap):
    today = dt.datetime.now(dt.timezone.utc).date()
    yesterday = today - dt.timedelta(days=1)
    server = fake_server(start=today - dt.timedelta(days=2), days=3, events_per_day=5, today=today)
    # end_date unset: up to today, which a bookmark read as yesterday leaves to export
    config = base_config(server)
    config.pop("end_date")
    state = {"bookmarks": {"events": {"replication_key_value": "2099-01-01"}}}
    run = run_tap(config, state=state)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"state bookmark 2099-01-01 is after yesterday ({yesterday} in UTC)" in run.stderr
    assert sorted(run.insert_ids()) == sorted(expected_ids(server, today, today))
    assert run.bookmark["replication_key_value"] == yesterday.isoformat()


def test_overlapping_failed_partitions_are_fetched_once(fake_server, run_tap):
    server = fake_server(start=START, days=21, events_per_day=10)
    owed = [
        ("2024-01-01", "2024-01-07"),
        ("2024-01-05", "2024-01-10"),
        ("2024-01-01", "2024-01-07"),
    ]
    state = {
        "bookmarks": {
            "events": {
                "replication_key_value": "2024-01-21",
                "failed_partitions": [
                    {"from_date": a, "to_date": b, "error": "HTTP 503", "attempts": 1}
                    for a, b in owed
                ],
            }
        }
    }
    run = run_tap(base_config(server), state=state)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "overlapping ranges" in run.stderr
    ids = run.insert_ids()
    assert Counter(ids).most_common(1)[0][1] == 1, "an event was emitted twice in one run"
    assert sorted(ids) == sorted(expected_ids(server, D(2024, 1, 1), D(2024, 1, 10)))
    assert run.bookmark["failed_partitions"] == []


def test_a_second_run_on_the_same_state_file_is_refused(fake_server, tmp_path):
    # Slow enough (requests of 3 s, one at a time) that the second run, which may take seconds
    # to start on a busy machine, still finds the first one running; quick once it has.
    server = fake_server(start=START, days=14, events_per_day=10, latency=3.0)
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(base_config(server, max_workers=1)))
    state_path = tmp_path / "state.json"
    state_path.write_text(json.dumps({"bookmarks": {}}))
    args = [TAP, "--config", str(config_path), "--state", str(state_path)]
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while server.in_flight == 0:
            assert time.monotonic() < deadline, "the first run never started a request"
            time.sleep(0.02)
        # the same file through another path
        other_path = tmp_path / "." / "state.json"
        second = subprocess.run(
            [TAP, "--config", str(config_path), "--state", str(other_path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == 2, second.stderr[-3000:]
        assert f"another tap-mixpanel-parallel run (pid {first.pid}) is using the state file" in (
            second.stderr
        )
        assert "Traceback" not in second.stderr
        assert second.stdout == ""
        server.latency = 0
        out, err = first.communicate(timeout=120)
        assert first.returncode == 0, err[-3000:]
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGKILL)
            first.wait()
    assert parse_messages(out)
    # once the first run is over, the state file is free again
    third = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert third.returncode == 0, third.stderr[-3000:]

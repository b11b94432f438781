"""Every export survives faults. The real CLI, as a subprocess, against the fake server.

Each test seeds the fake server's faults, runs the installed console script and checks what a
user would check: every event exactly once (by ``$insert_id``, against ``server.events``), the
exit code, the STATE, the log lines, and that the secret never shows up anywhere.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter

import pytest

from tap_mixpanel_parallel.testing.fake_server import Faults
from tests.helpers import (
    PROJECT_ID,
    SECRET,
    TAP,
    USER,
    all_ids,
    assert_exactly_once,
    base_config,
    expected_ids,
    export_requests,
    parse_messages,
    wait_for,
    wait_until_idle,
)

D = dt.date
START = D(2024, 1, 1)
WEEK = dt.timedelta(days=7)
TOKEN = base64.b64encode(f"{USER}:{SECRET}".encode()).decode()


def weeks(n):
    """The first n 7-day partitions from START, as (from, to) ISO strings."""
    return [
        ((START + i * WEEK).isoformat(), (START + i * WEEK + dt.timedelta(days=6)).isoformat())
        for i in range(n)
    ]


def assert_no_secret(*runs):
    for run in runs:
        text = run.stdout + run.stderr
        assert SECRET not in text, "the service-account secret leaked into the output"
        assert TOKEN not in text, "the base64 credentials leaked into the output"


def faults_fired(server):
    return Counter(r.fault for r in export_requests(server) if r.fault)


# -- 1. random faults: every event exactly once, exit 0 ------------------------------------------


@pytest.mark.parametrize("retry_after", [None, 1], ids=["no-retry-after", "retry-after-1s"])
def test_cuts_429s_and_a_concurrency_cap_still_give_every_event_once(
    fake_server, run_tap, retry_after
):
    server = fake_server(
        start=START,
        days=70,
        events_per_day=30,
        latency=0.05,  # so the first requests overlap and the cap of 3 is really hit
        faults=Faults(
            seed=200, cut_rate=0.3, rate_429=0.1, retry_after=retry_after, max_concurrent=3
        ),
    )
    # A bare 429 waits rate_limit_wait (30 s by default, doubling): short here, to keep it quick.
    run = run_tap(base_config(server, max_workers=6, rate_limit_wait=0.3))
    assert_no_secret(run)
    assert run.returncode == 0, run.stderr[-3000:]
    assert_exactly_once(run, server)
    fired = faults_fired(server)
    # the faults really happened, or this test would prove nothing
    assert fired["cut"] >= 2, fired
    assert fired["429"] >= 1, fired
    assert fired["concurrency"] >= 1, fired
    assert run.bookmark["failed_partitions"] == []
    assert run.bookmark["replication_key_value"] == server.today.isoformat()
    assert "10 partitions ok, 0 failed" in run.stderr
    if retry_after is not None:
        # A Retry-After holds every new request, not just the retry of that partition
        # (requests already past the limiter when the 429 arrived may still go out).
        requests = export_requests(server)
        for r in requests:
            if r.status == 429:
                inside = [
                    s for s in requests if r.ended + 0.25 < s.started < r.ended + retry_after - 0.1
                ]
                assert not inside, "a request started inside another request's Retry-After"


def test_terminated_early_invalid_json_and_5xx_still_give_every_event_once(fake_server, run_tap):
    server = fake_server(
        start=START,
        days=70,
        events_per_day=30,
        faults=Faults(seed=109, terminated_early_rate=0.15, invalid_json_rate=0.15, rate_5xx=0.15),
    )
    run = run_tap(base_config(server, max_workers=6, max_retries=10))
    assert_no_secret(run)
    assert run.returncode == 0, run.stderr[-3000:]
    assert_exactly_once(run, server)
    fired = faults_fired(server)
    for fault in ("terminated_early", "invalid_json", "5xx"):
        assert fired[fault] >= 1, fired
    assert run.bookmark["failed_partitions"] == []


def test_a_stall_longer_than_request_timeout_is_retried(fake_server, run_tap):
    server = fake_server(
        start=START,
        days=70,
        events_per_day=30,
        faults=Faults(seed=9, stall_rate=0.3, stall_seconds=2.5),
    )
    run = run_tap(base_config(server, max_workers=6, max_retries=10, request_timeout=1))
    assert_no_secret(run)
    assert run.returncode == 0, run.stderr[-3000:]
    assert_exactly_once(run, server)
    wait_until_idle(server)  # a stalled request is logged when its handler gives up
    stalls = [r for r in export_requests(server) if r.fault == "stall"]
    assert len(stalls) >= 2, faults_fired(server)
    assert "attempt 1 failed" in run.stderr
    # the stalled requests were given up at request_timeout, not waited out
    assert "timed out" in run.stderr


# -- 2. failed partitions: saved, reported, retried -----------------------------------------------


def test_partition_failing_every_attempt_is_saved_then_completed(fake_server, run_tap):
    server = fake_server(
        start=START,
        days=28,
        events_per_day=10,
        faults=Faults(seed=1, fail_dates={"2024-01-17"}),
    )
    config = base_config(server, max_retries=2, max_workers=4)
    run = run_tap(config)
    assert_no_secret(run)
    assert run.returncode == 1, run.stderr[-3000:]
    failed = run.bookmark["failed_partitions"]
    assert [(f["from_date"], f["to_date"], f["attempts"]) for f in failed] == [
        ("2024-01-15", "2024-01-21", 3)
    ]
    assert "500" in failed[0]["error"]
    assert len([r for r in export_requests(server) if r.fault == "fail_date"]) == 3
    healthy = expected_ids(server, D(2024, 1, 1), D(2024, 1, 14)) + expected_ids(
        server, D(2024, 1, 22), D(2024, 1, 28)
    )
    assert sorted(run.insert_ids()) == sorted(healthy)
    last = run.stderr.strip().splitlines()[-1]
    assert "1 partition failed" in last
    assert "2024-01-15..2024-01-21" in last
    assert "failed after 3 attempts" in run.stderr

    server.faults = Faults()
    server.reset_stats()
    again = run_tap(config, state=run.last_state)
    assert_no_secret(again)
    assert again.returncode == 0, again.stderr[-3000:]
    assert sorted(again.insert_ids()) == sorted(
        expected_ids(server, D(2024, 1, 15), D(2024, 1, 21))
    )
    assert [(r.from_date, r.to_date) for r in export_requests(server)] == [
        ("2024-01-15", "2024-01-21")
    ]
    assert again.bookmark["failed_partitions"] == []
    assert again.bookmark["replication_key_value"] == "2024-01-28"


def _failed_set(state):
    return {
        (f["from_date"], f["to_date"]) for f in state["bookmarks"]["events"]["failed_partitions"]
    }


def assert_failed_never_lost(run, incoming, server):
    """Along the run's STATE lines, an owed partition leaves the list only once emitted."""
    owed = set(incoming)
    emitted_days = set()
    for message in run.messages:
        if message["type"] == "RECORD":
            ts = dt.datetime.fromisoformat(message["record"]["time"])
            emitted_days.add(ts.date().isoformat())
        elif message["type"] == "STATE":
            now = _failed_set(message["value"])
            for gone in owed - now:
                days = {
                    (D.fromisoformat(gone[0]) + dt.timedelta(days=i)).isoformat()
                    for i in range((D.fromisoformat(gone[1]) - D.fromisoformat(gone[0])).days + 1)
                }
                assert days & emitted_days, f"{gone} left failed_partitions without its events"
            owed = now


def test_every_partition_failing_then_partly_then_fully_healthy(fake_server, run_tap):
    server = fake_server(start=START, days=70, events_per_day=10, faults=Faults(rate_5xx=1.0))
    config = base_config(server, max_retries=1, max_workers=5)
    first = run_tap(config)
    assert_no_secret(first)
    assert first.returncode == 1, first.stderr[-3000:]
    assert first.records == []
    failed = first.bookmark["failed_partitions"]
    assert [(f["from_date"], f["to_date"]) for f in failed] == weeks(10)
    assert all(f["attempts"] == 2 for f in failed)
    assert all("HTTP 5" in f["error"] for f in failed)
    lines = first.stderr.strip().splitlines()
    assert "10 partitions failed and are saved in state for the next run" in lines[-1]
    for a, b in weeks(10):
        assert f"{a}..{b}" in lines[-1]
    assert "0 partitions ok, 10 failed" in first.stderr
    # the state is valid for the next run and was written after every partition
    assert len(first.states) >= 10
    json.dumps(first.last_state)

    # partly healthy: two weeks still fail, the rest are exported; nothing is lost
    still_failing = {"2024-01-17", "2024-02-20"}
    server.faults = Faults(fail_dates=still_failing)
    server.reset_stats()
    second = run_tap(config, state=first.last_state)
    assert_no_secret(second)
    assert second.returncode == 1, second.stderr[-3000:]
    assert_failed_never_lost(second, set(weeks(10)), server)
    left = second.bookmark["failed_partitions"]
    assert [(f["from_date"], f["to_date"], f["attempts"]) for f in left] == [
        ("2024-01-15", "2024-01-21", 4),
        ("2024-02-19", "2024-02-25", 4),
    ]
    ok_weeks = [w for w in weeks(10) if w not in {(f["from_date"], f["to_date"]) for f in left}]
    owed_ids = [
        i for a, b in ok_weeks for i in expected_ids(server, D.fromisoformat(a), D.fromisoformat(b))
    ]
    assert sorted(second.insert_ids()) == sorted(owed_ids)
    # the failed partitions were retried exactly as recorded, nothing else was asked for
    assert sorted({(r.from_date, r.to_date) for r in export_requests(server)}) == weeks(10)

    # healthy: the last two come through
    server.faults = Faults()
    server.reset_stats()
    third = run_tap(config, state=second.last_state)
    assert_no_secret(third)
    assert third.returncode == 0, third.stderr[-3000:]
    assert_failed_never_lost(
        third, {("2024-01-15", "2024-01-21"), ("2024-02-19", "2024-02-25")}, server
    )
    assert third.bookmark["failed_partitions"] == []
    union = first.insert_ids() + second.insert_ids() + third.insert_ids()
    assert Counter(union).most_common(1)[0][1] == 1
    assert sorted(union) == all_ids(server)


# -- 3. SIGTERM / SIGINT mid-run, then resume -----------------------------------------------------


class _Reader:
    """Reads a running tap's stdout and stderr without blocking the test."""

    def __init__(self, proc):
        self.proc = proc
        self.lines = []
        self.stderr = ""
        self.first_state = threading.Event()
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _read_stdout(self):
        records = False
        for line in self.proc.stdout:
            self.lines.append(line)
            compact = line.replace(" ", "")
            records = records or '"type":"RECORD"' in compact
            if records and '"type":"STATE"' in compact:
                self.first_state.set()  # the STATE after the first finished partition

    def _read_stderr(self):
        self.stderr = self.proc.stderr.read()

    def join(self):
        for t in self._threads:
            t.join(timeout=10)

    @property
    def stdout(self):
        return "".join(self.lines)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_interrupted_run_resumes_without_loss_or_repeat(
    fake_server, start_tap, run_tap, signum, code
):
    # ~1 s per partition, 3 at a time: the signal lands while partitions are in flight
    server = fake_server(start=START, days=70, events_per_day=30, latency=1.0)
    config = base_config(server, max_workers=3)
    proc = start_tap(config)
    reader = _Reader(proc)
    assert reader.first_state.wait(20), "no partition finished"
    wait_for(lambda: server.in_flight > 0)
    proc.send_signal(signum)
    signalled = time.monotonic()
    proc.wait(timeout=15)
    elapsed = time.monotonic() - signalled
    reader.join()
    assert proc.returncode == code, reader.stderr[-3000:]
    # a stop must not wait for in-flight partitions (liveness, generous for a loaded machine)
    assert elapsed < 10, f"took {elapsed:.1f}s to stop"
    stdout = reader.stdout
    assert stdout.endswith("\n"), "stdout ends in a partial line"
    first_messages = parse_messages(stdout)  # every line is a whole JSON message
    assert SECRET not in stdout + reader.stderr
    assert "interrupted: rerun with the last STATE" in reader.stderr
    first_ids = [m["record"]["insert_id"] for m in first_messages if m["type"] == "RECORD"]
    states = [m["value"] for m in first_messages if m["type"] == "STATE"]
    assert 0 < len(first_ids) < len(all_ids(server)), "the signal did not land mid-run"
    assert states[-1]["bookmarks"]["events"]["failed_partitions"] == []
    # what was emitted is exactly what the last STATE covers
    bookmark = D.fromisoformat(states[-1]["bookmarks"]["events"]["replication_key_value"])
    assert sorted(first_ids) == sorted(expected_ids(server, START, bookmark))

    server.latency = 0
    second = run_tap(config, state=states[-1])
    assert_no_secret(second)
    assert second.returncode == 0, second.stderr[-3000:]
    union = first_ids + second.insert_ids()
    assert Counter(union).most_common(1)[0][1] == 1, "an event was emitted by both runs"
    assert sorted(union) == all_ids(server)
    assert second.bookmark["replication_key_value"] == server.today.isoformat()


def test_interrupted_retry_keeps_the_failed_partitions_it_did_not_finish(fake_server, start_tap):
    server = fake_server(start=START, days=28, events_per_day=10, latency=1.5)
    config = base_config(server, max_workers=2)
    owed = [
        {"from_date": a, "to_date": b, "error": "HTTP 503 from Mixpanel.", "attempts": 6}
        for a, b in weeks(4)
    ]
    state = {
        "bookmarks": {
            "events": {
                "replication_key": "time",
                "replication_key_value": "2024-01-28",
                "failed_partitions": owed,
            }
        }
    }
    proc = start_tap(config, state)
    reader = _Reader(proc)
    wait_for(lambda: server.in_flight > 0)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=15)
    reader.join()
    assert proc.returncode == 143, reader.stderr[-3000:]
    messages = parse_messages(reader.stdout)
    assert not [m for m in messages if m["type"] == "RECORD"]
    for message in messages:
        if message["type"] == "STATE":
            # no partition finished, so every owed one must still be listed
            assert _failed_set(message["value"]) == set(weeks(4)), message


# -- 4/5. errors no retry can fix; the secret never shows ----------------------------------------


@pytest.mark.parametrize(
    ("status", "what_to_check"),
    [
        (401, "check service_account_username, service_account_secret"),
        (402, "plan does not include the export API"),
        (403, "give the service account access to that project"),
    ],
)
def test_401_402_403_stop_the_run_at_once(fake_server, run_tap, status, what_to_check):
    server = fake_server(
        start=START, days=70, events_per_day=5, faults=Faults(status_override=status)
    )
    run = run_tap(base_config(server, max_workers=4, max_retries=5))
    assert_no_secret(run)
    assert run.returncode == 2, run.stderr[-3000:]
    assert len(export_requests(server)) <= 4, "the run kept asking after a fatal answer"
    assert run.records == []
    tail = "\n".join(run.stderr.strip().splitlines()[-2:])
    assert f"HTTP {status}" in tail
    assert what_to_check in tail
    assert "retrying" not in run.stderr


def test_wrong_credentials_and_wrong_project_are_fatal(fake_server, run_tap):
    server = fake_server(start=START, days=70, events_per_day=5)
    wrong_secret = run_tap(base_config(server, service_account_secret="not-the-secret"))
    assert wrong_secret.returncode == 2, wrong_secret.stderr[-3000:]
    assert "HTTP 401" in wrong_secret.stderr.strip().splitlines()[-1]
    assert len(export_requests(server)) <= 10
    server.reset_stats()
    wrong_project = run_tap(base_config(server, project_id=PROJECT_ID + 1, max_workers=3))
    assert_no_secret(wrong_project)
    assert wrong_project.returncode == 2, wrong_project.stderr[-3000:]
    assert "HTTP 403" in wrong_project.stderr.strip().splitlines()[-1]
    assert f"project_id {PROJECT_ID + 1}" in wrong_project.stderr.strip().splitlines()[-1]
    assert len(export_requests(server)) <= 3


def test_a_401_body_echoing_the_credentials_is_redacted(fake_server, run_tap):
    # the server knows another secret, so ours is wrong, and it echoes what it received
    server = fake_server(
        start=START,
        days=14,
        events_per_day=5,
        service_account=(USER, "the-right-secret"),
        faults=Faults(echo_credentials=True),
    )
    request = urllib.request.Request(
        f"{server.url}/api/2.0/export?from_date=2024-01-01&to_date=2024-01-01&project_id={PROJECT_ID}",
        headers={"Authorization": f"Basic {TOKEN}"},
    )
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(request, timeout=5)
    body = answer.value.read().decode()
    assert answer.value.code == 401
    assert SECRET in body and TOKEN in body, "precondition: the fake echoes the credentials"
    server.reset_stats()

    run = run_tap(base_config(server, max_workers=2))
    assert run.returncode == 2, run.stderr[-3000:]
    assert "HTTP 401" in run.stderr
    assert "Mixpanel said: Unauthorized" in run.stderr  # the body is shown, redacted
    assert_no_secret(run)


def test_a_fatal_run_keeps_the_failed_partitions_it_was_given(fake_server, run_tap):
    server = fake_server(start=START, days=28, events_per_day=5, faults=Faults(status_override=403))
    state = {
        "bookmarks": {
            "events": {
                "replication_key": "time",
                "replication_key_value": "2024-01-28",
                "failed_partitions": [
                    {"from_date": a, "to_date": b, "error": "HTTP 503", "attempts": 3}
                    for a, b in weeks(2)
                ],
            }
        }
    }
    run = run_tap(base_config(server), state=state)
    assert run.returncode == 2, run.stderr[-3000:]
    for value in run.states:
        assert _failed_set(value) == set(weeks(2)), "a failed partition was dropped"


@pytest.mark.parametrize("about_format", [None, "json", "markdown"])
def test_about_never_shows_the_secret(fake_server, tmp_path, about_format):
    # not run_tap: --about prints a document, not Singer messages
    server = fake_server(start=START, days=7, events_per_day=1)
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(base_config(server)))
    extra = [] if about_format is None else ["--format", about_format]
    about = subprocess.run(
        [TAP, "--about", *extra, "--config", str(config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert about.returncode == 0, about.stderr
    assert "service_account_secret" in about.stdout
    assert SECRET not in about.stdout + about.stderr
    assert export_requests(server) == []

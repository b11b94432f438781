"""What goes wrong around the export rather than in Mixpanel's answers: a BATCH folder that
fills up mid-run, two runs on one state file with different temporary folders; and the columns
events carry beside ``distinct_id``, as Mixpanel's own warehouse export has them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import date as D
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.helpers import TAP, base_config, parse_messages

START = D(2024, 1, 1)


@pytest.fixture
def small_mount(tmp_path):
    """A 1 MiB tmpfs (CI runs as root): the writes that do not fit fail with ENOSPC."""
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        check=True,
    )
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_batch_folder_that_fills_up_fails_its_partitions_cleanly(
    fake_server, run_tap, small_mount
):
    # Three weeks of about 700 KB each: the first fits, the next two do not.
    server = fake_server(start=START, days=21, events_per_day=150)
    config = base_config(server, batch_messages=True, batch_dir=str(small_mount), max_workers=1)
    run = run_tap(config)
    assert run.returncode == 1, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    batches = [m for m in run.messages if m["type"] == "BATCH"]
    assert len(batches) == 1
    loaded = [
        json.loads(line)["insert_id"]
        for url in batches[0]["manifest"]
        for line in Path(urlparse(url).path).read_bytes().splitlines()
    ]
    assert len(loaded) == 7 * 150
    failed = run.bookmark["failed_partitions"]
    assert [(f["from_date"], f["to_date"]) for f in failed] == [
        ("2024-01-08", "2024-01-14"),
        ("2024-01-15", "2024-01-21"),
    ]
    assert all("no space left for BATCH files" in f["error"] for f in failed), failed
    assert "2 partitions failed and are saved in state" in run.stderr
    # What a failed partition wrote is gone: no message names it.
    files = {p.name for p in small_mount.rglob("*.jsonl")}
    assert files == {Path(urlparse(url).path).name for url in batches[0]["manifest"]}


def test_two_runs_on_one_state_file_meet_whatever_their_tmpdir(fake_server, tmp_path):
    # Slow enough (requests of 3 s, one at a time) that the second run, which may take seconds
    # to start on a busy machine, still finds the first one running.
    server = fake_server(start=START, days=14, events_per_day=10, latency=3.0)
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(base_config(server, max_workers=1)))
    state_path = tmp_path / "state.json"
    state_path.write_text(json.dumps({"bookmarks": {}}))
    args = [TAP, "--config", str(config_path), "--state", str(state_path)]
    temp = {name: tmp_path / name for name in ("tmp-a", "tmp-b")}
    for folder in temp.values():
        folder.mkdir()
    first = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(temp["tmp-a"])},
    )
    try:
        deadline = time.monotonic() + 60
        while server.in_flight == 0:
            assert time.monotonic() < deadline, "the first run never started a request"
            time.sleep(0.02)
        second = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "TMPDIR": str(temp["tmp-b"])},
        )
        assert second.returncode == 2, second.stderr[-3000:]
        assert f"another tap-mixpanel-parallel run (pid {first.pid}) is using the state file" in (
            second.stderr
        )
        assert second.stdout == ""
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()


def test_events_carry_device_id_and_user_id_beside_distinct_id(fake_server, run_tap, tmp_path):
    server = fake_server(start=START, days=3, events_per_day=40)
    fast = run_tap(base_config(server))
    assert fast.returncode == 0, fast.stderr[-3000:]
    records = [m["record"] for m in fast.messages if m["type"] == "RECORD"]
    assert len(records) == 120
    for record in records:
        properties = record["properties"]
        assert record["device_id"] == properties.get("$device_id")
        assert record["user_id"] == properties.get("$user_id")
    assert any(r["user_id"] is None for r in records)
    assert any(r["user_id"] is not None for r in records)
    (schema,) = [m for m in fast.messages if m["type"] == "SCHEMA" and m["stream"] == "events"]
    assert schema["key_properties"] == ["event", "distinct_id", "time", "insert_id"]
    for column in ("device_id", "user_id"):
        assert schema["schema"]["properties"][column]["type"] == ["string", "null"]
    # The SDK's record path (a stream map) and the BATCH files give the same columns.
    mapped = run_tap(base_config(server, stream_maps={"events": {"__alias__": "mapped"}}))
    assert mapped.returncode == 0, mapped.stderr[-3000:]
    by_id = {r["insert_id"]: r for r in records}
    for message in mapped.messages:
        if message["type"] == "RECORD":
            record = message["record"]
            assert record["device_id"] == by_id[record["insert_id"]]["device_id"]
            assert record["user_id"] == by_id[record["insert_id"]]["user_id"]
    batch = run_tap(base_config(server, batch_messages=True, batch_dir=str(tmp_path / "b")))
    assert batch.returncode == 0, batch.stderr[-3000:]
    for message in batch.messages:
        if message["type"] == "BATCH":
            for url in message["manifest"]:
                for line in Path(urlparse(url).path).read_bytes().splitlines():
                    record = json.loads(line)
                    assert record["user_id"] == by_id[record["insert_id"]]["user_id"]
    assert parse_messages(batch.stdout)

"""BATCH files: bounded, each partition's BATCH before its STATE, earlier runs' folders removed.

Plus the tap alone on awkward events: with its defaults, ``properties`` reach stdout byte for
byte, NUL escapes and invalid UTF-8 included.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from pathlib import Path
from urllib.parse import urlparse

from hypothesis import given, settings
from hypothesis import strategies as st

from tap_mixpanel_parallel.export.batch import BatchFiles
from tap_mixpanel_parallel.locks import try_lock
from tap_mixpanel_parallel.run.spool import LOCK_NAME, PREFIX
from tests.helpers import EVENT_COLUMNS, TAP, base_config, expected_ids

D = dt.date


def spool(tmp_path: Path, sizes: list[int]) -> Path:
    path = tmp_path / "spool.jsonl"
    path.write_bytes(b"".join(b"x" * (n - 1) + b"\n" for n in sizes))
    return path


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(1, 60), max_size=40),
    st.integers(1, 7),
    st.integers(1, 120),
)
def test_files_are_bounded_and_keep_every_line_in_order(tmp_path_factory, sizes, most, max_bytes):
    tmp = tmp_path_factory.mktemp("batch")
    files = BatchFiles(tmp / "root", max_records=most, max_bytes=max_bytes)
    files.open()
    try:
        written = files.write(spool(tmp, sizes), "p")
    finally:
        files.close()
    contents = [f.read_bytes() for f in written]
    assert b"".join(contents) == spool(tmp, sizes).read_bytes()
    for data in contents:
        lines = data.splitlines(keepends=True)
        assert 1 <= len(lines) <= most
        assert len(lines) == 1 or len(data) <= max_bytes  # a lone large record may exceed it
    assert [f.name for f in written] == [f"p-{n:03d}.jsonl" for n in range(1, len(written) + 1)]


def test_a_run_removes_earlier_runs_folders_but_never_a_live_ones(tmp_path):
    root = tmp_path / "batches"
    first = BatchFiles(root, max_records=10)
    first.open()
    assert first.folder is not None
    first.write(spool(tmp_path, [5, 5]), "a")
    # while the first tap runs (holds its lock), a second run leaves its folder alone
    second = BatchFiles(root, max_records=10)
    assert second.open().directories == 0
    assert first.folder.exists()
    second.close()
    first.close()
    # once both finished, the next run removes both folders, and keeps its own
    third = BatchFiles(root, max_records=10)
    swept = third.open()
    assert swept.directories == 2
    assert swept.bytes >= 10  # the batch file, and the lock files with their pid
    assert third.folder is not None
    assert [p.name for p in root.iterdir()] == [third.folder.name]
    assert third.folder.name.startswith(PREFIX)
    assert try_lock(third.folder / LOCK_NAME, create=False) is None, "the running tap holds it"
    third.close()
    fd = try_lock(third.folder / LOCK_NAME, create=False)
    assert fd is not None, "released when the tap is done"
    os.close(fd)
    assert list(third.folder.iterdir()), "its files stay for the loader"


def test_each_partition_goes_out_as_batch_then_state_with_every_record_once(
    fake_server, run_tap, tmp_path
):
    server = fake_server(start=D(2024, 1, 1), days=16, events_per_day=25)
    root = tmp_path / "batches"
    config = base_config(
        server, batch_messages=True, batch_dir=str(root), batch_max_records=60, max_workers=3
    )
    run = run_tap(config)
    assert run.returncode == 0, run.stderr[-3000:]
    kinds = [m["type"] for m in run.messages]
    assert "RECORD" not in kinds
    # The query streams (selected by default, no data here) sync first: from events' SCHEMA on.
    events_schema = next(
        i for i, m in enumerate(run.messages) if m["type"] == "SCHEMA" and m["stream"] == "events"
    )
    kinds = kinds[events_schema:]
    assert kinds == ["SCHEMA", *["BATCH", "STATE"] * 3]  # 7 + 7 + 2 days
    records = []
    for message in run.messages:
        if message["type"] != "BATCH":
            continue
        assert message["stream"] == "events"
        assert message["encoding"]["format"] == "jsonl"
        for url in message["manifest"]:
            path = Path(urlparse(url).path)
            lines = path.read_bytes().splitlines()
            assert 1 <= len(lines) <= 60
            records += [json.loads(line) for line in lines]
    assert sorted(r["insert_id"] for r in records) == sorted(
        expected_ids(server, D(2024, 1, 1), D(2024, 1, 16))
    )
    assert set(records[0]) == EVENT_COLUMNS
    # 175 records of a 7-day partition in files of at most 60: 60 + 60 + 55
    first_batch = next(m for m in run.messages if m["type"] == "BATCH")
    assert len(first_batch["manifest"]) == 3
    # the next run removes this run's folder and writes into its own
    (folder,) = root.iterdir()
    assert run_tap(config).returncode == 0
    (newer,) = root.iterdir()
    assert newer != folder


def test_without_batch_messages_records_go_out_as_records(fake_server, run_tap, tmp_path):
    server = fake_server(start=D(2024, 1, 1), days=3, events_per_day=5)
    run = run_tap(base_config(server, batch_dir=str(tmp_path / "unused")))
    assert run.returncode == 0, run.stderr[-3000:]
    assert [m["type"] for m in run.messages].count("RECORD") == 15
    assert not (tmp_path / "unused").exists()


def test_tap_alone_passes_awkward_properties_byte_for_byte(fake_server, tmp_path):
    server = fake_server(start=D(2024, 1, 1), days=1, events_per_day=2, awkward_events=True)
    config = tmp_path / "config.json"
    config.write_text(json.dumps(base_config(server)))
    proc = subprocess.run([TAP, "--config", str(config)], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert b'"$browser":"Mozilla\\u0000","form":{"fields":[{"value":"a\\u0000b"}]' in out
    assert b'"key\\u0000":"v"' in out
    assert b'"form":{"name":"caf\xe9 \xff\xfe"}' in out
    # the three events without $insert_id: three different synthetic keys
    keys = {
        line.split(b'"insert_id":"')[1].split(b'"')[0]
        for line in out.splitlines()
        if b'"event":"Server Import"' in line
    }
    assert len(keys) == 3
    assert all(k.startswith(b"h:") for k in keys)


def test_stream_maps_need_records_so_batch_messages_give_way(fake_server, run_tap, tmp_path):
    server = fake_server(start=D(2024, 1, 1), days=2, events_per_day=4)
    config = base_config(
        server,
        batch_messages=True,
        batch_dir=str(tmp_path / "batches"),
        stream_maps={"events": {"source": "'mixpanel'"}},
    )
    run = run_tap(config)
    assert run.returncode == 0, run.stderr[-3000:]
    records = [m for m in run.messages if m["type"] == "RECORD"]
    assert len(records) == 8
    assert all(r["record"]["source"] == "mixpanel" for r in records)
    assert "BATCH" not in [m["type"] for m in run.messages]
    assert "batch_messages is on, but stream maps" in run.stderr

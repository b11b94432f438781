"""Signals, kills and a full disk while the tap writes a partition: the real CLI, as a subprocess.

The test holds the tap's stdout pipe and stops reading it, so the tap is caught in the middle
of writing a partition while every later partition is already spooled, the moment a stop
matters most. Then it signals, kills or lets the pipe go, and checks what a target would see:
whole lines only, a last STATE that covers only whole partitions, the exit code, no spool folder
left behind, and a rerun from that STATE that completes the export.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import resource
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from tap_mixpanel_parallel.output import STOP_GRACE_SECONDS
from tap_mixpanel_parallel.run.spool import PREFIX
from tests.helpers import (
    TAP,
    base_config,
    expected_ids,
    export_requests,
    parse_messages,
    tap_args,
    wait_for,
)

D = dt.date
START = D(2024, 1, 1)
WEEK_1 = (START, D(2024, 1, 7))


class Tap:
    """The CLI with a stdout pipe the test reads when it chooses."""

    def __init__(self, tmp_path: Path, config: dict, state: dict | None = None, env=None):
        self.tmpdir = tmp_path / "tmp"
        self.tmpdir.mkdir(exist_ok=True)
        args = tap_args(tmp_path, config, state)
        self.stderr_path = tmp_path / f"stderr-{time.monotonic_ns()}.log"
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                args,
                stdout=subprocess.PIPE,
                stderr=err,
                env={**os.environ, "TMPDIR": str(self.tmpdir), **(env or {})},
            )
        self.out = b""

    def read_until_records(self) -> None:
        """Read until the first RECORD line: the tap is writing partition 1. Then stop reading."""
        while b'"type":"RECORD"' not in self.out:
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            assert chunk, "stdout ended before any record"
            self.out += chunk

    def drain(self) -> None:
        """Read everything left, to EOF."""
        self.out += self.proc.stdout.read()

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def messages(self) -> list[dict]:
        text = self.out.decode()
        assert text.endswith("\n"), "stdout ends in a cut line"
        return parse_messages(text)  # every line must be a whole message

    def spool_dirs(self) -> list[Path]:
        return [p for p in self.tmpdir.iterdir() if p.name.startswith(PREFIX)]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def taps(tmp_path):
    started: list[Tap] = []

    def start(config, state=None, env=None) -> Tap:
        tap = Tap(tmp_path, config, state, env)
        started.append(tap)
        return tap

    yield start
    for tap in started:
        tap.kill()


def big_server(fake_server, weeks=3):
    # ~5 MB per weekly partition: far more than a pipe holds, so the writer blocks mid-partition
    return fake_server(start=START, days=7 * weeks, events_per_day=1500)


def caught_mid_partition(fake_server, taps, weeks=3, **settings):
    """A tap writing partition 1 into a pipe nobody reads, every partition already spooled."""
    server = big_server(fake_server, weeks)
    config = base_config(server, **settings)
    tap = taps(config)
    tap.read_until_records()
    wait_for(all_fetched(server, weeks), timeout=60)
    return server, config, tap


def all_fetched(server, partitions):
    def check():
        return len(export_requests(server)) >= partitions and server.in_flight == 0

    return check


def records(messages):
    return [m["record"]["insert_id"] for m in messages if m["type"] == "RECORD"]


def last_bookmark(messages):
    states = [m["value"] for m in messages if m["type"] == "STATE"]
    return states[-1]["bookmarks"].get("events", {}) if states else {}


def rerun_completes(run_tap, config, messages, server, env):
    """The next run from the last STATE exports the rest; nothing is lost."""
    states = [m["value"] for m in messages if m["type"] == "STATE"]
    second = run_tap(config, state=states[-1] if states else None, env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    union = records(messages) + second.insert_ids()
    assert set(union) == set(expected_ids(server, server.start_date, server.today))
    return second


def test_sigint_mid_partition_stops_at_the_partition_end_not_after_every_spooled_one(
    fake_server, taps, run_tap
):
    server, config, tap = caught_mid_partition(fake_server, taps, max_workers=3)
    tap.proc.send_signal(signal.SIGINT)
    tap.drain()  # the reader keeps up: the partition being written can finish
    assert tap.proc.wait(timeout=60) == 130, tap.stderr[-3000:]
    messages = tap.messages()
    emitted = records(messages)
    # partitions 2 and 3 were spooled, but a stop does not go on writing them out
    assert set(emitted) <= set(expected_ids(server, *WEEK_1))
    assert len(emitted) == len(set(emitted))
    bookmark = last_bookmark(messages)
    if bookmark.get("replication_key_value") == "2024-01-07":
        assert sorted(emitted) == sorted(expected_ids(server, *WEEK_1))
    else:  # the machine was too slow to finish it within the grace: no STATE covers it
        assert "stopped while writing partition 2024-01-01..2024-01-07" in tap.stderr
    assert "interrupted: rerun with the last STATE" in tap.stderr
    assert "Traceback" not in tap.stderr
    assert tap.spool_dirs() == [], "the spool folder was left behind"
    rerun_completes(run_tap, config, messages, server, {"TMPDIR": str(tap.tmpdir)})


def test_a_reader_that_stops_reading_after_sigterm_cannot_hold_the_tap(fake_server, taps, run_tap):
    # Meltano, told to stop, sends SIGTERM and stops forwarding the tap's output but keeps the
    # pipe open: the tap must still end, at a line boundary, with only whole partitions in STATE.
    server, config, tap = caught_mid_partition(fake_server, taps, max_workers=3)
    tap.proc.send_signal(signal.SIGTERM)
    # liveness only, generous for a loaded machine: before the fix this never returned
    assert tap.proc.wait(timeout=120) == 143, tap.stderr[-3000:]
    tap.drain()
    messages = tap.messages()
    assert "stopped while writing partition 2024-01-01..2024-01-07" in tap.stderr
    assert "replication_key_value" not in last_bookmark(messages), "a cut partition has a STATE"
    assert set(records(messages)) < set(expected_ids(server, *WEEK_1))
    assert "Traceback" not in tap.stderr
    assert tap.spool_dirs() == []
    second = rerun_completes(run_tap, config, messages, server, {"TMPDIR": str(tap.tmpdir)})
    # the cut partition is sent again whole; nothing else is sent twice
    twice = {i for i, n in Counter(records(messages) + second.insert_ids()).items() if n > 1}
    assert twice <= set(expected_ids(server, *WEEK_1))


def test_grace_over_the_partition_is_cut_at_a_line_and_sent_again(fake_server, taps, run_tap):
    server, config, tap = caught_mid_partition(fake_server, taps, max_workers=3)
    tap.proc.send_signal(signal.SIGINT)
    time.sleep(STOP_GRACE_SECONDS + 1)  # the reader is back only after the grace
    tap.drain()
    assert tap.proc.wait(timeout=60) == 130, tap.stderr[-3000:]
    messages = tap.messages()
    assert "stopped while writing partition 2024-01-01..2024-01-07" in tap.stderr
    assert "replication_key_value" not in last_bookmark(messages)
    rerun_completes(run_tap, config, messages, server, {"TMPDIR": str(tap.tmpdir)})


def test_two_different_signals_are_one_stop(fake_server, taps):
    # Ctrl+C under Meltano: SIGINT to the whole group, then Meltano's own SIGTERM
    _, _, tap = caught_mid_partition(fake_server, taps, max_workers=3)
    tap.proc.send_signal(signal.SIGINT)
    tap.proc.send_signal(signal.SIGTERM)
    tap.drain()
    assert tap.proc.wait(timeout=60) == 130, tap.stderr[-3000:]
    tap.messages()
    assert "signal 15 too: still stopping" in tap.stderr
    assert "exiting now" not in tap.stderr


def test_the_same_signal_twice_exits_at_once_on_a_line_boundary(fake_server, taps):
    _, _, tap = caught_mid_partition(fake_server, taps, max_workers=3)
    tap.proc.send_signal(signal.SIGINT)
    wait_for(lambda: "signal 2: stopping" in tap.stderr)
    tap.proc.send_signal(signal.SIGINT)
    # nobody reads stdout: the exit must not wait for the reader, nor for the grace
    assert tap.proc.wait(timeout=60) == 130, tap.stderr[-3000:]
    assert "signal 2 again: exiting now" in tap.stderr
    tap.drain()
    messages = tap.messages()  # whole lines only, although the reader never came back
    assert "replication_key_value" not in last_bookmark(messages)
    assert tap.spool_dirs() == [], "the forced exit left its spool folder"


def test_a_signal_after_everything_was_written_exits_0(fake_server, taps):
    server, _, tap = caught_mid_partition(fake_server, taps, weeks=1)
    tap.proc.send_signal(signal.SIGINT)
    tap.drain()
    code = tap.proc.wait(timeout=60)
    messages = tap.messages()
    if last_bookmark(messages).get("replication_key_value") == "2024-01-07":
        assert code == 0, tap.stderr[-3000:]
        assert "nothing more is owed" in tap.stderr
        assert sorted(records(messages)) == sorted(expected_ids(server, *WEEK_1))
    else:  # too slow to finish within the grace: then it is an interruption
        assert code == 130


def test_sigkill_mid_partition_leaves_no_cut_line_and_the_next_run_removes_its_spools(
    fake_server, taps, run_tap
):
    _, config, tap = caught_mid_partition(fake_server, taps, max_workers=3)
    tap.kill()
    tap.drain()
    messages = tap.messages()  # what the pipe held ends on a whole line
    assert records(messages)
    (stale,) = tap.spool_dirs()
    assert sum(f.stat().st_size for f in stale.iterdir()) > 1_000_000

    second = run_tap(config, state=None, env={"TMPDIR": str(tap.tmpdir)})
    assert second.returncode == 0, second.stderr[-3000:]
    assert "removed 1 spool folder" in second.stderr
    assert tap.spool_dirs() == []


def test_a_live_runs_spool_folder_is_left_alone(fake_server, taps, run_tap):
    server = big_server(fake_server)
    tap = taps(base_config(server, max_workers=3))
    tap.read_until_records()  # alive, blocked on its stdout, with a full spool folder
    (live,) = tap.spool_dirs()
    small = fake_server(start=START, days=2, events_per_day=5)
    other = run_tap(base_config(small), env={"TMPDIR": str(tap.tmpdir)})
    assert other.returncode == 0, other.stderr[-3000:]
    assert "removed" not in other.stderr
    assert live.exists()


@pytest.fixture
def full_tmpdir(tmp_path):
    """A 2 MiB tmpfs, so spooling a partition hits ENOSPC for real (CI runs as root).

    Where mounting is not allowed, a 2 MiB file-size limit makes the same writes fail (EFBIG).
    """
    mount = tmp_path / "full"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode == 0:
        yield mount, None
        subprocess.run(["umount", "-l", str(mount)], check=False)
        return

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (2 << 20, 2 << 20))

    yield mount, limit


def test_a_full_tmpdir_fails_the_partitions_cleanly_and_they_are_owed(
    fake_server, full_tmpdir, tmp_path, run_tap
):
    mount, limit = full_tmpdir
    server = big_server(fake_server, weeks=2)
    config = base_config(server, max_workers=2)
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config))
    proc = subprocess.run(
        [TAP, "--config", str(config_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "TMPDIR": str(mount)},
        preexec_fn=limit,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    messages = parse_messages(proc.stdout)
    failed = last_bookmark(messages)["failed_partitions"]
    assert [(f["from_date"], f["to_date"]) for f in failed] == [
        ("2024-01-01", "2024-01-07"),
        ("2024-01-08", "2024-01-14"),
    ]
    assert all("spool file" in f["error"] for f in failed), failed
    if limit is None:
        assert "no space left for spool files" in failed[0]["error"]
    assert "export finished: 0 records, 0 partitions ok, 2 failed" in proc.stderr
    assert "2 partitions failed and are saved in state" in proc.stderr
    assert not records(messages)
    assert [p for p in mount.iterdir() if p.name.startswith(PREFIX)] == []

    state = [m["value"] for m in messages if m["type"] == "STATE"][-1]
    second = run_tap(config, state=state)
    assert second.returncode == 0, second.stderr[-3000:]
    assert sorted(second.insert_ids()) == sorted(
        expected_ids(server, server.start_date, server.today)
    )


def test_max_spool_mb_holds_fetching_ahead_back(fake_server, taps):
    server = big_server(fake_server, weeks=4)
    tap = taps(base_config(server, max_workers=4, max_spool_mb=1))
    tap.read_until_records()  # partition 1 (~5 MB, more than the bound) is being written

    def spooled() -> int:
        return sum(f.stat().st_size for d in tap.spool_dirs() for f in d.iterdir())

    wait_for(lambda: "spool files reached max_spool_mb (1 MiB)" in tap.stderr)
    wait_for(lambda: len(server.requests_log) >= 4)
    time.sleep(1)  # time enough for unbounded fetch-ahead to spool every partition
    peak = spooled()
    tap.drain()
    assert tap.proc.wait(timeout=120) == 0, tap.stderr[-3000:]
    messages = tap.messages()
    emitted = records(messages)
    assert sorted(emitted) == sorted(expected_ids(server, server.start_date, server.today))
    lines = tap.out.splitlines(keepends=True)
    week_1 = set(expected_ids(server, *WEEK_1))
    first = sum(
        len(line)
        for line, m in zip(lines, messages, strict=True)
        if m["type"] == "RECORD" and m["record"]["insert_id"] in week_1
    )
    everything = sum(
        len(line) for line, m in zip(lines, messages, strict=True) if m["type"] == "RECORD"
    )
    # the head partition whole (it may exceed the bound), plus at most one buffer of 1 MiB per
    # other worker that passed the check before the bound was reached; far from everything
    assert peak <= first + 4 * (1 << 20)
    assert peak < everything / 2


def fd_flags(pid: int, fd: int) -> int:
    for line in Path(f"/proc/{pid}/fdinfo/{fd}").read_text().splitlines():
        if line.startswith("flags:"):
            return int(line.split()[1], 8)
    raise AssertionError("no flags")


def test_stdout_shared_with_stderr_is_not_made_non_blocking(fake_server, taps):
    # `tap 2>&1 | target`: stdout and stderr are one open file. The tap's writes are
    # non-blocking, but only through a copy of its own: made on the shared file, a log line
    # written while the reader lags would fail with EAGAIN, and so would the shell's next
    # command writing into the same pipe.
    _, _, tap = caught_mid_partition(fake_server, taps, max_workers=3)
    pid = tap.proc.pid
    assert not fd_flags(pid, 1) & os.O_NONBLOCK
    assert not fd_flags(pid, 2) & os.O_NONBLOCK
    own = [
        fd
        for fd in map(int, os.listdir(f"/proc/{pid}/fd"))
        if fd > 2 and os.readlink(f"/proc/{pid}/fd/{fd}") == os.readlink(f"/proc/{pid}/fd/1")
    ]
    assert own, "the tap writes to its pipe through a copy of its own"
    assert all(fd_flags(pid, fd) & os.O_NONBLOCK for fd in own)
    tap.drain()
    assert tap.proc.wait(timeout=60) == 0

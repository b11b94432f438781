"""A progress bar when stderr is a terminal, plain log lines otherwise.

Unit tests drive ``Progress`` with a fake terminal; the CLI tests run the real console script
with a pseudo-terminal (``pty.openpty()``) or a pipe as its stderr and read the bytes it wrote.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import io
import json
import logging
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time

import pytest

from tap_mixpanel_parallel.export.partitions import PlannedPartition
from tap_mixpanel_parallel.export.runner import PartitionResult
from tap_mixpanel_parallel.progress import BAR_WIDTH, Progress, wants_bar
from tap_mixpanel_parallel.run.dates import Partition
from tap_mixpanel_parallel.run.status import Status
from tests.helpers import SECRET, TAP, base_config

D = dt.date
BAR_RE = re.compile(rf"\[[#-]{{{BAR_WIDTH}}}\] (\d+)/(\d+) partitions (\d+) records (\d+)/s")


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def result(index: int, status: str = "ok", records: int = 0, attempts: int = 1) -> PartitionResult:
    start = D(2024, 1, 1) + dt.timedelta(days=7 * index)
    planned = PlannedPartition(Partition(start, start + dt.timedelta(days=6)), False)
    return PartitionResult(
        index=index,
        planned=planned,
        status=Status(status),
        records=records,
        attempts=attempts,
        seconds=0.5,
        error="" if status == "ok" else "HTTP 503 from Mixpanel.",
    )


@pytest.fixture
def terminal_logger():
    """A logger whose handler writes to the same fake terminal as the bar."""
    stream = FakeTerminal()
    logger = logging.getLogger(f"test-progress-{time.monotonic_ns()}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.addHandler(handler)
    yield stream, logger, handler
    logger.removeHandler(handler)


def screen(raw: str) -> list[str]:
    """What a terminal shows: each "\r" returns to column 0 and overwrites from there."""
    lines: list[str] = []
    for row in raw.split("\n"):
        cells: list[str] = []
        for piece in row.split("\r"):
            for col, ch in enumerate(piece):
                if col < len(cells):
                    cells[col] = ch
                else:
                    cells.append(ch)
        lines.append("".join(cells).rstrip())
    return lines


def test_bar_counts_partitions_records_and_rate(terminal_logger):
    stream, logger, _ = terminal_logger
    clock = Clock()
    progress = Progress(4, logger, stream=stream, clock=clock)
    assert progress.bar
    clock.now += 2
    progress.partition_finished(result(0, records=300))
    clock.now += 2
    progress.partition_finished(result(1, records=500))
    raw = stream.getvalue()
    assert "\r[" in raw
    bars = BAR_RE.findall(raw)
    assert ("0", "4", "0", "0") in bars  # drawn at once, before the first partition ends
    assert bars[-1] == ("2", "4", "800", "200")
    assert "[" + "#" * (BAR_WIDTH // 2) + "-" * (BAR_WIDTH // 2) + "]" in raw
    # the log lines stay whole: each one is on a line of its own, never after a bar
    shown = screen(raw)
    assert "INFO partition 1/4 2024-01-01..2024-01-07: 300 records in 0.5s ok (1 attempt)" in shown
    assert "INFO partition 2/4 2024-01-08..2024-01-14: 500 records in 0.5s ok (1 attempt)" in shown
    assert shown[-1].startswith("[############------------] 2/4 partitions 800 records")


def test_failed_partitions_show_on_the_bar_and_summary_leaves_it_on_screen(terminal_logger):
    stream, logger, handler = terminal_logger
    clock = Clock()
    progress = Progress(3, logger, stream=stream, clock=clock)
    clock.now += 1
    progress.partition_finished(result(0, records=10))
    progress.partition_finished(result(1, status="failed", attempts=3))
    text = progress.summary()
    assert text == (
        "export finished: 10 records, 1 partitions ok, 1 failed, 1 not run, 1.0s, 10 records/s"
    )
    raw = stream.getvalue()
    assert raw.endswith(" 1 failed\n")
    assert "ERROR partition 2/3 2024-01-08..2024-01-14: failed after 3 attempts" in screen(raw)[-3]
    # after the summary the handler is itself again and log lines get no bar
    assert "emit" not in vars(handler)
    assert handler.stream is stream
    logger.info("after")
    assert stream.getvalue().endswith(" 1 failed\nINFO after\n")
    assert not progress.bar


def test_a_fatal_partition_is_not_counted_as_failed(terminal_logger):
    stream, logger, _ = terminal_logger
    progress = Progress(2, logger, stream=stream, bar=False)
    progress.partition_finished(result(0, status="fatal", attempts=1))
    assert progress.failed == 0
    assert "stopped the run after 1 attempt" in stream.getvalue()
    assert "0 failed, 2 not run" in progress.summary()
    assert "\r" not in stream.getvalue()


def test_log_lines_from_other_threads_clear_the_bar_first(terminal_logger):
    stream, logger, _ = terminal_logger
    Progress(5, logger, stream=stream)
    logger.warning("partition 1/5 2024-01-01..2024-01-07: attempt 1 failed; retrying")
    shown = screen(stream.getvalue())
    assert shown[0] == "WARNING partition 1/5 2024-01-01..2024-01-07: attempt 1 failed; retrying"
    assert shown[1].startswith("[------------------------] 0/5 partitions 0 records")


def test_no_bar_and_no_carriage_return_off_a_terminal():
    stream = io.StringIO()
    logger = logging.getLogger("test-progress-plain")
    progress = Progress(2, logger, stream=stream)
    assert not progress.bar
    progress.partition_finished(result(0, records=5))
    progress.summary()
    assert stream.getvalue() == ""


def test_no_bar_without_a_capable_terminal(monkeypatch):
    monkeypatch.setenv("TERM", "dumb")
    assert not wants_bar(FakeTerminal())
    monkeypatch.setenv("TERM", "xterm")
    assert wants_bar(FakeTerminal())
    assert not wants_bar(io.StringIO())


def test_nothing_owed_draws_nothing(terminal_logger):
    stream, logger, _ = terminal_logger
    progress = Progress(0, logger, stream=stream)
    logger.info("nothing to do")
    assert progress.summary().startswith("export finished: 0 records, 0 partitions ok")
    assert stream.getvalue() == "INFO nothing to do\n"


def drain(fd: int) -> bytes:
    """Everything already written to a pty master (one read may return only part)."""
    chunks = []
    while select.select([fd], [], [], 0.2)[0]:
        chunks.append(os.read(fd, 65536))
    return b"".join(chunks)


def test_the_bar_fits_a_narrow_terminal():
    master, slave = pty.openpty()
    try:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 40, 0, 0))
        with open(slave, "w", closefd=False) as stream:
            progress = Progress(3, logging.getLogger("test-progress-narrow"), stream=stream)
            assert progress.bar
            assert progress._columns() == 40
            progress.partition_finished(result(0, records=123456))
        data = drain(master).decode()
        drawn = [piece for piece in data.split("\r") if piece.strip()]
        assert drawn
        assert all(len(piece) <= 39 for piece in drawn)
        assert drawn[-1].startswith("[########----------------] 1/3")
    finally:
        os.close(master)
        os.close(slave)


# -- the real CLI ---------------------------------------------------------------------------------


def read_all(fd: int, timeout: float = 60) -> bytes:
    """Read a pty master until the child's side is closed (EIO on Linux)."""
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def test_cli_draws_the_bar_on_a_terminal(fake_server, tmp_path):
    server = fake_server(start=D(2024, 1, 1), days=63, events_per_day=20, latency=0.05)
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(base_config(server, max_workers=3)))
    stdout_path = tmp_path / "out.jsonl"
    master, slave = pty.openpty()
    try:
        with stdout_path.open("wb") as stdout:
            proc = subprocess.Popen(
                [TAP, "--config", str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=slave,
                env={**os.environ, "TERM": "xterm"},
            )
        os.close(slave)
        slave = -1
        raw = read_all(master)
        assert proc.wait(timeout=60) == 0, raw.decode(errors="replace")
    finally:
        os.close(master)
        if slave != -1:
            os.close(slave)
    stdout = stdout_path.read_bytes()
    text = raw.decode()
    assert "\r[" in text
    counts = [(int(a), int(b), int(c)) for a, b, c, _ in BAR_RE.findall(text)]
    assert counts[0] == (0, 9, 0)
    assert counts[-1] == (9, 9, 63 * 20)
    done = [a for a, _, _ in counts]
    assert done == sorted(done), "the bar went backwards"
    assert set(done) == set(range(10))
    assert "export finished: 1260 records, 9 partitions ok" in text
    # the bar is on stderr only: stdout still holds nothing but Singer messages
    assert all(json.loads(line)["type"] for line in stdout.splitlines())
    assert SECRET not in text


def test_cli_writes_plain_lines_into_a_pipe(fake_server, run_tap):
    server = fake_server(start=D(2024, 1, 1), days=21, events_per_day=5)
    run = run_tap(base_config(server), env={"TERM": "xterm"})
    assert run.returncode == 0, run.stderr
    assert "\r" not in run.stderr
    assert not BAR_RE.search(run.stderr)
    assert "partition 3/3 2024-01-15..2024-01-21: 35 records" in run.stderr

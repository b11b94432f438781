"""Progress of a run, as people read it: one line per finished partition and a summary.

On a terminal a bar (partitions done/total, records, records/s) is kept on the last line of
stderr: every log line written to that terminal first clears the bar, then the bar is drawn again
below it, so log lines and bar never share a line. Elsewhere (Meltano, CI, a pipe, a log file,
``TERM=dumb``) only the plain log lines are written. It knows partition results, not HTTP.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from tap_mixpanel_parallel.export.plan import duration, seconds_left
from tap_mixpanel_parallel.export.runner import PartitionResult
from tap_mixpanel_parallel.run.status import Status

BAR_WIDTH = 24
DEFAULT_COLUMNS = 80


def wants_bar(stream: TextIO) -> bool:
    """A bar only on an interactive terminal that can return to the start of a line."""
    isatty = getattr(stream, "isatty", None)
    if not (isatty and isatty()):
        return False
    return os.environ.get("TERM", "") != "dumb"


def _same_stream(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return bool(os.path.sameopenfile(a.fileno(), b.fileno()))
    except (AttributeError, OSError, ValueError):
        return False


def _handlers_of(logger: logging.Logger) -> list[logging.Handler]:
    """The handlers a record of ``logger`` reaches, following propagation."""
    found: list[logging.Handler] = []
    current: logging.Logger | None = logger
    while current is not None:
        found.extend(current.handlers)
        current = current.parent if current.propagate else None
    return found


class Progress:
    """Counts what finished and reports it."""

    def __init__(
        self,
        total: int,
        logger: logging.Logger,
        *,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        bar: bool | None = None,
        budget: tuple[int, float] | None = None,
        requests: Callable[[], int] | None = None,
    ) -> None:
        self.total = total
        #: The hourly and per-second request budgets, and how many requests went out so far:
        #: what the time left is worked out from, beside the pace.
        self.budget = budget
        self.requests = requests
        self.logger = logger
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.started = clock()
        self.finished = 0
        self.ok = 0
        self.failed = 0
        self.records = 0
        self.skipped = 0
        self._split_failed = False  # a piece of the partition being reported failed
        self.bar = wants_bar(self.stream) if bar is None else bar
        self._lock = threading.RLock()
        self._shown = 0  # characters of the bar now on the terminal's last line
        self._wrapped: list[tuple[logging.StreamHandler[Any], Any]] = []
        if self.bar:
            self._wrap_handlers()
            self._draw()

    # -- results -----------------------------------------------------------------------------

    def partition_finished(self, result: PartitionResult) -> None:
        """Log one partition's (or piece's) outcome and redraw the bar.

        A partition fetched in pieces counts once, when its last piece is reported: as failed
        when any piece failed.
        """
        with self._lock:
            if result.ok:
                self.records += result.records
                self.skipped += result.skipped
            elif result.status is not Status.FATAL:
                self._split_failed = True
            if result.last and result.status is not Status.FATAL:
                self.finished += 1
                if self._split_failed:
                    self.failed += 1
                else:
                    self.ok += 1
                self._split_failed = False
            elif result.last:
                self.finished += 1
                self._split_failed = False
        attempts = f"{result.attempts} attempt{'' if result.attempts == 1 else 's'}"
        where = str(result.planned.partition)
        if result.split:
            where += f" piece {result.part}"
        number = self.finished if result.last else self.finished + 1
        left = self.time_left() if number < self.total else None
        left_text = "" if left is None else f", {duration(left)} left"
        if result.ok:
            self.logger.info(
                "partition %d/%d %s: %d records in %.1fs ok (%s%s)",
                number,
                self.total,
                where,
                result.records,
                result.seconds,
                attempts,
                left_text,
            )
            if result.skipped:
                self.logger.warning(
                    "partition %s: %d event%s skipped, no record can hold %s: %s",
                    result.planned.partition,
                    result.skipped,
                    "" if result.skipped == 1 else "s",
                    "it" if result.skipped == 1 else "them",
                    "; ".join(result.skip_notes),
                )
        else:
            self.logger.error(
                "partition %d/%d %s: %s after %s in %.1fs: %s",
                number,
                self.total,
                where,
                "stopped the run" if result.status is Status.FATAL else "failed",
                attempts,
                result.seconds,
                result.error,
            )
        if not self._wrapped:  # otherwise the log line above already redrew the bar
            self._draw()

    def summary(self) -> str:
        """The run's closing line: records, partitions, duration, rate.

        On a terminal the bar's last state stays on screen as a line of its own.
        """
        seconds = max(self.clock() - self.started, 1e-9)
        owed = self.total - self.ok - self.failed
        text = (
            f"export finished: {self.records} records, {self.ok} partitions ok,"
            f" {self.failed} failed, {owed} not run, {seconds:.1f}s,"
            f" {self.records / seconds:.0f} records/s"
        )
        if self.skipped:
            text += f"; {self.skipped} event{'' if self.skipped == 1 else 's'} skipped (see above)"
        if self.bar:
            with self._lock:
                if self.total:
                    self._draw_locked()
                if self._shown:
                    self._write("\n")
                    self._shown = 0
                # Before unwrapping: setStream flushes the wrapper, which would redraw a bar.
                self.bar = False
                self._unwrap_handlers()
        return text

    # -- the bar -----------------------------------------------------------------------------

    def line(self) -> str:
        """The bar's text, without control characters."""
        seconds = max(self.clock() - self.started, 1e-9)
        filled = BAR_WIDTH * self.finished // max(self.total, 1)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        text = (
            f"[{bar}] {self.finished}/{self.total} partitions"
            f" {self.records} records {self.records / seconds:.0f}/s"
        )
        if self.failed:
            text += f" {self.failed} failed"
        left = self.time_left()
        if left is not None and self.finished < self.total:
            text += f" {duration(left)} left"
        return text

    def time_left(self) -> float | None:
        """Seconds left at the least: the longer of the pace so far and the hourly budget's floor.

        None without a budget to judge by.
        """
        if self.budget is None or self.requests is None:
            return None
        per_hour, per_second = self.budget
        return seconds_left(
            elapsed=self.clock() - self.started,
            finished=self.finished,
            total=self.total,
            requests_started=self.requests(),
            per_hour=per_hour,
            per_second=per_second,
        )

    def _columns(self) -> int:
        try:
            return os.get_terminal_size(self.stream.fileno()).columns or DEFAULT_COLUMNS
        except (AttributeError, OSError, ValueError):
            return DEFAULT_COLUMNS

    def _draw(self) -> None:
        if not (self.bar and self.total):
            return
        with self._lock:
            self._draw_locked()

    def _draw_locked(self) -> None:
        # One character short of the width: a full row would wrap, and "\r" only returns to
        # the start of the last row.
        text = self.line()[: max(self._columns() - 1, 1)]
        pad = " " * max(self._shown - len(text), 0)
        self._write("\r" + text + pad)
        self._shown = len(text)

    def _clear_locked(self) -> None:
        if self._shown:
            self._write("\r" + " " * self._shown + "\r")
            self._shown = 0

    def _write(self, text: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.stream.write(text)
            self.stream.flush()

    # -- log lines on the same terminal ------------------------------------------------------

    def _wrap_handlers(self) -> None:
        """Route each handler writing to this terminal through :class:`_BarAwareStream`."""
        for handler in _handlers_of(self.logger):
            if not isinstance(handler, logging.StreamHandler) or not _same_stream(
                handler.stream, self.stream
            ):
                continue
            original = handler.setStream(_BarAwareStream(handler.stream, self))
            if original is not None:
                self._wrapped.append((handler, original))

    def _unwrap_handlers(self) -> None:
        for handler, original in self._wrapped:
            handler.setStream(original)
        self._wrapped.clear()

    def _log_writing(self) -> None:
        self._clear_locked()

    def _log_written(self) -> None:
        if self.bar and self.total:
            self._draw_locked()


class _BarAwareStream:
    """A log handler's stream that clears the bar before a log line and redraws it after.

    ``logging.StreamHandler`` writes a record and then flushes, so the bar goes on flush.
    """

    def __init__(self, stream: Any, progress: Progress) -> None:
        self._stream = stream
        self._progress = progress

    def write(self, text: str) -> int:
        with self._progress._lock:
            self._progress._log_writing()
            written: int = self._stream.write(text)
            return written

    def flush(self) -> None:
        with self._progress._lock:
            self._stream.flush()
            self._progress._log_written()

    def fileno(self) -> int:
        fileno: int = self._stream.fileno()
        return fileno

    def isatty(self) -> bool:
        return bool(self._stream.isatty())

"""Progress of a run, as people read it: one line per finished partition and a summary.

On a terminal a bar is redrawn on stderr as partitions finish; elsewhere (Meltano, CI, a log
file) only plain log lines are written. It knows partition results, not HTTP.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import TextIO

from tap_mixpanel_parallel.runner import PartitionResult

BAR_WIDTH = 24


class Progress:
    """Counts what finished and reports it."""

    def __init__(
        self,
        total: int,
        logger: logging.Logger,
        *,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.logger = logger
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.started = clock()
        self.finished = 0
        self.ok = 0
        self.failed = 0
        self.records = 0
        isatty = getattr(self.stream, "isatty", None)
        self.bar = bool(isatty and isatty())

    def partition_finished(self, result: PartitionResult) -> None:
        """Log one partition's outcome and redraw the bar."""
        self.finished += 1
        if result.ok:
            self.ok += 1
            self.records += result.records
            self.logger.info(
                "partition %d/%d %s: %d records in %.1fs ok (%d attempt%s)",
                self.finished,
                self.total,
                result.planned.partition,
                result.records,
                result.seconds,
                result.attempts,
                "" if result.attempts == 1 else "s",
            )
        else:
            self.failed += 1
            self.logger.error(
                "partition %d/%d %s: failed after %d attempt%s in %.1fs: %s",
                self.finished,
                self.total,
                result.planned.partition,
                result.attempts,
                "" if result.attempts == 1 else "s",
                result.seconds,
                result.error,
            )
        self._draw()

    def summary(self) -> str:
        """The run's closing line: records, partitions, duration, rate."""
        seconds = max(self.clock() - self.started, 1e-9)
        owed = self.total - self.finished
        text = (
            f"export finished: {self.records} records, {self.ok} partitions ok,"
            f" {self.failed} failed, {owed} not run, {seconds:.1f}s,"
            f" {self.records / seconds:.0f} records/s"
        )
        if self.bar:
            self.stream.write("\n")
            self.stream.flush()
        return text

    def _draw(self) -> None:
        if not self.bar:
            return
        seconds = max(self.clock() - self.started, 1e-9)
        filled = BAR_WIDTH * self.finished // max(self.total, 1)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        self.stream.write(
            f"\r[{bar}] {self.finished}/{self.total} partitions"
            f" {self.records} records {self.records / seconds:.0f}/s"
            + (f" {self.failed} failed" if self.failed else "")
        )
        self.stream.flush()

"""Fetch planned partitions on a thread pool and hand them back complete, in plan order.

A worker writes a partition's records to its own spool file and reports the partition only
once the whole export response was read and every line parsed. A retry truncates the spool
and starts over. So a cut stream never reaches stdout, a retried partition is never emitted
twice, and memory stays bounded by the disk instead of by the size of a partition.

Results come back in plan order. That keeps the bookmark simple (it covers exactly what was
emitted) and makes a stop clean: everything after the first unfinished partition is owed
again, nothing before it is. A look-ahead window bounds how many partitions may be fetched
or spooled ahead of the one the main thread is waiting for, and a byte budget (see
:class:`~tap_mixpanel_parallel.run.spool.SpoolBudget`) bounds how much disk they take.

Workers only fetch, parse and write their spool files; the main thread alone writes Singer
messages and touches state.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NamedTuple

from tap_mixpanel_parallel.export.partitions import PlannedPartition
from tap_mixpanel_parallel.export.plan import (
    SPLIT,
    Pieces,
    after_failure,
    can_split,
    too_large_days,
)
from tap_mixpanel_parallel.http.errors import ExportError, RateLimited
from tap_mixpanel_parallel.http.limiter import (
    RETRY_AFTER_CAP_SECONDS,
    RateLimiter,
    StopRequested,
    Throttle,
)
from tap_mixpanel_parallel.http.retry import SplitInstead, with_retries
from tap_mixpanel_parallel.run.dates import Partition
from tap_mixpanel_parallel.run.pool import InOrder, RunLoop, WorkerPool
from tap_mixpanel_parallel.run.spool import SpoolBudget, SpoolDir, open_spool, remove_stale
from tap_mixpanel_parallel.run.status import MAX_THROTTLE_STREAK, Status


class Spooled(NamedTuple):
    """What one complete attempt put in its spool file."""

    records: int
    #: Events left out because no record can carry them (a ``time`` no date can hold).
    skipped: int = 0
    #: Why, for the first few of them: line numbers and reasons, never event content.
    skip_notes: tuple[str, ...] = ()


#: Fetch one attempt of a partition (or of a piece of a split one) into the open spool file.
Attempt = Callable[[PlannedPartition, IO[bytes], threading.Event], Spooled]


@dataclass
class PartitionResult:
    """How one planned partition, or one piece of it, ended.

    A partition Mixpanel cut was fetched again in pieces: it comes back as one result per
    piece, in date order, the last one marked :attr:`last`.
    """

    index: int
    planned: PlannedPartition
    status: Status
    records: int = 0
    attempts: int = 0
    seconds: float = 0.0
    error: str = ""
    spool: Path | None = None
    skipped: int = 0
    skip_notes: tuple[str, ...] = ()
    #: The range this result covers: the planned partition, or a piece of it after a split.
    piece: Partition | None = None
    #: False for every piece of a split partition but its last.
    last: bool = True

    def __post_init__(self) -> None:
        if self.piece is None:
            self.piece = self.planned.partition

    @property
    def part(self) -> Partition:
        """The range this result covers."""
        assert self.piece is not None
        return self.piece

    @property
    def split(self) -> bool:
        """True when the partition was fetched in pieces."""
        return self.part != self.planned.partition

    @property
    def ok(self) -> bool:
        """True when the spool holds the whole partition."""
        return self.status is Status.OK


class PartitionRunner:
    """Runs partitions concurrently under one shared rate limiter."""

    def __init__(
        self,
        *,
        attempt: Attempt,
        limiter: RateLimiter,
        max_workers: int,
        max_retries: int,
        logger: logging.Logger,
        backoff_factor: float = 1.0,
        max_spool_bytes: int | None = None,
        spool_parent: str | None = None,
        loop: RunLoop | None = None,
    ) -> None:
        self._attempt = attempt
        self._limiter = limiter
        self._max_workers = max_workers
        self._max_retries = max_retries
        self._logger = logger
        self._backoff_factor = backoff_factor
        self._spool_parent = spool_parent
        self._loop = loop if loop is not None else RunLoop()
        self.budget = SpoolBudget(
            max_spool_bytes,
            on_full=lambda: logger.info(
                "spool files reached max_spool_mb (%d MiB): fetching ahead waits until"
                " finished partitions are written out",
                (max_spool_bytes or 0) >> 20,
            ),
        )
        self.spool_dir: SpoolDir | None = None
        #: Why the run could not start at all (no spool directory), for the exit message.
        self.fatal: str | None = None
        self.stop_event = threading.Event()
        self.fatal_event = threading.Event()
        #: Set when Mixpanel kept answering 429: no new partition is started.
        self.throttled_out = threading.Event()
        self.interrupted = False
        #: Sizes in days of the ranges Mixpanel cut and served in this run, for splitting up
        #: front the sizes it mostly cuts.
        self._cut: list[int] = []
        self._served: list[int] = []
        self._sizes = threading.Lock()
        self._announced: int | None = None
        self._pool: WorkerPool | None = None
        self._units: InOrder[PlannedPartition, list[PartitionResult]] | None = None

    def stop(self) -> None:
        """Start no more partitions and abandon the ones in flight (safe from a signal)."""
        self.interrupted = True
        self.stop_event.set()

    def run(self, planned: Sequence[PlannedPartition]) -> Iterator[PartitionResult]:
        """Yield one result per partition (one per piece of a split one) in plan order, until
        all are done or a stop.

        After a stop or a fatal error it yields nothing more: what follows the last yielded
        result is owed to the next run.
        """
        self.start(planned)
        return self.results()

    def start(self, planned: Sequence[PlannedPartition], *, ahead: bool = False) -> None:
        """Start fetching.

        With ``ahead``, until :meth:`results` is first asked the plan is fetched as far ahead
        as the spool byte bound allows (not only the look-ahead window), so the stream loses no
        time while the main thread writes out another stream.
        """
        swept = remove_stale(self._spool_parent)
        if swept.directories:
            self._logger.info(
                "removed %d spool folder%s (%.1f MiB) left by runs that were killed",
                swept.directories,
                "" if swept.directories == 1 else "s",
                swept.bytes / (1 << 20),
            )
        try:
            spool_dir = self.spool_dir = SpoolDir(self._spool_parent)
        except OSError as exc:
            self.fatal = (
                f"cannot create a spool folder in the temporary directory ({exc.strerror});"
                " free space there or point TMPDIR elsewhere"
            )
            return
        self._pool = WorkerPool(self._max_workers, self._loop.wake)
        budget = self.budget

        def run_one(index: int, planned: PlannedPartition) -> list[PartitionResult]:
            return self._run_one(index, planned, _spool_path(spool_dir, index))

        def may_start(in_flight: bool) -> bool:
            # Past a full spool one partition still starts while the main thread takes results
            # (it is the head, or soon will be); a stream waiting its turn starts none, so no
            # request stalls mid-body while another stream is written out.
            waiting = self._units is not None and not self._units.bounded
            return not self._halted() and not ((in_flight or waiting) and budget.full())

        self._units = InOrder(
            planned, run_one, self._pool, window=2 * self._max_workers, may_start=may_start
        )
        self._units.bounded = not ahead
        self._loop.add(self)
        self.pump()

    def pump(self) -> None:
        """Take in finished partitions and start more (main thread)."""
        units = self._units
        if units is None or self.stop_event.is_set():
            return
        units.pump()
        self.budget.set_head(units.head)

    def results(self) -> Iterator[PartitionResult]:
        """The started plan's results, in plan order (main thread)."""
        units = self._units
        if units is None or self.spool_dir is None:
            return
        spool_dir = self.spool_dir
        units.bounded = True
        budget = self.budget
        try:
            while True:
                self._loop.wait_for(
                    lambda: self.stop_event.is_set() or bool(units.ready) or units.finished
                )
                if self.stop_event.is_set() or not units.ready:
                    # A stop hands over nothing more, even partitions already spooled: writing
                    # them out could take as long as the run itself.
                    break
                head, future = units.take()
                results = future.result()
                if results[-1].status is Status.STOPPED:
                    break
                for result in results:
                    yield result
                    if result.spool is not None:
                        result.spool.unlink(missing_ok=True)
                # A failed partition's spool too: what it holds will never be emitted.
                _spool_path(spool_dir, head).unlink(missing_ok=True)
                budget.release(head)
                if results[-1].status is Status.FATAL:
                    break
        finally:
            self.close()

    def close(self) -> None:
        """Stop, drop the spool folder; never waits for a worker stuck in a stalled read: it
        checks the stop event between chunks, and the caller decides how long a stop may take."""
        self.stop_event.set()
        if self._pool is not None:
            self._pool.close()
        if self.spool_dir is not None:
            self.spool_dir.remove()
        self._loop.remove(self)

    def _halted(self) -> bool:
        return self.stop_event.is_set() or self.fatal_event.is_set() or self.throttled_out.is_set()

    def _run_one(self, index: int, planned: PlannedPartition, spool: Path) -> list[PartitionResult]:
        """Fetch a partition; when Mixpanel cuts it, fetch it again in halves, down to days.

        The pieces are fetched one after the other, in date order, each into a spool file of
        its own; every piece ends exported or failed at the size that failed, unless the run
        stops or meets a fatal error, which ends the list.
        """
        pieces = Pieces.of(planned.partition)
        results: list[PartitionResult] = []
        while (piece := pieces.next) is not None:
            if self._mostly_cut(piece):
                pieces = pieces.split()
                continue
            path = spool if not results else spool.with_name(f"{spool.stem}-{len(results)}.jsonl")
            result = self._fetch(index, planned, piece, path, first=not results)
            with self._sizes:
                if result is None:
                    self._cut.append(piece.days)
                elif result.ok:
                    self._served.append(piece.days)
            if result is None:
                self._logger.warning(
                    "partition %s: Mixpanel did not serve %s whole; fetching it in halves",
                    planned.partition,
                    piece,
                )
                pieces = pieces.split()
                continue
            results.append(result)
            if result.status in (Status.FATAL, Status.STOPPED):
                break
            pieces = pieces.settled()
        results[-1].last = True
        for result in results[:-1]:
            result.last = False
        return results

    def _mostly_cut(self, piece: Partition) -> bool:
        """True when ranges as long as ``piece`` were mostly cut in this run: split it unasked."""
        if not can_split(piece):
            return False
        with self._sizes:
            ceiling = too_large_days(self._cut, self._served)
            if ceiling is None or piece.days < ceiling:
                return False
            announce = self._announced is None or ceiling < self._announced
            if announce:
                self._announced = ceiling
        if announce:
            self._logger.info(
                "Mixpanel cut most ranges of %d days or more so far: such ranges are fetched"
                " in halves from the start",
                ceiling,
            )
        return True

    def _fetch(
        self, index: int, planned: PlannedPartition, piece: Partition, spool: Path, *, first: bool
    ) -> PartitionResult | None:
        """One range with retries; None when it should be fetched in halves instead."""
        started = time.monotonic()
        attempts = 0  # requests made, 429s included (what the state and the log report)

        def result(
            status: Status, error: str = "", spooled: Spooled | None = None
        ) -> PartitionResult:
            return PartitionResult(
                index=index,
                planned=planned,
                status=status,
                records=spooled.records if spooled else 0,
                attempts=attempts,
                seconds=time.monotonic() - started,
                error=error,
                spool=spool if status is Status.OK else None,
                skipped=spooled.skipped if spooled else 0,
                skip_notes=spooled.skip_notes if spooled else (),
                piece=piece,
            )

        def discard() -> None:
            # The first piece's spool is truncated by the next open; a later piece gives back
            # only its own bytes, the earlier pieces' stay spooled.
            if first:
                spool.unlink(missing_ok=True)
                self.budget.release(index)
            elif spool.exists():
                self.budget.release(index, spool.stat().st_size)
                spool.unlink(missing_ok=True)

        def attempt() -> Spooled:
            nonlocal attempts
            attempts += 1
            try:
                with open_spool(spool, self.budget, index, self.stop_event, fresh=first) as sink:
                    return self._attempt(
                        PlannedPartition(piece, planned.retry_of_failed), sink, self.stop_event
                    )
            except ExportError as exc:
                if not exc.retryable or not first:
                    # Free the disk now: a full disk is the usual reason, and the spool of a
                    # piece that will not be emitted is of no use.
                    discard()
                raise

        def on_retry(number: int, exc: ExportError, delay: float) -> None:
            self._logger.warning(
                "partition %s: attempt %d failed (%s); retrying in %.1fs",
                piece,
                number,
                exc.message,
                delay,
            )

        def split(exc: ExportError, failures: int) -> bool:
            # A range Mixpanel cut once it will most likely cut again.
            step = after_failure(
                piece,
                failures,
                self._max_retries,
                retryable=exc.retryable,
                splittable=exc.splittable,
            )
            return step == SPLIT

        try:
            spooled = with_retries(
                attempt,
                limiter=self._limiter,
                stop=self.stop_event,
                max_retries=self._max_retries,
                on_retry=on_retry,
                on_throttle=lambda exc, throttle: self._throttled(planned, exc, throttle),
                backoff_factor=self._backoff_factor,
                halted=self._halted,
                split=split,
            )
        except StopRequested:
            return result(Status.STOPPED)
        except SplitInstead:
            discard()
            return None
        except RateLimited as exc:
            # Out of patience with 429s: the run starts no more partitions.
            self.throttled_out.set()
            return result(
                Status.FAILED,
                f"gave up after {MAX_THROTTLE_STREAK} pauses for 429s in a row without one"
                f" successful request (the run starts no more partitions); {exc.message}",
            )
        except ExportError as exc:
            if exc.fatal:
                self.fatal_event.set()
                return result(Status.FATAL, exc.message)
            return result(Status.FAILED, exc.message)
        return result(Status.OK, spooled=spooled)

    def _throttled(self, planned: PlannedPartition, exc: RateLimited, throttle: Throttle) -> None:
        """Say that every worker waits for a 429.

        Over budget means every worker is: all of them wait, and fewer go at once afterwards.
        """
        if exc.retry_after is None:
            why = "no Retry-After"
        elif throttle.capped_from is not None:
            why = (
                f"Retry-After {_seconds(throttle.capped_from)},"
                f" capped at {_seconds(RETRY_AFTER_CAP_SECONDS)}"
            )
        else:
            why = f"Retry-After {_seconds(exc.retry_after)}"
        self._logger.warning(
            "partition %s: Mixpanel throttled the run (HTTP 429, %s): every worker waits %s"
            " (pause %d of at most %d in a row; 429s do not count against max_retries)",
            planned.partition,
            why,
            _seconds(throttle.seconds),
            throttle.streak,
            MAX_THROTTLE_STREAK,
        )


def _seconds(value: float) -> str:
    """Whole seconds in a log line, a tenth below ten (short test waits stay readable)."""
    return f"{value:.0f}s" if value >= 10 else f"{value:.1f}s"


def _spool_path(spool_dir: SpoolDir, index: int) -> Path:
    return spool_dir.path / f"{index:06d}.jsonl"

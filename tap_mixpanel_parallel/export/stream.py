"""The ``events`` stream: plans the run, drives the runner, emits records and state.

Everything here runs on the main thread: it is the export's only writer of Singer messages and
of the SDK's state.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from singer_sdk import Tap
from singer_sdk import typing as th

from tap_mixpanel_parallel.compat import override
from tap_mixpanel_parallel.export.batch import BatchFiles, batch_error
from tap_mixpanel_parallel.export.partitions import PlannedPartition, plan_partitions
from tap_mixpanel_parallel.export.records import STREAM_NAME, RecordEncoder, decode_record
from tap_mixpanel_parallel.export.runner import PartitionResult, PartitionRunner
from tap_mixpanel_parallel.export.state import (
    ExportState,
    FailedPartition,
    bookmark_in_future,
    dump_state,
    load_state,
    settle_done,
    settle_failed,
)
from tap_mixpanel_parallel.export.worker import ExportWorkers
from tap_mixpanel_parallel.http.limiter import RateLimiter
from tap_mixpanel_parallel.output import STDOUT, StopWriting
from tap_mixpanel_parallel.progress import Progress
from tap_mixpanel_parallel.run.pool import RunLoop
from tap_mixpanel_parallel.run.status import Status
from tap_mixpanel_parallel.sdk_seams import (
    write_batch_message,
)
from tap_mixpanel_parallel.settings import Settings, today_in
from tap_mixpanel_parallel.stream_base import SpooledStream

if TYPE_CHECKING:
    from collections.abc import Iterator

    from singer_sdk.helpers.types import Context


@dataclass
class RunOutcome:
    """What the tap must tell the user (and its exit code) once the sync is over."""

    failed: list[FailedPartition] = field(default_factory=list)
    fatal: str | None = None
    #: Planned partitions neither exported nor saved as failed (a stop, a fatal error).
    unsettled: int = 0
    summary: str = ""


class _Started(NamedTuple):
    """What :meth:`EventsStream.start` planned and opened, for the write-out."""

    plan: list[PlannedPartition]
    state: ExportState
    today: dt.date
    fast: bool
    batches: BatchFiles | None
    workers: ExportWorkers
    progress: Progress


class EventsStream(SpooledStream):
    """Mixpanel raw events, one record per event."""

    name = STREAM_NAME
    primary_keys = ("event", "distinct_id", "time", "insert_id")
    replication_key = "time"
    is_sorted = False

    schema = th.PropertiesList(
        th.Property("event", th.StringType, required=True, description="Event name"),
        th.Property(
            "time",
            th.DateTimeType,
            required=True,
            description="When the event happened, RFC 3339 in UTC",
        ),
        th.Property("distinct_id", th.StringType, description="Mixpanel distinct_id"),
        th.Property(
            "device_id",
            th.StringType,
            description="$device_id (null when absent), as Mixpanel's warehouse export has it",
        ),
        th.Property(
            "user_id",
            th.StringType,
            description="$user_id (null when absent), as Mixpanel's warehouse export has it",
        ),
        th.Property("insert_id", th.StringType, description="Mixpanel $insert_id"),
        th.Property(
            "properties",
            th.ObjectType(additional_properties=True),
            description="The event's whole properties object, unchanged",
        ),
    ).to_dict()

    def __init__(self, tap: Tap, settings: Callable[[], Settings], loop: RunLoop) -> None:
        super().__init__(tap, settings)
        self._loop = loop
        self.runner: PartitionRunner | None = None
        self.outcome = RunOutcome()
        self._started: _Started | None = None

    @override
    def start(self, *, ahead: bool = False) -> None:
        """Plan the run and start the workers; :meth:`get_records` writes out what they fetch."""
        settings = self.settings
        zone = settings.project_timezone
        today = today_in(zone)
        state = load_state(self.given_state)
        given = self.given_state.get("failed_partitions") or []
        if len(state.failed) < len(given):
            self.logger.warning(
                "state failed_partitions has overlapping ranges (edited by hand?): merged into"
                " %s, so no day is fetched twice",
                ", ".join(str(p) for p in state.failed_partitions),
            )
        if (latest := bookmark_in_future(state, today)) is not None:
            self.logger.warning(
                "state bookmark %s is after yesterday (%s in %s), which no run writes: reading"
                " it as %s, so today and the lookback are exported as usual",
                state.bookmark,
                latest,
                zone.key,
                latest,
            )
            state = replace(state, bookmark=latest)
        if settings.end_date is not None and settings.end_date > today:
            self.logger.warning(
                "end_date %s is after today (%s in %s): exporting up to today",
                settings.end_date,
                today,
                zone.key,
            )
        plan = plan_partitions(
            start_date=settings.start_date,
            end_date=settings.end_for(today),
            partition_days=settings.partition_days,
            lookback_days=settings.lookback_days,
            bookmark=state.bookmark,
            failed=state.failed_partitions,
        )
        fast = self.uses_fast_path()
        batches = self._batch_files(fast)
        encoder = RecordEncoder(
            time_in_ms=settings.time_in_ms,
            zone=None if zone.key == "UTC" else zone,
            as_messages=fast and batches is None,
            sanitize=settings.sanitize_text,
        )
        progress = Progress(len(plan), self.logger)
        self.logger.info(
            "exporting %d partition%s (%d retried from state) with up to %d workers",
            len(plan),
            "" if len(plan) == 1 else "s",
            sum(p.retry_of_failed for p in plan),
            settings.max_workers,
        )
        workers = ExportWorkers(settings, self._owner.name)
        limiter = RateLimiter(
            max_concurrent=settings.max_workers,
            per_second=settings.max_requests_per_second,
            per_hour=settings.max_requests_per_hour,
            on_wait=lambda seconds, why: self.logger.info(
                "rate limit (%s): waiting %.0fs before the next request", why, seconds
            ),
            bare_429_seconds=settings.rate_limit_wait,
        )
        self.runner = PartitionRunner(
            attempt=workers.attempt_with(encoder),
            limiter=limiter,
            max_workers=settings.max_workers,
            max_retries=settings.max_retries,
            logger=self.logger,
            max_spool_bytes=settings.max_spool_mb << 20,
            loop=self._loop,
        )
        self.runner.start(plan, ahead=ahead)
        self.outcome.unsettled = len(plan)
        self._started = _Started(plan, state, today, fast, batches, workers, progress)

    @override
    def get_records(self, context: Context | None) -> Iterable[dict[str, Any]]:
        """Write out the plan's partitions in order; in the fast path records are written here
        and nothing is yielded."""
        if self._started is None:
            self.start()
        assert self._started is not None
        assert self.runner is not None
        plan, state, today, fast, batches, workers, progress = self._started
        settled = 0
        try:
            for result in self.runner.results():
                # Only a complete partition comes with a spool.
                if result.spool is not None and batches is not None:
                    error = self._emit_batch(batches, result)
                    if error is not None:
                        result = replace(result, status=Status.FAILED, records=0, error=error)
                elif result.spool is not None and fast:
                    try:
                        STDOUT.copy_file(result.spool)
                    except StopWriting:
                        self.logger.warning(
                            "stopped while writing partition %s: the records sent so far have"
                            " no STATE, so the next run sends them again (a target that"
                            " upserts on the key properties keeps each event once)",
                            result.planned.partition,
                        )
                        raise
                    self.count_copied(result.records)
                elif result.spool is not None:
                    yield from _read_spool(result.spool)
                state = self._settle(state, result, today)
                settled += result.status is not Status.FATAL
                progress.partition_finished(result)
        finally:
            self.outcome.unsettled = len(plan) - settled
            if self.runner.fatal is not None:
                self.outcome.fatal = self.runner.fatal
            workers.close()
            if batches is not None:
                batches.close()
            self.outcome.failed = list(state.failed)
            self.outcome.summary = progress.summary()

    def _batch_files(self, fast: bool) -> BatchFiles | None:
        """This run's BATCH folder when ``batch_messages`` is on and records can skip the SDK."""
        settings = self.settings
        if not settings.batch_messages:
            return None
        if not fast:
            self.logger.warning(
                "batch_messages is on, but stream maps, flattening, a deselected field or a"
                " record limit need the SDK's record path: sending RECORD messages"
            )
            return None
        batches = BatchFiles(settings.batch_dir, max_records=settings.batch_max_records)
        swept = batches.open()
        self.logger.info(
            "BATCH files go to %s (%d earlier run folder%s removed, %.1f MiB freed)",
            batches.folder,
            swept.directories,
            "" if swept.directories == 1 else "s",
            swept.bytes / (1 << 20),
        )
        return batches

    def _emit_batch(self, batches: BatchFiles, result: PartitionResult) -> str | None:
        """One BATCH message for a finished partition; its STATE follows in :meth:`_settle`.

        When its files cannot be written (a full disk, a folder made read-only) no message is
        sent and the partition fails, as when its spool file cannot be written: the error
        says why, and the next run owes it.
        """
        assert result.spool is not None
        partition = result.planned.partition
        name = f"{result.index:05d}-events-{partition.from_date}-{partition.to_date}"
        try:
            files = batches.write(result.spool, name)
        except OSError as exc:
            return batch_error(exc, batches.root)
        if files:
            write_batch_message(self, [path.as_uri() for path in files])
        self.count_copied(result.records)
        return None

    def _settle(self, state: ExportState, result: PartitionResult, today: dt.date) -> ExportState:
        if result.status is Status.FATAL:
            self.outcome.fatal = result.error
            return state
        if result.ok:
            state = settle_done(state, result.planned, today)
        else:
            state = settle_failed(state, result.planned, result.error, result.attempts, today)
        self.publish_state(dump_state(state))
        return state


def _read_spool(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as fh:
        for line in fh:
            yield decode_record(line)

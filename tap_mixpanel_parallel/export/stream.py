"""The ``events`` stream: plans the run, drives the runner, emits records and state.

Everything here runs on the main thread: it is the export's only writer of Singer messages and
of the SDK's state.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from singer_sdk import Tap
from singer_sdk import typing as th

from tap_mixpanel_parallel.compat import override
from tap_mixpanel_parallel.export.partitions import PlannedPartition
from tap_mixpanel_parallel.export.plan import plan_run
from tap_mixpanel_parallel.export.records import STREAM_NAME, RecordEncoder
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
from tap_mixpanel_parallel.run.batch import BatchFiles, batch_error
from tap_mixpanel_parallel.run.pool import RunLoop
from tap_mixpanel_parallel.run.status import Status
from tap_mixpanel_parallel.run.text import decode_record
from tap_mixpanel_parallel.settings import Settings, today_in
from tap_mixpanel_parallel.stream_base import SpooledStream, Unit

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

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
    batching: bool
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

    batches = True

    def __init__(
        self,
        tap: Tap,
        settings: Callable[[], Settings],
        batch_files: Callable[[], BatchFiles] | None,
        loop: RunLoop,
    ) -> None:
        super().__init__(tap, settings, batch_files)
        self._loop = loop
        self.runner: PartitionRunner | None = None
        self.outcome = RunOutcome()
        self._started: _Started | None = None

    @override
    def start(self, *, ahead: bool = False) -> None:
        """Plan the run and start the workers; :meth:`units` writes out what they fetch."""
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
        plan = self.plan(state, today)
        fast = self.uses_fast_path()
        batching = self.sends_batches()
        encoder = RecordEncoder(
            time_in_ms=settings.time_in_ms,
            zone=None if zone.key == "UTC" else zone,
            as_messages=fast and not batching,
            sanitize=settings.sanitize_text,
        )
        limiter = RateLimiter(
            max_concurrent=settings.max_workers,
            per_second=settings.max_requests_per_second,
            per_hour=settings.max_requests_per_hour,
            on_wait=lambda seconds, why: self.logger.info(
                "rate limit (%s): waiting %.0fs before the next request", why, seconds
            ),
            bare_429_seconds=settings.rate_limit_wait,
        )
        progress = Progress(
            len(plan),
            self.logger,
            budget=(settings.max_requests_per_hour, settings.max_requests_per_second),
            requests=lambda: limiter.started,
        )
        self.logger.info(
            "exporting %d partition%s (%d retried from state) with up to %d workers",
            len(plan),
            "" if len(plan) == 1 else "s",
            sum(p.retry_of_failed for p in plan),
            settings.max_workers,
        )
        workers = ExportWorkers(settings, self._owner.name)
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
        self._started = _Started(plan, state, today, fast, batching, workers, progress)

    @override
    def units(self, context: Context | None) -> Iterable[Unit]:
        """Write out the plan's partitions in order; in the fast path records are written here
        and nothing is yielded.

        On the BATCH route each complete partition is yielded as a manifest, and its STATE is
        written once the SDK wrote the BATCH message and asked for the next one.
        """
        if self._started is None:
            self.start()
        assert self._started is not None
        assert self.runner is not None
        plan, state, today, fast, batching, workers, progress = self._started
        batches = self.batch_out
        assert batching == (batches is not None), "the workers encoded for the other route"
        settled = 0
        try:
            for result in self.runner.results():
                # Only a complete partition comes with a spool.
                if result.spool is not None and batches is not None:
                    # Files that cannot be written (a full disk, a read-only folder, a
                    # storage gone) fail the partition: no message names them, the next run
                    # owes it, as when its spool file cannot be written.
                    partition = result.part
                    name = f"{partition.from_date}-{partition.to_date}"
                    try:
                        manifest = self.write_batch([result.spool], result.records, name)
                    except OSError as exc:
                        error = batch_error(exc, batches.target)
                        result = replace(result, status=Status.FAILED, records=0, error=error)
                    else:
                        if manifest is not None:
                            yield manifest
                elif result.spool is not None and fast:
                    try:
                        STDOUT.copy_file(result.spool)
                    except StopWriting:
                        self.logger.warning(
                            "stopped while writing partition %s: the records sent so far have"
                            " no STATE, so the next run sends them again (a target that"
                            " upserts on the key properties keeps each event once)",
                            result.part,
                        )
                        raise
                    self.count_copied(result.records)
                elif result.spool is not None:
                    yield from _read_spool(result.spool)
                state = self._settle(state, result, today)
                settled += result.last and result.status is not Status.FATAL
                progress.partition_finished(result)
        finally:
            self.outcome.unsettled = len(plan) - settled
            if self.runner.fatal is not None:
                self.outcome.fatal = self.runner.fatal
            workers.close()
            self.outcome.failed = list(state.failed)
            self.outcome.summary = progress.summary()

    def plan(self, state: ExportState, today: dt.date) -> list[PlannedPartition]:
        """What this run owes, in the sizes ``partition_mode`` asks for."""
        settings = self.settings
        return plan_run(
            mode=settings.partition_mode,
            start_date=settings.start_date,
            end_date=settings.end_for(today),
            partition_days=settings.partition_days,
            lookback_days=settings.lookback_days,
            bookmark=state.bookmark,
            failed=state.failed_partitions,
            per_hour=settings.max_requests_per_hour,
            max_workers=settings.max_workers,
        )

    def planned(self) -> list[PlannedPartition]:
        """The plan the next sync will run, from the incoming state (for the cost logged first)."""
        today = today_in(self.settings.project_timezone)
        state = load_state(self.given_state)
        if (latest := bookmark_in_future(state, today)) is not None:
            state = replace(state, bookmark=latest)
        return self.plan(state, today)

    def _settle(self, state: ExportState, result: PartitionResult, today: dt.date) -> ExportState:
        if result.status is Status.FATAL:
            self.outcome.fatal = result.error
            return state
        if result.ok:
            state = settle_done(state, result.planned, today, result.part)
        else:
            state = settle_failed(
                state, result.planned, result.error, result.attempts, today, result.part
            )
        self.publish_state(dump_state(state))
        return state


def _read_spool(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as fh:
        for line in fh:
            yield decode_record(line)

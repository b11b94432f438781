"""``engage`` (people profiles) and ``cohort_members``: engage queries paged in parallel.

Main thread: plans the queries, drives :class:`QueryRunner`, emits whole queries and STATE.
The fetch function handed to the runner runs on workers.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterable
from typing import IO, TYPE_CHECKING, Any

import msgspec
from singer_sdk import typing as th

from tap_mixpanel_parallel.compat import override
from tap_mixpanel_parallel.http.errors import PartitionRejected, StreamCut
from tap_mixpanel_parallel.query.base import QueryStream
from tap_mixpanel_parallel.query.client import fetch_body, query_url
from tap_mixpanel_parallel.query.lists import list_cohorts
from tap_mixpanel_parallel.query.records import PageMalformed, PageWritten, ProfileEncoder
from tap_mixpanel_parallel.query.runner import FetchPage, QueryJob, QueryRunner
from tap_mixpanel_parallel.query.state import (
    dump_bookmark,
    engage_where,
    format_last_seen,
    later,
    load_bookmark,
)
from tap_mixpanel_parallel.run.status import Status

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tap_mixpanel_parallel.query.api import QueryApi


def engage_fetch(api: QueryApi) -> FetchPage:
    """One attempt at one engage page, as a worker runs it."""
    settings = api.settings
    url = query_url(settings, "engage")

    def fetch(
        job: QueryJob, page: int, session_id: str | None, sink: IO[bytes], stop: threading.Event
    ) -> PageWritten:
        form = dict(job.form)
        form["page_size"] = str(job.page_size)
        if page:
            form["page"] = str(page)
            form["session_id"] = session_id or ""
        body = fetch_body(api.sessions.get(), settings, url, stop, form=form, in_session=page > 0)
        stamp = dt.datetime.now(dt.timezone.utc).isoformat()
        try:
            return job.encoder.write_page(body, sink, stamp)
        except msgspec.DecodeError:
            msg = f"page {page} is not whole JSON (cut body)"
            raise StreamCut(msg) from None
        except (msgspec.ValidationError, PageMalformed) as exc:
            msg = f"page {page} is not an engage answer ({exc})"
            raise PartitionRejected(msg) from None

    return fetch


class _EngageQueries(QueryStream):
    """Runs engage queries and emits each one whole, in order."""

    _runner: QueryRunner | None = None
    _jobs: list[QueryJob] | None = None

    def plan_jobs(self) -> tuple[list[QueryJob], int] | None:
        """The queries and how many may run at once; None when the stream cannot start."""
        raise NotImplementedError

    @override
    def start(self, *, ahead: bool = False) -> None:
        """Plan the queries and start their first pages (the window bounds queries, not
        pages, so ``ahead`` changes nothing here)."""
        if self._jobs is not None:
            return
        planned = self.plan_jobs()
        self._jobs = [] if planned is None else planned[0]
        if planned is None:
            return
        settings = self.settings
        self._runner = QueryRunner(
            fetch=engage_fetch(self.api),
            limiter=self.api.limiter,
            max_workers=settings.query_max_workers,
            max_retries=settings.max_retries,
            charge_pages=settings.query_pages_count_against_hourly_budget,
            logger=self.logger,
            loop=self.api.loop,
        )
        self._runner.start(*planned)

    def run_jobs(self) -> Iterator[QueryJob]:
        """Yield finished jobs; the ok ones' spool files are there until the next one."""
        self.start()
        runner = self._runner
        if runner is None:
            return
        for job in runner.results():
            if job.status is Status.FATAL:
                self.outcome.fatal = job.error
                return
            yield job
        if runner.fatal is not None:
            self.outcome.fatal = runner.fatal

    def log_job(self, job: QueryJob) -> None:
        """One line per finished query."""
        if job.status is Status.OK:
            self.logger.info(
                "%s: %d records in %d page%s, %.1fs (%d requests, %d session restart%s)",
                job.label,
                job.records,
                job.known_pages,
                "" if job.known_pages == 1 else "s",
                job.seconds,
                job.attempts,
                job.restarts,
                "" if job.restarts == 1 else "s",
            )
        else:
            self.logger.error("%s failed after %.1fs: %s", job.label, job.seconds, job.error)


class EngageStream(_EngageQueries):
    """People profiles, incremental on ``$last_seen``."""

    name = "engage"
    primary_keys = ("distinct_id",)
    replication_key = "last_seen"
    is_sorted = False

    schema = th.PropertiesList(
        th.Property("distinct_id", th.StringType, required=True, description="$distinct_id"),
        th.Property(
            "last_seen",
            th.DateTimeType,
            description="$last_seen (when the profile was last updated), RFC 3339 in UTC",
        ),
        th.Property(
            "properties",
            th.ObjectType(additional_properties=True),
            description="The profile's whole $properties object, unchanged",
        ),
    ).to_dict()

    @override
    def plan_jobs(self) -> tuple[list[QueryJob], int] | None:
        """One query: every profile, or those seen since the bookmark less the look-back."""
        settings = self.settings
        bookmark = load_bookmark(self.given_state, self.name)
        where = engage_where(
            bookmark, settings.lookback_days, full_refresh=settings.engage_full_refresh
        )
        if where is None:
            self.logger.info(
                "engage: reading every profile (%s)",
                "engage_full_refresh"
                if settings.engage_full_refresh and bookmark
                else "no bookmark",
            )
        else:
            self.logger.info("engage: reading profiles where %s", where)
        fast = self.uses_fast_path()
        job = QueryJob(
            index=0,
            label="engage",
            form={} if where is None else {"where": where},
            encoder=ProfileEncoder(self.name, as_messages=fast, sanitize=settings.sanitize_text),
            page_size=settings.engage_page_size,
        )
        return [job], 1

    @override
    def read(self) -> Iterable[dict[str, Any]]:
        """The engage query; its records are emitted once all its pages are on disk."""
        bookmark = load_bookmark(self.stream_state, self.name)
        fast = self.uses_fast_path()
        for done in self.run_jobs():
            self.log_job(done)
            if done.status is not Status.OK:
                self.outcome.failed = f"engage: {done.error}"
                return
            yield from self.emit_spool(done.page_paths(), done.records, fast)
            newest = later(bookmark, done.newest)
            if newest is not None:
                self.publish_state(dump_bookmark(newest, self.replication_key))
            self.outcome.summary = (
                f"engage finished: {done.records} profiles, bookmark"
                f" {format_last_seen(newest) if newest else 'none'}"
            )


class CohortMembersStream(_EngageQueries):
    """Which profiles are in which cohort: one engage query per cohort, side by side."""

    name = "cohort_members"
    primary_keys = ("cohort_id", "distinct_id")
    replication_key = None
    selected_by_default = False  # one query per cohort, against 60 an hour

    schema = th.PropertiesList(
        th.Property("cohort_id", th.IntegerType, required=True, description="The cohort's id"),
        th.Property(
            "distinct_id", th.StringType, required=True, description="$distinct_id of a member"
        ),
        th.Property(
            "data_group_id",
            th.StringType,
            description="A group cohort's data group (its members are group keys); absent for"
            " user cohorts",
        ),
    ).to_dict()

    @override
    def plan_jobs(self) -> tuple[list[QueryJob], int] | None:
        """One query per cohort, as many at once as the Query API allows."""
        cohorts = list_cohorts(self.api, self.outcome)
        if cohorts is None:
            return None
        fast = self.uses_fast_path()
        settings = self.settings
        jobs = [
            QueryJob(
                index=number,
                label=f"cohort_members: cohort {cohort['id']}",
                form=cohort_form(cohort["id"], cohort["data_group_id"]),
                encoder=ProfileEncoder(
                    self.name,
                    as_messages=fast,
                    extra=member_columns(cohort["id"], cohort["data_group_id"]),
                    with_profile=False,
                    sanitize=settings.sanitize_text,
                ),
                page_size=settings.engage_page_size,
            )
            for number, cohort in enumerate(cohorts)
        ]
        return jobs, settings.query_max_workers

    @override
    def read(self) -> Iterable[dict[str, Any]]:
        """Every cohort's members; a failed cohort fails the stream, the others still load."""
        fast = self.uses_fast_path()
        self.start()
        if self._runner is None:
            return  # listing the cohorts failed: the outcome says why
        jobs = self._jobs or []
        failed: list[str] = []
        total = 0
        for done in self.run_jobs():
            self.log_job(done)
            if done.status is not Status.OK:
                failed.append(done.label)
                continue
            total += done.records
            yield from self.emit_spool(done.page_paths(), done.records, fast)
        if failed:
            self.outcome.failed = f"{len(failed)} of {len(jobs)} cohorts failed: " + ", ".join(
                failed
            )
        self.outcome.summary = f"cohort_members finished: {total} members of {len(jobs)} cohorts"


def cohort_form(cohort_id: int, data_group_id: str | None) -> dict[str, str]:
    """The engage query of a cohort's members; a group cohort is asked for as its group's
    (Mixpanel refuses it otherwise: "Cannot query one group with cohorts of different groups").
    """
    form = {
        "filter_by_cohort": json.dumps({"id": cohort_id}),
        # Members are keys only: the profile itself is in `engage`.
        "output_properties": json.dumps(["$last_seen"]),
    }
    if data_group_id is not None:
        form["data_group_id"] = data_group_id
    return form


def member_columns(cohort_id: int, data_group_id: str | None) -> dict[str, Any]:
    """The columns every member of a cohort shares."""
    if data_group_id is None:
        return {"cohort_id": cohort_id}
    return {"cohort_id": cohort_id, "data_group_id": data_group_id}

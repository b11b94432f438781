"""``engage`` (people profiles) and ``cohort_members``: engage queries paged in parallel.

Main thread: plans the queries, drives :class:`QueryRunner`, emits whole queries and STATE.
The fetch function handed to the runner runs on workers.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterable
from typing import IO, TYPE_CHECKING, Any, NamedTuple

import msgspec
from singer_sdk import typing as th

from tap_mixpanel_parallel.compat import override
from tap_mixpanel_parallel.http.errors import (
    PartitionRejected,
    StreamCut,
    TransientError,
    preview,
    redact,
)
from tap_mixpanel_parallel.query.base import QueryStream
from tap_mixpanel_parallel.query.client import (
    SessionExpired,
    fetch_body,
    query_url,
    session_gone,
)
from tap_mixpanel_parallel.query.lists import list_cohorts
from tap_mixpanel_parallel.query.records import (
    PageMalformed,
    PageRefused,
    PageWritten,
    ProfileEncoder,
)
from tap_mixpanel_parallel.query.runner import FetchPage, QueryJob, QueryRunner
from tap_mixpanel_parallel.query.state import (
    EngageState,
    ahead_of,
    dump_engage_state,
    engage_where,
    format_last_seen,
    full_read_due,
    later,
    load_engage_state,
)
from tap_mixpanel_parallel.run.status import Status
from tap_mixpanel_parallel.run.text import TEXT_DECODE_ERRORS
from tap_mixpanel_parallel.stream_base import Unit

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tap_mixpanel_parallel.query.api import QueryApi
    from tap_mixpanel_parallel.settings import Settings


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
        except TEXT_DECODE_ERRORS:
            msg = f"page {page} is not whole JSON (cut body)"
            raise StreamCut(msg) from None
        except PageRefused as exc:
            said = preview(redact(exc.said, settings.secrets))
            msg = f'page {page} came without "status": "ok". Mixpanel said: {said}'
            if page and session_gone(200, exc.said):
                raise SessionExpired(msg) from None
            # Retried like a 5xx: the query itself was accepted, Mixpanel failed to answer it.
            raise TransientError(msg) from None
        except (msgspec.ValidationError, PageMalformed) as exc:
            msg = f"page {page} is not an engage answer ({exc})"
            raise PartitionRejected(msg) from None

    return fetch


class _EngageQueries(QueryStream):
    """Runs engage queries and emits each one whole, in order."""

    batches = True
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


class _EngagePlan(NamedTuple):
    """What :meth:`EngageStream.plan_jobs` decided, for the STATE after the query."""

    given: EngageState
    started: dt.datetime
    bookmark: dt.datetime | None
    full: bool
    where: str | None


class EngageStream(_EngageQueries):
    """People profiles, incremental on ``$last_seen``."""

    _plan: _EngagePlan | None = None

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
        """One query: every profile, or those seen since the bookmark less the look-back, or
        every profile again when a full read is due."""
        settings = self.settings
        given = load_engage_state(self.given_state)
        started = _now()
        bookmark = given.bookmark
        if ahead_of(bookmark, started) is not None:
            self.logger.warning(
                "engage: bookmarks.engage.replication_key_value %s is in the future (after this"
                " run's clock, %s): read as %s (hand-edited, or written under a wrong clock)",
                format_last_seen(given.bookmark),  # type: ignore[arg-type]
                format_last_seen(started),
                format_last_seen(started),
            )
            bookmark = started
        full = full_read_due(
            given, started, settings.engage_full_refresh_days, forced=settings.engage_full_refresh
        )
        where = engage_where(bookmark, settings.lookback_days, full_refresh=full)
        if where is None:
            self.logger.info("engage: reading every profile (%s)", _why_full(given, settings))
        else:
            self.logger.info("engage: reading profiles where %s", where)
        self._plan = _EngagePlan(given, started, bookmark, full, where)
        job = QueryJob(
            index=0,
            label="engage",
            form={} if where is None else {"where": where},
            encoder=ProfileEncoder(
                self.name,
                as_messages=self.uses_fast_path() and not self.sends_batches(),
                sanitize=settings.sanitize_text,
            ),
            page_size=settings.engage_page_size,
        )
        return [job], 1

    @override
    def read(self) -> Iterable[Unit]:
        """The engage query; its records are emitted once all its pages are on disk."""
        fast = self.uses_fast_path()
        for done in self.run_jobs():
            assert self._plan is not None
            given, started, bookmark, full, where = self._plan
            self.log_job(done)
            if done.status is not Status.OK:
                self.outcome.failed = f"engage: {done.error}"
                return
            yield from self.emit_spool(done.page_paths(), done.records, fast)
            if where is not None and done.records == 0 and bookmark == given.bookmark:
                self.logger.warning(
                    "engage: the incremental read (where %s) found 0 profiles, yet the profile"
                    " whose $last_seen set the bookmark (%s) should match it: it was deleted, or"
                    " Mixpanel did not compare $last_seen as text (its expression grammar"
                    " defines >= for numbers only). If profiles are missing, run once with"
                    " engage_full_refresh: true, or set engage_full_refresh_days",
                    where,
                    format_last_seen(bookmark),  # type: ignore[arg-type]
                )
            state = self._next_state(given, bookmark, done.newest, full=full, started=started)
            self.publish_state(dump_engage_state(state, self.replication_key))
            self.outcome.summary = (
                f"engage finished: {done.records} profiles, bookmark"
                f" {format_last_seen(state.bookmark) if state.bookmark else 'none'}"
            )

    def _next_state(
        self,
        given: EngageState,
        bookmark: dt.datetime | None,
        newest: dt.datetime | None,
        *,
        full: bool,
        started: dt.datetime,
    ) -> EngageState:
        """The bookmark after a complete query: never after the run's clock; a full read
        replaces it rather than only moving it on."""
        finished = _now()
        future = ahead_of(newest, finished)
        if future is not None:
            self.logger.warning(
                "engage: a profile's $last_seen %s is in the future (after this run's clock,"
                " %s; set by hand, e.g. by an import): the bookmark is the run's clock instead,"
                " so later runs still read every update",
                format_last_seen(future),
                format_last_seen(finished),
            )
            newest = finished
        moved = newest if full and newest is not None else later(bookmark, newest)
        keeps_stamp = self.settings.engage_full_refresh_days is not None or given.last_full_read
        stamp = (started if full else given.last_full_read) if keeps_stamp else None
        return EngageState(moved, stamp)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _why_full(given: EngageState, settings: Settings) -> str:
    if settings.engage_full_refresh:
        return "engage_full_refresh"
    if given.bookmark is None:
        return "no bookmark"
    return f"engage_full_refresh_days: {settings.engage_full_refresh_days} days since the last"


class CohortMembersStream(_EngageQueries):
    """Which profiles are in which cohort: one engage query per cohort, side by side."""

    name = "cohort_members"
    primary_keys = ("cohort_id", "distinct_id")
    replication_key = None
    selected_by_default = False  # one query per cohort, against 60 an hour
    _cohort_ids: tuple[int, ...] = ()

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
        self._cohort_ids = tuple(c["id"] for c in cohorts)
        jobs = [
            QueryJob(
                index=number,
                label=f"cohort_members: cohort {cohort['id']}",
                form=cohort_form(cohort["id"], cohort["data_group_id"]),
                encoder=ProfileEncoder(
                    self.name,
                    as_messages=fast and not self.sends_batches(),
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
    def read(self) -> Iterable[Unit]:
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
            yield from self.emit_spool(
                done.page_paths(), done.records, fast, f"cohort-{self._cohort_ids[done.index]}"
            )
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

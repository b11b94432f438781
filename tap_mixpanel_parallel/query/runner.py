"""Engage queries on a thread pool: the pages of a session side by side, whole queries back
in order (orchestration on the main thread, attempts on workers).

A query (all profiles, or one cohort's members) starts with page 0, which names the session
and its size; its other pages are then fetched at the same time, each into a spool file of its
own. A query is handed back only once every page of its session is on disk: pages of one
session are disjoint, so a query emitted whole emits each profile once.

When a later page says the session is gone, or the session's pages turn out not to be a whole
split of one result (a short page before the last, a profile on two pages), what was fetched of
that session is thrown away and the query starts again with a new session: Mixpanel does not
promise the same order in a new session, so skipping pages already fetched could lose or repeat
profiles. After ``max_retries`` such restarts the query fails. Nothing of a
query reaches stdout before all of it is on disk, so a restart never repeats a record, and
memory holds one page per worker whatever the size of the query.

Several queries (cohorts) may be in flight at once, up to a window; they are handed back in
the order given. Workers only fetch, parse and write their own spool files.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from tap_mixpanel_parallel.http.errors import ExportError
from tap_mixpanel_parallel.http.limiter import RateLimiter, StopRequested
from tap_mixpanel_parallel.http.retry import with_retries
from tap_mixpanel_parallel.query.client import SessionExpired
from tap_mixpanel_parallel.query.paging import (
    Session,
    broken_split,
    is_short,
    pages_to_add,
    repeated_keys,
)
from tap_mixpanel_parallel.query.records import PageWritten, ProfileEncoder
from tap_mixpanel_parallel.query.state import later
from tap_mixpanel_parallel.run.pool import RunLoop, WorkerPool
from tap_mixpanel_parallel.run.spool import SpoolDir
from tap_mixpanel_parallel.run.status import Status

#: Queries of at least this many pages log their progress about every tenth of them.
PROGRESS_MIN_PAGES = 20


@dataclass
class QueryJob:
    """One engage query and, on the main thread, how far it got."""

    index: int
    label: str
    form: dict[str, str]
    encoder: ProfileEncoder
    page_size: int
    generation: int = 0
    restarts: int = 0
    session: Session | None = None
    known_pages: int = 0
    pages: dict[int, PageWritten] = field(default_factory=dict)
    short_seen: bool = False
    status: Status | None = None
    error: str = ""
    attempts: int = 0
    started: float = 0.0
    seconds: float = 0.0
    spool_dir: Path | None = None

    @property
    def records(self) -> int:
        """Profiles on disk for the current session."""
        return sum(p.count for p in self.pages.values())

    @property
    def newest(self) -> dt.datetime | None:
        """The largest ``$last_seen`` of the current session."""
        moment: dt.datetime | None = None
        for page in self.pages.values():
            moment = later(moment, page.max_last_seen)
        return moment

    def path(self, page: int, generation: int | None = None) -> Path:
        """Where a page of a session is spooled."""
        assert self.spool_dir is not None
        gen = self.generation if generation is None else generation
        return self.spool_dir / f"{self.index:05d}-{gen:03d}-{page:07d}.jsonl"

    def page_paths(self) -> list[Path]:
        """The complete query's spool files, in page order."""
        return [self.path(page) for page in range(self.known_pages)]


#: One attempt at one page: request it and write its records into the open spool file.
FetchPage = Callable[[QueryJob, int, "str | None", IO[bytes], threading.Event], PageWritten]


@dataclass
class _PageResult:
    job: int
    generation: int
    page: int
    status: Status | None  # None: the session expired
    written: PageWritten | None = None
    attempts: int = 0
    error: str = ""


class QueryRunner:
    """Runs engage queries' pages under the Query API limiter."""

    def __init__(
        self,
        *,
        fetch: FetchPage,
        limiter: RateLimiter,
        max_workers: int,
        max_retries: int,
        charge_pages: bool,
        logger: logging.Logger,
        stop_event: threading.Event | None = None,
        backoff_factor: float = 1.0,
        loop: RunLoop | None = None,
    ) -> None:
        self._fetch = fetch
        self._limiter = limiter
        self._max_workers = max_workers
        self._max_retries = max_retries
        self._charge_pages = charge_pages
        self._logger = logger
        self._backoff_factor = backoff_factor
        self.stop_event = stop_event if stop_event is not None else threading.Event()
        self.fatal: str | None = None
        self._loop = loop if loop is not None else RunLoop()
        self._pool: WorkerPool | None = None
        self._spool: SpoolDir | None = None
        self._pending: set[Future[_PageResult]] = set()
        self._by_job: dict[int, set[Future[_PageResult]]] = {}
        self._jobs: Sequence[QueryJob] = ()
        self._queued: deque[QueryJob] = deque()
        self._active: deque[QueryJob] = deque()
        self._window = 1

    def run(self, jobs: Sequence[QueryJob], window: int = 1) -> Iterator[QueryJob]:
        """Yield each job once it is done (ok or failed), in the order given.

        An ok job's pages are on disk until the next job is asked for. After a stop or a fatal
        error nothing more is yielded.
        """
        self.start(jobs, window)
        return self.results()

    def start(self, jobs: Sequence[QueryJob], window: int = 1) -> None:
        """Start the first ``window`` jobs; the run loop keeps them going from here on."""
        self._spool = SpoolDir()
        self._pool = WorkerPool(self._max_workers, self._loop.wake)
        self._jobs = jobs
        self._queued = deque(jobs)
        self._window = window
        self._loop.add(self)
        self.pump()

    def pump(self) -> None:
        """Settle finished pages and start queued jobs as the window allows (main thread)."""
        if self._spool is None:
            return
        for future in [f for f in self._pending if f.done()]:
            self._pending.discard(future)
            if not future.cancelled():
                self._settle(self._jobs, future.result())
        while self._queued and len(self._active) < self._window and not self._halted():
            job = self._queued.popleft()
            job.spool_dir = self._spool.path
            job.started = time.monotonic()
            self._submit(job, 0, None)
            self._active.append(job)

    def results(self) -> Iterator[QueryJob]:
        """The started jobs, each once it is done, in the order given (main thread)."""
        active = self._active
        try:
            while self._queued or active:
                self._loop.wait_for(
                    lambda: (
                        self._halted()
                        or not (self._queued or active)
                        or (bool(active) and active[0].status is not None)
                    )
                )
                while active and active[0].status is not None:
                    job = active.popleft()
                    job.seconds = time.monotonic() - job.started
                    yield job
                    _remove(job.page_paths() if job.status is Status.OK else [])
                if self._halted():
                    return
        finally:
            self.close()

    def stop(self) -> None:
        """Start nothing more and abandon what is in flight (safe from a signal handler)."""
        self.stop_event.set()

    def close(self) -> None:
        """Stop and drop the spool folder; never waits for a worker stuck in a stalled read:
        it checks the stop event between chunks, and the caller decides how long a stop may
        take."""
        self.stop_event.set()
        if self._pool is not None:
            self._pool.close()
        if self._spool is not None:
            self._spool.remove()
        self._loop.remove(self)

    def _halted(self) -> bool:
        return self.stop_event.is_set() or self.fatal is not None

    # -- main thread: what a finished page means for its query ----------------------------

    def _submit(self, job: QueryJob, page: int, session_id: str | None) -> None:
        assert self._pool is not None
        future = self._pool.submit(self._run_page, job, job.generation, page, session_id)
        self._pending.add(future)
        mine = self._by_job.setdefault(job.index, set())
        mine.add(future)
        future.add_done_callback(mine.discard)

    def _cancel_queued(self, job: QueryJob) -> None:
        """Pages of a thrown-away session that no worker has started never will."""
        for future in list(self._by_job.get(job.index, ())):
            future.cancel()

    def _settle(self, jobs: Sequence[QueryJob], result: _PageResult) -> None:
        job = next(j for j in jobs if j.index == result.job)
        job.attempts += result.attempts
        if job.status is not None or result.generation != job.generation:
            _remove([job.path(result.page, result.generation)])  # a session thrown away
            return
        if result.status is Status.STOPPED:
            return
        if result.status is Status.FATAL:
            self.fatal = result.error
            job.status, job.error = Status.FATAL, result.error
            return
        if result.status is Status.FAILED:
            self._fail(job, f"page {result.page}: {result.error}")
            return
        if result.status is None:
            self._restart(job, "the paging session expired", result.error)
            return
        assert result.written is not None
        self._page_done(job, result.page, result.written)

    def _page_done(self, job: QueryJob, page: int, written: PageWritten) -> None:
        job.pages[page] = written
        step = max(job.known_pages // 10, 1)
        if job.known_pages >= PROGRESS_MIN_PAGES and len(job.pages) % step == 0:
            self._logger.info(
                "%s: %d of %d pages on disk (%d profiles)",
                job.label,
                len(job.pages),
                job.known_pages,
                job.records,
            )
        if page == 0:
            if written.session_id is None and written.count >= job.page_size:
                self._fail(job, "Mixpanel sent a full first page without a session_id to page on")
                return
            job.session = Session(
                written.session_id or "",
                written.page_size or job.page_size,
                written.count if written.total is None else written.total,
                total_known=written.total is not None,
            )
            job.known_pages = 1
        session = job.session
        assert session is not None
        job.short_seen = job.short_seen or is_short(written.count, session.page_size)
        if session.session_id:
            # Keep asking while pages are full: Mixpanel's total may be short of what it holds,
            # or missing, and then pages go a window ahead.
            if page == 0:
                job.known_pages = session.planned_pages if session.total_known else 1
            more = pages_to_add(
                job.known_pages,
                job.pages.keys(),
                short_seen=job.short_seen,
                open_ended=not session.total_known,
                window=self._max_workers,
            )
            start = 1 if page == 0 else job.known_pages
            job.known_pages += more
            for later_page in range(start, job.known_pages):
                self._submit(job, later_page, session.session_id)
        if len(job.pages) == job.known_pages:
            self._complete(job)

    def _complete(self, job: QueryJob) -> None:
        """Every page asked for is on disk: accept the session only if it is a whole split."""
        assert job.session is not None
        broken = broken_split(
            {number: counted.count for number, counted in job.pages.items()},
            job.session.page_size,
        )
        if broken is not None:
            self._restart(job, "the session's pages were not a whole split", broken)
            return
        repeats = repeated_keys(counted.keys for counted in job.pages.values())
        if repeats:
            self._restart(
                job,
                "the session served profiles twice",
                f"{repeats} profile{'' if repeats == 1 else 's'} came twice in one session"
                " (it shifted under concurrent writes, so others may be missing)",
            )
            return
        job.status = Status.OK

    def _restart(self, job: QueryJob, what: str, error: str) -> None:
        self._cancel_queued(job)
        _remove([job.path(page) for page in job.pages])
        if job.restarts >= self._max_retries:
            self._fail(job, f"{what} {job.restarts + 1} times: {error}")
            return
        job.restarts += 1
        job.generation += 1
        job.pages.clear()
        job.short_seen = False
        job.session = None
        job.known_pages = 0
        self._logger.warning(
            "%s: %s (%s); starting the query again with a new session (restart %d of at most %d)",
            job.label,
            what,
            error,
            job.restarts,
            self._max_retries,
        )
        self._submit(job, 0, None)

    def _fail(self, job: QueryJob, error: str) -> None:
        self._cancel_queued(job)
        _remove([job.path(page) for page in job.pages])
        job.pages.clear()
        job.generation += 1  # what is still in flight for this job is now stale
        job.status, job.error = Status.FAILED, error

    # -- worker threads ---------------------------------------------------------------------

    def _run_page(
        self, job: QueryJob, generation: int, page: int, session_id: str | None
    ) -> _PageResult:
        attempts = 0
        path = job.path(page, generation)

        def attempt() -> PageWritten:
            nonlocal attempts
            attempts += 1
            with path.open("wb", buffering=1 << 20) as sink:
                return self._fetch(job, page, session_id, sink, self.stop_event)

        def on_retry(number: int, exc: ExportError, delay: float) -> None:
            self._logger.warning(
                "%s: page %d attempt %d failed (%s); retrying in %.1fs",
                job.label,
                page,
                number,
                exc.message,
                delay,
            )

        def result(
            status: Status | None, written: PageWritten | None = None, error: str = ""
        ) -> _PageResult:
            return _PageResult(job.index, generation, page, status, written, attempts, error)

        try:
            written = with_retries(
                attempt,
                limiter=self._limiter,
                stop=self.stop_event,
                max_retries=self._max_retries,
                on_retry=on_retry,
                charge=page == 0 or self._charge_pages,
                backoff_factor=self._backoff_factor,
            )
        except StopRequested:
            return result(Status.STOPPED)
        except SessionExpired as exc:
            return result(None, error=exc.message)
        except ExportError as exc:
            return result(Status.FATAL if exc.fatal else Status.FAILED, error=exc.message)
        return result(Status.OK, written=written)


def _remove(paths: Sequence[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)

"""The engage query runner with an in-memory Mixpanel (the HTTP side is tested by the CLI tests).

The fake sessions here behave as Mixpanel's are documented and feared to: each session has
an order of its own, a session may expire between pages, pages may be cut or throttled.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import threading

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tap_mixpanel_parallel.http.errors import RateLimited, RunFatal, StreamCut
from tap_mixpanel_parallel.http.limiter import RateLimiter
from tap_mixpanel_parallel.query.client import SessionExpired
from tap_mixpanel_parallel.query.records import ProfileEncoder
from tap_mixpanel_parallel.query.runner import QueryJob, QueryRunner
from tap_mixpanel_parallel.run.status import Status

LOG = logging.getLogger("test-query-runner")


class Sessions:
    """Profiles 0..n-1 per job; each new session shuffles them; faults by (session, page)."""

    def __init__(self, sizes, *, expire=(), cut=(), throttle=(), fatal_job=None, total_short=0):
        self.sizes = sizes
        self.expire = set(expire)  # (session number, page) refused as expired
        self.cut = set(cut)  # (session number, page) cut once
        self.throttle = set(throttle)
        self.fatal_job = fatal_job
        self.total_short = total_short
        self.sessions = {}
        self.counter = itertools.count(1)
        self.lock = threading.Lock()
        self.requests = []
        self.in_flight = 0
        self.max_in_flight = 0

    def fetch(self, job, page, session_id, sink, stop):
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return self._fetch(job, page, session_id, sink)
        finally:
            with self.lock:
                self.in_flight -= 1

    def _fetch(self, job, page, session_id, sink):
        if job.index == self.fatal_job:
            raise RunFatal("HTTP 401")
        with self.lock:
            if session_id is None:
                number = next(self.counter)
                order = list(range(self.sizes[job.index]))
                random.Random(number).shuffle(order)
                session_id = f"s{number}"
                self.sessions[session_id] = (number, order)
            number, order = self.sessions[session_id]
            self.requests.append((job.index, number, page))
            key = (number, page)
            if key in self.expire:
                raise SessionExpired("session gone")
            if key in self.throttle:
                self.throttle.discard(key)
                raise RateLimited("429", retry_after=0.01)
            cut = key in self.cut
            self.cut.discard(key)
        size = job.page_size
        chunk = order[page * size : (page + 1) * size]
        body = {"page": page, "page_size": size, "session_id": session_id, "status": "ok"}
        if page == 0:
            body["total"] = len(order) - self.total_short
        body["results"] = [
            {
                "$distinct_id": f"j{job.index}-{i}",
                "$properties": {"$last_seen": f"2024-01-01T00:00:{i % 60:02d}"},
            }
            for i in chunk
        ]
        raw = json.dumps(body).encode()
        if cut:
            sink.write(b'{"partial": ')
            raise StreamCut("cut")
        return job.encoder.write_page(raw, sink, "T")


def jobs(n, page_size):
    return [
        QueryJob(
            index=i,
            label=f"job {i}",
            form={},
            encoder=ProfileEncoder("engage", as_messages=False, extra={"job": i}),
            page_size=page_size,
        )
        for i in range(n)
    ]


def run(sessions, job_list, *, workers=4, retries=3, window=2):
    runner = QueryRunner(
        fetch=sessions.fetch,
        limiter=RateLimiter(max_concurrent=workers, per_second=1000, per_hour=100000),
        max_workers=workers,
        max_retries=retries,
        charge_pages=False,
        logger=LOG,
        backoff_factor=0.001,
    )
    out = []
    for job in runner.run(job_list, window):
        ids = []
        if job.status is Status.OK:
            for path in job.page_paths():
                ids += [json.loads(line)["distinct_id"] for line in path.read_bytes().splitlines()]
        out.append((job.index, job.status, ids, job))
    return runner, out


def test_every_profile_once_in_order_of_jobs():
    sessions = Sessions([23, 0, 10])
    _, out = run(sessions, jobs(3, 4))
    assert [o[0] for o in out] == [0, 1, 2]
    for index, status, ids, _ in out:
        assert status is Status.OK
        assert sorted(ids) == sorted(f"j{index}-{i}" for i in range(sessions.sizes[index]))
        assert len(ids) == len(set(ids))
    assert sessions.max_in_flight <= 4


def test_an_expired_session_restarts_the_query_and_nothing_of_the_old_one_survives():
    # Session 1 expires at page 3: its pages 0..2 are thrown away; session 2 has another order.
    sessions = Sessions([40], expire={(1, 3)})
    _, out = run(sessions, jobs(1, 5))
    (_, status, ids, job) = out[0]
    assert status is Status.OK
    assert sorted(ids) == sorted(f"j0-{i}" for i in range(40))
    assert job.restarts == 1
    assert {n for (_, n, _) in sessions.requests} == {1, 2}


def test_a_session_that_keeps_expiring_fails_the_job_after_the_retries():
    sessions = Sessions([20], expire={(n, 1) for n in range(1, 10)})
    _, out = run(sessions, jobs(1, 5), retries=2)
    (_, status, ids, job) = out[0]
    assert status is Status.FAILED
    assert "expired 3 times" in job.error
    assert ids == []


def test_cut_and_throttled_pages_are_retried_alone():
    # A retried page 0 opens a new session (2); its pages 2 and 4 fail once each.
    sessions = Sessions([30], cut={(1, 0), (2, 2)}, throttle={(2, 4)})
    _, out = run(sessions, jobs(1, 5))
    (_, status, ids, job) = out[0]
    assert status is Status.OK
    assert sorted(ids) == sorted(f"j0-{i}" for i in range(30))
    assert job.restarts == 0
    assert [r for r in sessions.requests if r[2] in (2, 4)].count((0, 2, 2)) == 2
    assert [r for r in sessions.requests if r[2] in (2, 4)].count((0, 2, 4)) == 2


def test_pages_past_a_short_total_are_still_read():
    sessions = Sessions([25], total_short=10)  # says 15, holds 25
    _, out = run(sessions, jobs(1, 5))
    assert sorted(out[0][2]) == sorted(f"j0-{i}" for i in range(25))


def test_a_fatal_error_stops_the_run():
    sessions = Sessions([10, 10, 10], fatal_job=1)
    runner, out = run(sessions, jobs(3, 5), window=1)
    assert [o[1] for o in out] == [Status.OK, Status.FATAL]
    assert runner.fatal == "HTTP 401"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(0, 40), min_size=1, max_size=3),
    page_size=st.integers(1, 9),
    faults=st.sets(st.tuples(st.integers(1, 4), st.integers(0, 6)), max_size=4),
    kind=st.sampled_from(["expire", "cut", "throttle"]),
)
def test_exactly_once_whatever_fails_where(sizes, page_size, faults, kind):
    sessions = Sessions(sizes, **{kind: faults})
    _, out = run(sessions, jobs(len(sizes), page_size), retries=6)
    for index, status, ids, _ in out:
        assert status is Status.OK
        assert sorted(ids) == sorted(f"j{index}-{i}" for i in range(sizes[index]))

"""Mixpanel's real answers and odd data, against the fake server answering the same way.

Error JSON that echoes the request, credential 400s, bare and huge Retry-After (on a virtual
clock: pauses of minutes take no real time), a server that drips, a gzip body without its
trailer, a credential echo straddling the read limit, events whose ``time`` no date can hold, a
cut line with an email before ``export terminated early``, and a line of megabytes.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import json
import logging
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tap_mixpanel_parallel.export.client import GzipMembers, split_lines
from tap_mixpanel_parallel.export.partitions import plan_partitions
from tap_mixpanel_parallel.export.records import OutOfRangeTime, RecordEncoder
from tap_mixpanel_parallel.export.runner import PartitionResult, PartitionRunner
from tap_mixpanel_parallel.export.worker import ExportWorkers
from tap_mixpanel_parallel.http.errors import StreamCut
from tap_mixpanel_parallel.http.limiter import RETRY_AFTER_CAP_SECONDS, RateLimiter
from tap_mixpanel_parallel.run.status import MAX_THROTTLE_STREAK, Status
from tap_mixpanel_parallel.settings import Settings
from tap_mixpanel_parallel.testing.fake_server import Faults
from tap_mixpanel_parallel.testing.fake_server.errors import UNAUTHORIZED
from tests.helpers import (
    SECRET,
    USER,
    assert_exactly_once,
    base_config,
    export_requests,
    wait_until_idle,
)

START = dt.date(2024, 1, 1)
TOKEN = base64.b64encode(f"{USER}:{SECRET}".encode()).decode()
EMAIL = "jane.doe@example.com"


def assert_never_shown(run, *texts):
    for text in texts:
        assert text not in run.stdout, f"{text[:40]!r} reached stdout"
        assert text not in run.stderr, f"{text[:40]!r} reached the log"


# -- the runner in process, on a virtual clock ---------------------------------------------------


class VirtualClock:
    """Time that moves only when the limiter waits: 429 pauses of minutes cost no real time.

    One worker only: its waits hold the limiter's lock, which no other thread then needs.
    """

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def wait(self, condition: threading.Condition, seconds: float) -> None:
        self.now += seconds


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def run_in_process(server, clock, **overrides) -> tuple[list[PartitionResult], list[str], bool]:
    """The tap's own runner, limiter, client and parser over real HTTP; one worker.

    Returns the results, the log lines and whether the run gave up on Mixpanel's 429s.
    """
    settings = Settings.from_config(base_config(server, **overrides))
    plan = plan_partitions(
        start_date=settings.start_date,
        end_date=settings.end_for(server.today),
        partition_days=settings.partition_days,
        lookback_days=0,
        bookmark=None,
        failed=(),
    )
    logger = logging.getLogger(f"test-answers-{id(clock)}")
    collect = _Collect()
    logger.addHandler(collect)
    workers = ExportWorkers(settings, "test")
    runner = PartitionRunner(
        attempt=workers.attempt_with(RecordEncoder(time_in_ms=False, zone=None, as_messages=True)),
        limiter=RateLimiter(
            max_concurrent=1,
            per_second=1000,
            per_hour=100000,
            clock=clock,
            wait=clock.wait,
            bare_429_seconds=settings.rate_limit_wait,
        ),
        max_workers=1,
        max_retries=settings.max_retries,
        logger=logger,
        backoff_factor=0.01,
    )
    try:
        results = list(runner.run(plan))
    finally:
        workers.close()
        logger.removeHandler(collect)
    return results, collect.lines, runner.throttled_out.is_set()


# -- 429s ----------------------------------------------------------------------------------------


def test_a_bare_429_waits_tens_of_seconds_growing_and_spends_no_retry(fake_server):
    server = fake_server(start=START, days=7, events_per_day=20, faults=Faults(throttle_first=3))
    clock = VirtualClock()
    results, log, gave_up = run_in_process(server, clock, max_retries=0)
    assert [(r.status, r.records, r.attempts) for r in results] == [(Status.OK, 140, 4)]
    assert [r.status for r in export_requests(server)] == [429, 429, 429, 200]
    throttles = [line for line in log if "Mixpanel throttled the run" in line]
    assert len(throttles) == 3, log
    for line, seconds in zip(throttles, (30, 60, 120), strict=True):
        assert "no Retry-After" in line
        assert f"every worker waits {seconds}s" in line
        assert "429s do not count against max_retries" in line
    assert clock.now >= 30 + 60 + 120, "the pauses were not waited"
    assert not gave_up


@pytest.mark.parametrize(
    ("retry_after", "waited", "said"),
    [
        (45, 45, "Retry-After 45s): every worker waits 45s"),
        (2.5, 2.5, "Retry-After 2.5s): every worker waits 2.5s"),
        (
            999999,
            RETRY_AFTER_CAP_SECONDS,
            "Retry-After 999999s, capped at 600s): every worker waits 600s",
        ),
    ],
)
def test_retry_after_is_honoured_up_to_ten_minutes(fake_server, retry_after, waited, said):
    server = fake_server(
        start=START,
        days=7,
        events_per_day=20,
        faults=Faults(throttle_first=1, retry_after=retry_after),
    )
    clock = VirtualClock()
    results, log, _ = run_in_process(server, clock, max_retries=0)
    assert [r.status for r in results] == [Status.OK]
    throttles = [line for line in log if "Mixpanel throttled the run" in line]
    assert len(throttles) == 1, log
    assert said in throttles[0]
    assert waited <= clock.now < waited + 5


def test_an_endless_429_storm_ends_the_run_instead_of_waiting_for_ever(fake_server):
    server = fake_server(
        start=START, days=14, events_per_day=5, faults=Faults(throttle_first=10**6)
    )
    clock = VirtualClock()
    results, _, gave_up = run_in_process(server, clock, max_retries=0)
    assert gave_up
    # the first partition fails (owed to the next run); the second is never started
    assert [r.status for r in results] == [Status.FAILED]
    assert "429" in results[0].error
    assert f"gave up after {MAX_THROTTLE_STREAK} pauses for 429s in a row" in results[0].error
    requests = export_requests(server)
    assert len(requests) == MAX_THROTTLE_STREAK + 1
    assert {(r.from_date, r.to_date) for r in requests} == {("2024-01-01", "2024-01-07")}
    # 30, 60, 120, 240, then 300 s each: over half an hour of patience first
    assert clock.now >= 30 + 60 + 120 + 240 + 300 * (MAX_THROTTLE_STREAK - 4)


# -- error bodies --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "hinted"),
    [
        ("Timeout Error.", False),
        ("to_date cannot be later than today", True),
    ],
)
def test_a_400_hint_comes_from_mixpanels_message_not_the_echoed_request(
    fake_server, run_tap, message, hinted
):
    server = fake_server(
        start=START,
        days=7,
        events_per_day=5,
        faults=Faults(status_override=400, error_message=message),
    )
    run = run_tap(base_config(server, max_retries=0))
    assert run.returncode == 1, run.stderr[-3000:]
    error = run.bookmark["failed_partitions"][0]["error"]
    assert f"Mixpanel said: {message}" in error
    assert ("project_timezone" in error) == hinted, error
    assert ("project_timezone" in run.stderr) == hinted
    # the JSON's echo of the request is not what Mixpanel said
    assert "/api/2.0/export?" not in run.stderr + json.dumps(run.last_state)


def test_unable_to_authenticate_is_fatal_like_a_401(fake_server, run_tap):
    server = fake_server(
        start=START,
        days=28,
        events_per_day=5,
        faults=Faults(status_override=400, error_message="Unable to authenticate request"),
    )
    state = {
        "bookmarks": {
            "events": {
                "replication_key": "time",
                "replication_key_value": "2024-01-14",
                "failed_partitions": [
                    {
                        "from_date": "2024-01-01",
                        "to_date": "2024-01-07",
                        "error": "HTTP 503 from Mixpanel.",
                        "attempts": 2,
                    }
                ],
            }
        }
    }
    run = run_tap(base_config(server, max_workers=3, max_retries=5), state=state)
    assert run.returncode == 2, run.stderr[-3000:]
    assert len(export_requests(server)) <= 3, "the run kept asking after a credential error"
    assert run.records == []
    for value in run.states:
        assert value == state, "a credential error changed the state"
    last = run.stderr.strip().splitlines()[-1]
    assert "HTTP 400" in last
    assert "check service_account_username, service_account_secret" in last
    assert "Unable to authenticate request" in last
    assert "retrying" not in run.stderr


@pytest.mark.parametrize("shift", [-40, -12, -3, -1, 0, 1, 7])
def test_a_credential_echo_across_the_read_limit_never_shows_half_a_token(
    fake_server, run_tap, shift
):
    # place "Basic <token>" so that it straddles byte 4096 of the body by `shift`
    before_header = len(UNAUTHORIZED) + len(" (received Authorization: ")
    padding = 4096 - before_header - len("Basic ") - len(TOKEN) // 2 + shift
    server = fake_server(
        start=START,
        days=7,
        events_per_day=5,
        service_account=(USER, "the-right-secret"),
        faults=Faults(echo_credentials=True, echo_padding=padding),
    )
    run = run_tap(base_config(server, max_workers=1))
    assert run.returncode == 2, run.stderr[-3000:]
    assert "Mixpanel said: Unauthorized" in run.stderr
    for secret in (TOKEN, SECRET):
        for size in range(6, len(secret) + 1):
            assert_never_shown(run, secret[:size])


# -- broken bodies -------------------------------------------------------------------------------


@pytest.mark.parametrize("drip_headers", [False, True], ids=["body-drips", "headers-drip"])
def test_a_drip_cannot_hold_a_request_past_request_timeout(fake_server, run_tap, drip_headers):
    # A byte a second resets a socket timeout each time: the ~90 bytes of headers alone would
    # outlast the 60 s this run is given, the ~20 KB body would take hours.
    server = fake_server(
        start=START,
        days=7,
        events_per_day=5,
        faults=Faults(drip_seconds=1.0, drip_headers=drip_headers),
    )
    run = run_tap(base_config(server, request_timeout=2, max_retries=0), timeout=60)
    assert run.returncode == 1, run.stderr[-3000:]
    assert run.records == []
    (failed,) = run.bookmark["failed_partitions"]
    assert "request_timeout of 2s passed" in failed["error"]
    assert all(r.bytes_sent < 1000 for r in export_requests(server))


def test_a_gzip_body_without_its_trailer_is_a_cut_stream(fake_server, run_tap):
    server = fake_server(start=START, days=14, events_per_day=30, faults=Faults(gzip_trailer_cut=1))
    config = base_config(server, max_retries=0)
    first = run_tap(config)
    assert first.returncode == 1, first.stderr[-3000:]
    assert first.records == [], "half a partition was emitted as if whole"
    failed = first.bookmark["failed_partitions"]
    assert len(failed) == 2
    assert all("gzip body ended before its trailer" in f["error"] for f in failed)
    wait_until_idle(server)  # a request is logged once its handler is done
    truncated = [r for r in export_requests(server) if r.fault == "gzip_trailer_cut"]
    assert len(truncated) == 2 and all(r.headers.get("Accept-Encoding") for r in truncated)

    # the second attempt of each range is whole: the next run exports every event once
    again = run_tap(config, state=first.last_state)
    assert again.returncode == 0, again.stderr[-3000:]
    assert_exactly_once(again, server)


def _odd_time_event(n: int, time: str) -> str:
    return (
        '{"event":"Odd","properties":{"time":' + time + f',"distinct_id":"odd-{n}",'
        f'"$insert_id":"odd-{n}","email":"{EMAIL}"}}}}'
    )


ODD_TIMES = ("1e20", "-1e20", "1704240000000", "100000000000000000000000000000", "1e999")


def test_events_with_a_time_no_date_can_hold_are_skipped_counted_and_never_crash(
    fake_server, run_tap
):
    odd = [_odd_time_event(n, t) for n, t in enumerate(ODD_TIMES)]
    server = fake_server(
        start=START,
        days=14,
        events_per_day=20,
        faults=Faults(extra_lines={"2024-01-03": odd}),
    )
    run = run_tap(base_config(server))
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    assert_exactly_once(run, server)  # the odd events are not records; every other one is
    assert run.bookmark["replication_key_value"] == server.today.isoformat()
    assert run.bookmark["failed_partitions"] == []
    assert f"{len(ODD_TIMES)} events skipped" in run.stderr
    warning = next(line for line in run.stderr.splitlines() if "skipped, no record" in line)
    assert "2024-01-01..2024-01-07" in warning
    assert "line 141: properties.time is out of range" in warning  # after 140 normal events
    assert "milliseconds sent as seconds?" in warning
    assert_never_shown(run, EMAIL)


def test_a_cut_line_before_terminated_early_is_never_quoted(fake_server, run_tap):
    cut = (
        '{"event":"Sign Up","properties":{"time":1704240000,"distinct_id":"u-1",'
        f'"$insert_id":"cut-1","email":"{EMAIL}","bio":"' + "lorem ipsum " * 1700
    )
    server = fake_server(
        start=START,
        days=7,
        events_per_day=10,
        faults=Faults(extra_lines={"2024-01-02": [cut + "export terminated early"]}),
    )
    # No retries, so the week is not fetched again in halves: it fails whole, at once.
    run = run_tap(base_config(server, max_retries=0))
    assert run.returncode == 1, run.stderr[-3000:]
    assert run.records == []
    (failed,) = run.bookmark["failed_partitions"]
    assert "'export terminated early'" in failed["error"]
    assert len(failed["error"]) < 200, failed["error"]
    assert_never_shown(run, EMAIL, "lorem ipsum", "Sign Up")


def test_a_line_of_megabytes_comes_through_whole(fake_server, run_tap):
    blob = "0123456789abcdef" * (12 * 2**20 // 16)  # 12 MiB in one property
    huge = (
        '{"event":"Huge","properties":{"time":1704240000,"distinct_id":"h",'
        f'"$insert_id":"huge-1","blob":"{blob}"}}}}'
    )
    server = fake_server(
        start=START, days=7, events_per_day=10, faults=Faults(extra_lines={"2024-01-02": [huge]})
    )
    run = run_tap(base_config(server))
    assert run.returncode == 0, run.stderr[-3000:]
    (record,) = [r for r in run.records if r["insert_id"] == "huge-1"]
    assert record["properties"]["blob"] == blob
    assert len(run.records) == 71


# -- pure pieces ---------------------------------------------------------------------------------


@given(st.lists(st.binary(max_size=40), max_size=12), st.data())
def test_split_lines_gives_whole_lines_wherever_chunks_are_cut(lines, data):
    body = b"".join(line.replace(b"\n", b"") + b"\n" for line in lines)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=10)))
    chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    assert list(split_lines(chunks)) == body.split(b"\n")[:-1]


def test_split_lines_refuses_a_final_partial_line():
    with pytest.raises(StreamCut):
        list(split_lines([b'{"a":1}\n{"b":', b"2"]))
    assert list(split_lines([b"a\n", b"  "])) == [b"a"]  # trailing blanks are not a line


@pytest.mark.parametrize("time", ODD_TIMES)
def test_out_of_range_times_name_the_line_and_not_the_event(time):
    encoder = RecordEncoder(time_in_ms=False, zone=None, as_messages=False)
    with pytest.raises(OutOfRangeTime) as raised:
        encoder.encode(_odd_time_event(1, time).encode(), 12, "x")
    assert raised.value.message.startswith("line 12: properties.time is out of range")
    assert EMAIL not in raised.value.message and "odd-1" not in raised.value.message


@given(st.lists(st.binary(max_size=3000), min_size=1, max_size=3), st.integers(1, 500))
def test_gzip_members_decode_whole_in_bounded_pieces_and_know_a_cut(members, step):
    body = b"".join(gzip.compress(member) for member in members)
    decoder = GzipMembers(piece_bytes=256)
    pieces = [p for i in range(0, len(body), step) for p in decoder.feed(body[i : i + step])]
    decoder.finish()
    assert b"".join(pieces) == b"".join(members)
    assert all(len(piece) <= 256 for piece in pieces)
    cut = GzipMembers()
    list(cut.feed(body[: len(body) - 1]))  # the last byte of the trailer is missing
    with pytest.raises(StreamCut):
        cut.finish()

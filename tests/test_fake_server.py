"""The fake server is the ground truth of every tap test, so it is tested over real HTTP."""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests

from tap_mixpanel_parallel.testing.fake_server import (
    EVENT_NAMES,
    EXPORT_PATH,
    TERMINATED_EARLY_LINE,
    FakeMixpanel,
    Faults,
    ServerConfig,
)
from tap_mixpanel_parallel.testing.fake_server.cli import build_parser, config_from_args

START = date(2024, 1, 1)
AUTH = ("svc-user", "svc-secret")
REPO_ROOT = Path(__file__).resolve().parent.parent


def export(server, *, auth=AUTH, headers=None, timeout=10.0, stream=False, **params):
    params.setdefault("project_id", "12345")
    return requests.get(
        server.url + EXPORT_PATH,
        params=params,
        auth=auth,
        headers=headers,
        timeout=timeout,
        stream=stream,
    )


def utc_day(seconds):
    return datetime.fromtimestamp(seconds, tz=timezone.utc).date()


def lines_of(response):
    return [json.loads(line) for line in response.text.splitlines()]


def wait_for_log(server, count, timeout=5.0):
    """The server logs a request after its last byte, which can be after the client gave up."""
    deadline = time.monotonic() + timeout
    while len(server.requests_log) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(server.requests_log) >= count
    return sorted(server.requests_log, key=lambda record: record.started)


@pytest.fixture(scope="module")
def server():
    with FakeMixpanel(start=START, days=5, events_per_day=40) as fake:
        yield fake


# -- auth and parameters -------------------------------------------------------------------------


def test_service_account_auth(server):
    response = export(server, from_date="2024-01-01", to_date="2024-01-01")
    assert response.status_code == 200
    assert len(response.text.splitlines()) == 40


@pytest.mark.parametrize(
    "auth",
    [None, ("svc-user", "wrong"), ("someone", "svc-secret"), ("svc-secret", "")],
)
def test_bad_credentials_are_401_without_echoing_the_secret(server, auth):
    response = export(server, auth=auth, from_date="2024-01-01", to_date="2024-01-01")
    assert response.status_code == 401
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.text == "Unauthorized, invalid username or secret"


def test_garbled_authorization_header_is_401(server):
    headers = {"Authorization": "Basic !!!not-base64"}
    response = requests.get(
        server.url + EXPORT_PATH,
        params={"from_date": "2024-01-01", "to_date": "2024-01-01", "project_id": "12345"},
        headers=headers,
        timeout=10,
    )
    assert response.status_code == 401


def test_legacy_api_secret_auth():
    with FakeMixpanel(
        start=START, days=1, events_per_day=3, service_account=None, api_secret="proj-secret"
    ) as fake:
        ok = export(fake, auth=("proj-secret", ""), from_date="2024-01-01", to_date="2024-01-01")
        assert ok.status_code == 200
        assert len(ok.text.splitlines()) == 3
        # project_id is not needed with the legacy secret
        params = {"from_date": "2024-01-01", "to_date": "2024-01-01"}
        no_project = requests.get(
            fake.url + EXPORT_PATH, params=params, auth=("proj-secret", ""), timeout=10
        )
        assert no_project.status_code == 200
        assert (
            export(
                fake, auth=("proj-secret", "x"), from_date="2024-01-01", to_date="2024-01-01"
            ).status_code
            == 401
        )
        assert export(fake, from_date="2024-01-01", to_date="2024-01-01").status_code == 401


def test_project_id_required_and_checked(server):
    params = {"from_date": "2024-01-01", "to_date": "2024-01-01"}
    missing = requests.get(server.url + EXPORT_PATH, params=params, auth=AUTH, timeout=10)
    assert missing.status_code == 400
    assert "project_id" in missing.text
    assert export(server, project_id="999", **params).status_code == 403
    assert export(server, project_id="abc", **params).status_code == 400


def test_to_date_after_today_is_400_plain_text(server):
    response = export(server, from_date="2024-01-05", to_date="2024-01-06")
    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.text == "to_date cannot be later than today"


@pytest.mark.parametrize(
    "params",
    [
        {"from_date": "2024-01-01"},
        {"from_date": "2024-1-1", "to_date": "2024-01-02"},
        {"from_date": "20240101", "to_date": "2024-01-02"},
        {"from_date": "2024-02-30", "to_date": "2024-03-01"},
        {"from_date": "2024-01-03", "to_date": "2024-01-02"},
        {"from_date": "2024-01-01", "to_date": "2024-01-02", "event": "Purchase"},
        {"from_date": "2024-01-01", "to_date": "2024-01-02", "event": "[1]"},
        {"from_date": "2024-01-01", "to_date": "2024-01-02", "where": 'properties["a"] > 1'},
        {"from_date": "2024-01-01", "to_date": "2024-01-02", "where": 'properties["a\\x"]=="b"'},
        {"from_date": "2024-01-01", "to_date": "2024-01-02", "limit": "100001"},
        {"from_date": "2024-01-01", "to_date": "2024-01-02", "limit": "ten"},
    ],
)
def test_bad_parameters_are_400(server, params):
    response = export(server, **params)
    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("text/plain")


def test_other_paths_are_404(server):
    response = requests.get(server.url + "/api/2.0/engage", auth=AUTH, timeout=10)
    assert response.status_code == 404


# -- data ----------------------------------------------------------------------------------------


def test_range_is_inclusive_and_matches_events(server):
    response = export(server, from_date="2024-01-02", to_date="2024-01-04")
    assert response.status_code == 200
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert response.headers["Content-Type"].startswith("text/plain")
    got = lines_of(response)
    expected = list(server.events(date(2024, 1, 2), date(2024, 1, 4)))
    assert got == expected
    assert len(got) == 3 * 40
    days = {utc_day(e["properties"]["time"]) for e in got}
    assert days == {date(2024, 1, 2), date(2024, 1, 3), date(2024, 1, 4)}
    assert len({e["properties"]["$insert_id"] for e in got}) == len(got)


def test_days_before_the_dataset_return_nothing_for_those_days(server):
    response = export(server, from_date="2023-12-20", to_date="2024-01-01")
    assert lines_of(response) == list(server.events(START, START))


def test_events_carry_awkward_json(server):
    event = next(server.events(START, START))
    props = event["properties"]
    assert event["event"] in EVENT_NAMES
    assert isinstance(props["plan"], dict)
    assert isinstance(props["plan"]["seats"], int)
    assert isinstance(props["tags"], list)
    assert props["coupon"] is None
    assert isinstance(props["is_trial"], bool)
    assert isinstance(props["price"], float)
    assert "\n" in props["note"]
    assert "東京" in props["greeting"]
    assert {"time", "distinct_id", "$insert_id", "mp_processing_time_ms"} <= props.keys()
    assert len(props) >= 20


def test_event_size_follows_event_bytes():
    with FakeMixpanel(start=START, days=1, events_per_day=200, event_bytes=1000) as fake:
        body = export(fake, from_date="2024-01-01", to_date="2024-01-01").content
    assert 950 < len(body) / 200 < 1050


def test_output_is_not_sorted_by_time(server):
    times = [
        e["properties"]["time"]
        for e in lines_of(export(server, from_date="2024-01-01", to_date="2024-01-01"))
    ]
    assert times != sorted(times)


def test_gzip_negotiation(server):
    params = {"from_date": "2024-01-01", "to_date": "2024-01-02"}
    zipped = export(server, stream=True, headers={"Accept-Encoding": "gzip"}, **params)
    assert zipped.headers["Content-Encoding"] == "gzip"
    raw = zipped.raw.read(decode_content=False)
    plain = gzip.decompress(raw)
    assert [json.loads(line) for line in plain.splitlines()] == list(
        server.events(START, date(2024, 1, 2))
    )
    assert len(raw) < len(plain)

    identity = export(server, headers={"Accept-Encoding": "identity"}, **params)
    assert "Content-Encoding" not in identity.headers
    assert identity.content == plain

    small = export(server, headers={"Accept-Encoding": "gzip"}, limit="1", **params)
    assert "Content-Encoding" not in small.headers
    assert len(small.content) < 1400


def test_empty_range_gives_empty_body():
    with FakeMixpanel(
        start=date(2024, 1, 10), days=3, events_per_day=5, today=date(2024, 1, 20)
    ) as fake:
        before = export(fake, from_date="2024-01-01", to_date="2024-01-05")
        after = export(fake, from_date="2024-01-13", to_date="2024-01-20")
    for response in (before, after):
        assert response.status_code == 200
        assert response.content == b""
        assert "Content-Encoding" not in response.headers


def test_events_per_day_callable():
    def per_day(day):
        return 0 if day.weekday() >= 5 else 10

    with FakeMixpanel(start=date(2024, 1, 5), days=4, events_per_day=per_day) as fake:
        got = lines_of(export(fake, from_date="2024-01-05", to_date="2024-01-08"))
    assert len(got) == 20  # Friday and Monday only


def test_event_filter(server):
    response = export(
        server, from_date="2024-01-01", to_date="2024-01-03", event='["Purchase", "Login"]'
    )
    got = lines_of(response)
    expected = list(server.events(START, date(2024, 1, 3), event_names=["Purchase", "Login"]))
    assert got == expected
    assert got
    assert {e["event"] for e in got} <= {"Purchase", "Login"}


def test_where_filter(server):
    response = export(
        server,
        from_date="2024-01-01",
        to_date="2024-01-03",
        where='properties["$city"] == "Zürich"',
    )
    got = lines_of(response)
    expected = [
        e for e in server.events(START, date(2024, 1, 3)) if e["properties"]["$city"] == "Zürich"
    ]
    assert got == expected
    assert got


def test_time_in_ms(server):
    seconds = list(server.events(START, START))
    millis = lines_of(
        export(server, from_date="2024-01-01", to_date="2024-01-01", time_in_ms="true")
    )
    assert millis == list(server.events(START, START, time_in_ms=True))
    assert [e["properties"]["time"] // 1000 for e in millis] == [
        e["properties"]["time"] for e in seconds
    ]
    assert any(e["properties"]["time"] % 1000 for e in millis)


def test_limit(server):
    got = lines_of(export(server, from_date="2024-01-01", to_date="2024-01-05", limit="7"))
    assert got == list(server.events(START, date(2024, 1, 5)))[:7]


def test_local_epoch_time_for_non_utc_projects():
    # 2024-03-10 is the US spring-forward day: offset -5h before 2am local, -4h after.
    with FakeMixpanel(
        start=date(2024, 3, 9), days=2, events_per_day=200, timezone="America/New_York"
    ) as fake:
        for day, low, high in (
            (date(2024, 3, 9), 5 * 3600, 5 * 3600),
            (date(2024, 3, 10), 4 * 3600, 5 * 3600),
        ):
            for event in fake.events(day, day):
                props = event["properties"]
                assert utc_day(props["time"]) == day
                lag = props["mp_processing_time_ms"] // 1000 - props["time"]
                assert low + 1 <= lag <= high + 901


def test_duplicates_share_insert_id():
    with FakeMixpanel(start=START, days=1, events_per_day=100, duplicate_rate=0.1) as fake:
        got = lines_of(export(fake, from_date="2024-01-01", to_date="2024-01-01"))
    assert len(got) == 110
    assert len({e["properties"]["$insert_id"] for e in got}) == 100


def test_add_days_and_late_events():
    with FakeMixpanel(
        start=START, days=3, events_per_day=200, late_fraction=0.3, late_days=2
    ) as fake:
        assert export(fake, from_date="2024-01-04", to_date="2024-01-04").status_code == 400
        last_day_before = lines_of(export(fake, from_date="2024-01-03", to_date="2024-01-03"))
        assert len(last_day_before) < 200
        fake.add_days(2)
        assert fake.today == date(2024, 1, 5)
        last_day_after = lines_of(export(fake, from_date="2024-01-03", to_date="2024-01-03"))
        assert len(last_day_after) == 200
        assert {e["properties"]["$insert_id"] for e in last_day_before} < {
            e["properties"]["$insert_id"] for e in last_day_after
        }
        new_days = lines_of(export(fake, from_date="2024-01-04", to_date="2024-01-05"))
        assert new_days == list(fake.events(date(2024, 1, 4), date(2024, 1, 5)))
        assert new_days
        with pytest.raises(ValueError, match="n must be"):
            fake.add_days(-1)


def test_cache_bodies_serves_the_same_bytes():
    with FakeMixpanel(start=START, days=2, events_per_day=50, cache_bodies=True) as fake:
        params = {"from_date": "2024-01-01", "to_date": "2024-01-02"}
        first = export(fake, **params)
        second = export(fake, **params)
        plain = export(fake, headers={"Accept-Encoding": "identity"}, **params)
        assert first.headers["Content-Encoding"] == "gzip"
        assert "Content-Encoding" not in plain.headers
        assert first.content == second.content == plain.content
        assert lines_of(first) == list(fake.events(START, date(2024, 1, 2)))
        fake.faults = Faults(cut_rate=1.0)
        with pytest.raises(
            (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)
        ):
            export(fake, **params).content  # noqa: B018
        fake.faults = Faults(stall_rate=1.0, stall_seconds=0.05, seed=3)
        assert export(fake, **params).content == first.content


# -- faults --------------------------------------------------------------------------------------


def run_fault_sequence(faults):
    with FakeMixpanel(start=START, days=3, events_per_day=50, faults=faults) as fake:
        for _ in range(4):
            for day in ("2024-01-01", "2024-01-02", "2024-01-03"):
                with contextlib.suppress(requests.exceptions.RequestException):
                    export(fake, from_date=day, to_date=day).content  # noqa: B018
        return [(r.from_date, r.status, r.fault) for r in wait_for_log(fake, 12)]


def test_faults_are_reproducible_from_the_seed():
    def faults(seed):
        return Faults(
            seed=seed,
            cut_rate=0.2,
            terminated_early_rate=0.2,
            invalid_json_rate=0.2,
            rate_429=0.1,
            rate_5xx=0.1,
        )

    first = run_fault_sequence(faults(7))
    assert first == run_fault_sequence(faults(7))
    assert first != run_fault_sequence(faults(8))
    assert {fault for _, _, fault in first} - {None}


def drain(response, received):
    for chunk in response.iter_content(8192):
        received += chunk


@pytest.mark.parametrize("encoding", ["gzip", "identity"])
def test_cut_breaks_the_chunked_stream(encoding):
    with FakeMixpanel(
        start=START, days=2, events_per_day=300, faults=Faults(cut_rate=1.0, seed=1)
    ) as fake:
        received = bytearray()
        response = export(
            fake,
            stream=True,
            headers={"Accept-Encoding": encoding},
            from_date="2024-01-01",
            to_date="2024-01-02",
        )
        assert response.status_code == 200
        with pytest.raises(
            (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)
        ):
            drain(response, received)
        fake.faults = Faults()
        full = export(fake, from_date="2024-01-01", to_date="2024-01-02").content
        assert len(received) < len(full)
        assert full.startswith(bytes(received))
        assert wait_for_log(fake, 1)[0].fault == "cut"


def test_cut_of_an_empty_body():
    with (
        FakeMixpanel(start=START, days=1, events_per_day=0, faults=Faults(cut_rate=1.0)) as fake,
        pytest.raises(
            (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)
        ),
    ):
        export(fake, from_date="2024-01-01", to_date="2024-01-01").content  # noqa: B018


def test_terminated_early():
    with FakeMixpanel(
        start=START, days=2, events_per_day=100, faults=Faults(terminated_early_rate=1.0, seed=5)
    ) as fake:
        response = export(fake, from_date="2024-01-01", to_date="2024-01-02")
        assert response.status_code == 200
        lines = response.text.splitlines()
        assert lines[-1] == TERMINATED_EARLY_LINE
        assert "terminated early" in lines[-1]
        got = [json.loads(line) for line in lines[:-1]]
        assert got == list(fake.events(START, date(2024, 1, 2)))[: len(got)]
        assert len(got) < 200
        empty = export(fake, from_date="2023-12-30", to_date="2023-12-31")
        assert empty.text.splitlines() == [TERMINATED_EARLY_LINE]


def test_invalid_json_line():
    with FakeMixpanel(
        start=START, days=1, events_per_day=50, faults=Faults(invalid_json_rate=1.0, seed=2)
    ) as fake:
        lines = export(fake, from_date="2024-01-01", to_date="2024-01-01").text.splitlines()
        expected = list(fake.events(START, START))
    assert len(lines) == 50
    bad = []
    for index, line in enumerate(lines):
        try:
            assert json.loads(line) == expected[index]
        except json.JSONDecodeError:
            bad.append(index)
    assert len(bad) == 1


@pytest.mark.parametrize(("retry_after", "header"), [(2, "2"), (0.5, "0.5"), (None, None)])
def test_429_with_retry_after(retry_after, header):
    with FakeMixpanel(
        start=START, days=1, events_per_day=5, faults=Faults(rate_429=1.0, retry_after=retry_after)
    ) as fake:
        response = export(fake, from_date="2024-01-01", to_date="2024-01-01")
    assert response.status_code == 429
    assert response.headers.get("Retry-After") == header
    assert "rate limit" in response.json()["error"]


def test_5xx_plain_text():
    with FakeMixpanel(start=START, days=1, events_per_day=5, faults=Faults(rate_5xx=1.0)) as fake:
        for _ in range(3):
            response = export(fake, from_date="2024-01-01", to_date="2024-01-01")
            assert response.status_code in (500, 502, 503)
            assert response.headers["Content-Type"].startswith("text/plain")
            with pytest.raises(ValueError):  # noqa: PT011 - plain text is the point
                response.json()


def test_fail_ranges_and_fail_dates_fail_every_attempt():
    faults = Faults(fail_ranges={("2024-01-02", "2024-01-02"): 503}, fail_dates={"2024-01-03"})
    with FakeMixpanel(start=START, days=4, events_per_day=5, faults=faults) as fake:
        for _ in range(3):
            assert export(fake, from_date="2024-01-02", to_date="2024-01-02").status_code == 503
            assert export(fake, from_date="2024-01-01", to_date="2024-01-04").status_code == 500
        assert export(fake, from_date="2024-01-01", to_date="2024-01-01").status_code == 200
        assert export(fake, from_date="2024-01-04", to_date="2024-01-04").status_code == 200
        # tests swap faults between runs
        fake.faults = Faults()
        assert export(fake, from_date="2024-01-02", to_date="2024-01-02").status_code == 200


@pytest.mark.parametrize("status", [401, 402, 403])
def test_status_override(status):
    with FakeMixpanel(
        start=START, days=1, events_per_day=5, faults=Faults(status_override=status)
    ) as fake:
        response = export(fake, from_date="2024-01-01", to_date="2024-01-01")
        assert response.status_code == status
        assert wait_for_log(fake, 1)[0].fault == "status_override"


def test_max_concurrent_answers_429_when_exceeded():
    with FakeMixpanel(
        start=START,
        days=1,
        events_per_day=5,
        latency=0.5,
        faults=Faults(max_concurrent=2, retry_after=1),
    ) as fake:
        barrier = threading.Barrier(4)

        def call(_):
            barrier.wait()
            return export(fake, from_date="2024-01-01", to_date="2024-01-01")

        with ThreadPoolExecutor(4) as pool:
            responses = list(pool.map(call, range(4)))
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200, 200, 429, 429]
        assert all(r.headers["Retry-After"] == "1" for r in responses if r.status_code == 429)
        assert fake.max_in_flight == 4
        assert sum(r.fault == "concurrency" for r in wait_for_log(fake, 4)) == 2


def test_stall_times_out_the_client_and_stop_is_prompt():
    fake = FakeMixpanel(
        start=START, days=1, events_per_day=2000, faults=Faults(stall_rate=1.0, stall_seconds=30)
    ).start()
    try:
        for _ in range(2):  # one stall before the headers, one mid-body (seeded)
            with pytest.raises((requests.exceptions.Timeout, requests.exceptions.ConnectionError)):
                export(fake, timeout=0.3, from_date="2024-01-01", to_date="2024-01-01").content  # noqa: B018
        assert fake.in_flight >= 1
    finally:
        began = time.monotonic()
        fake.stop()
    assert time.monotonic() - began < 5  # liveness: a stalled handler would hold it longer
    fake.stop()  # idempotent


def test_short_stalls_still_deliver_everything():
    with FakeMixpanel(
        start=START, days=1, events_per_day=300, faults=Faults(stall_rate=1.0, stall_seconds=0.02)
    ) as fake:
        expected = list(fake.events(START, START))
        for _ in range(6):
            response = export(fake, from_date="2024-01-01", to_date="2024-01-01")
            assert lines_of(response) == expected
        assert {r.fault for r in wait_for_log(fake, 6)} == {"stall"}


# -- accounting, pacing, lifecycle ---------------------------------------------------------------


def test_requests_log_and_max_in_flight():
    with FakeMixpanel(start=START, days=3, events_per_day=5, latency=0.3) as fake:
        with pytest.raises(RuntimeError):
            FakeMixpanel(start=START, days=1).url  # noqa: B018 - not started
        barrier = threading.Barrier(3)

        def call(day):
            barrier.wait()
            return export(fake, from_date=day, to_date=day)

        began = time.monotonic()
        with ThreadPoolExecutor(3) as pool:
            responses = list(pool.map(call, ["2024-01-01", "2024-01-02", "2024-01-03"]))
        assert time.monotonic() - began >= 0.3
        assert all(r.status_code == 200 for r in responses)
        log = wait_for_log(fake, 3)
        assert fake.max_in_flight == 3
        assert sorted(r.from_date for r in log) == ["2024-01-01", "2024-01-02", "2024-01-03"]
        for record in log:
            assert record.path == EXPORT_PATH
            assert record.status == 200
            assert record.fault is None
            assert record.to_date == record.from_date
            assert record.params["project_id"] == "12345"
            assert record.ended - record.started >= 0.3
            assert record.bytes_sent > 0
            assert "authorization" not in {name.lower() for name in record.headers}
            assert "User-Agent" in record.headers
        fake.reset_stats()
        assert fake.requests_log == []
        assert fake.max_in_flight == 0


def test_bytes_per_second_throttles_each_connection():
    with FakeMixpanel(start=START, days=1, events_per_day=100, bytes_per_second=200_000) as fake:
        began = time.monotonic()
        body = export(
            fake,
            headers={"Accept-Encoding": "identity"},
            from_date="2024-01-01",
            to_date="2024-01-01",
        ).content
        elapsed = time.monotonic() - began
    assert len(body) > 50_000
    assert elapsed >= (len(body) - 16 * 1024) / 200_000


def test_client_hanging_up_is_logged():
    with FakeMixpanel(start=START, days=1, events_per_day=20_000) as fake:
        host, port = fake.url.removeprefix("http://").split(":")
        token = base64.b64encode(b"svc-user:svc-secret").decode()
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(
                f"GET {EXPORT_PATH}?from_date=2024-01-01&to_date=2024-01-01&project_id=12345 "
                f"HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {token}\r\n\r\n".encode()
            )
            assert sock.recv(1024).startswith(b"HTTP/1.1 200")
        record = wait_for_log(fake, 1)[0]
    assert record.fault == "client_disconnected"
    assert record.bytes_sent < 20_000 * 590


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "tap_mixpanel_parallel.testing.fake_server", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env=env,
    )
    line = process.stdout.readline().strip()
    if not line.startswith("FAKE_MIXPANEL_URL=http://127.0.0.1:"):
        process.kill()
        _, errors = process.communicate()
        pytest.fail(f"no URL line: {line!r}\n{errors}")
    return process, line.split("=", 1)[1]


class _Url:
    def __init__(self, url):
        self.url = url


def test_cli_prints_url_and_serves_until_sigterm():
    process, url = _cli("--start", "2024-01-01", "--days", "2", "--events-per-day", "7")
    try:
        response = export(_Url(url), from_date="2024-01-01", to_date="2024-01-02")
        assert response.status_code == 200
        assert len(response.text.splitlines()) == 14
    finally:
        process.terminate()
        rest, _ = process.communicate(timeout=10)
    assert process.returncode == 0
    assert rest == ""  # exactly one line on stdout


def test_cli_legacy_secret_and_faults():
    process, url = _cli(
        "--start",
        "2024-01-01",
        "--days",
        "1",
        "--api-secret",
        "legacy",
        "--rate-429",
        "1",
        "--retry-after",
        "3",
        "--seed",
        "4",
        "--today",
        "2024-01-02",
    )
    try:
        target = _Url(url)
        rejected = export(target, from_date="2024-01-01", to_date="2024-01-01")
        assert rejected.status_code == 401  # service accounts disabled
        limited = export(target, auth=("legacy", ""), from_date="2024-01-02", to_date="2024-01-02")
        assert limited.status_code == 429
        assert limited.headers["Retry-After"] == "3"
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=10)
    assert process.returncode == 0


def test_start_is_idempotent_and_context_manager_stops():
    fake = FakeMixpanel(start=START, days=1, events_per_day=1)
    with fake:
        assert fake.start() is fake
        url = fake.url
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(url + EXPORT_PATH, timeout=2)
    with pytest.raises(ValueError, match="days"):
        FakeMixpanel(start=START, days=-1)
    assert FakeMixpanel(start=START, days=3).today == START + timedelta(days=2)


# Every flag scripts, benchmarks and the docs use, with a value that is not its default: the
# flags are derived from the option fields, so renaming a field would silently rename a flag.
FLAG_VALUES = {
    "--start": "2024-01-01",
    "--days": "3",
    "--events-per-day": "7",
    "--today": "2024-01-05",
    "--timezone": "Asia/Tokyo",
    "--event-bytes": "800",
    "--late-fraction": "0.25",
    "--late-days": "2",
    "--duplicate-rate": "0.5",
    "--awkward-events": None,
    "--profiles": "11",
    "--cohorts": "4",
    "--funnels": "3",
    "--annotations": "6",
    "--group-cohorts": "1",
    "--funnel-window-days": "3",
    "--annotation-extras": None,
    "--max-page-size": "50",
    "--where-strict-grammar": None,
    "--awkward-profiles": None,
    "--project-id": "9",
    "--api-secret": "legacy",
    "--latency": "0.5",
    "--bytes-per-second": "1000",
    "--throttle-payload": None,
    "--cache-bodies": None,
    "--host": "127.0.0.2",
    "--port": "1234",
    "--username": "u",
    "--secret": "p",
    "--seed": "4",
    "--cut-rate": "0.1",
    "--terminated-early-rate": "0.2",
    "--invalid-json-rate": "0.3",
    "--rate-429": "0.4",
    "--retry-after": "2.5",
    "--rate-5xx": "0.6",
    "--stall-rate": "0.7",
    "--stall-seconds": "8",
    "--max-concurrent": "5",
    "--fail-date": "2024-01-02",
    "--status-override": "503",
    "--echo-credentials": None,
    "--echo-padding": "4000",
    "--error-message": "Timeout Error.",
    "--throttle-first": "2",
    "--drip-seconds": "0.5",
    "--drip-headers": None,
    "--gzip-trailer-cut": "1",
    "--cut-longer-than-days": "3",
    "--expire-sessions": "2",
    "--expire-after-pages": "3",
    "--session-gone-status": "410",
    "--status-error-page": "2",
    "--status-error-times": "3",
    "--status-error-results": None,
    "--status-error-message": "Oops.",
    "--engage-no-total": None,
    "--short-page": "4",
    "--short-page-sessions": "2",
    "--shifting-sessions": "1",
}


def test_every_flag_means_the_keyword_of_the_same_name():
    argv = [part for flag, value in FLAG_VALUES.items() for part in (flag, value) if part]
    argv += ["--fail-date", "2024-01-03"]
    expected = ServerConfig(
        start=START,
        days=3,
        events_per_day=7,
        today=date(2024, 1, 5),
        timezone="Asia/Tokyo",
        event_bytes=800,
        late_fraction=0.25,
        late_days=2,
        duplicate_rate=0.5,
        awkward_events=True,
        profiles=11,
        cohorts=4,
        funnels=3,
        annotations=6,
        group_cohorts=1,
        funnel_window_days=3,
        annotation_extras=True,
        max_page_size=50,
        where_strict_grammar=True,
        awkward_profiles=True,
        service_account=("u", "p"),
        project_id=9,
        api_secret="legacy",
        latency=0.5,
        bytes_per_second=1000.0,
        throttle_payload=True,
        cache_bodies=True,
        host="127.0.0.2",
        port=1234,
        faults=Faults(
            seed=4,
            cut_rate=0.1,
            terminated_early_rate=0.2,
            invalid_json_rate=0.3,
            rate_429=0.4,
            retry_after=2.5,
            rate_5xx=0.6,
            stall_rate=0.7,
            stall_seconds=8.0,
            max_concurrent=5,
            fail_dates={"2024-01-02", "2024-01-03"},
            status_override=503,
            echo_credentials=True,
            echo_padding=4000,
            error_message="Timeout Error.",
            throttle_first=2,
            drip_seconds=0.5,
            drip_headers=True,
            gzip_trailer_cut=1,
            cut_longer_than_days=3,
            expire_sessions=2,
            expire_after_pages=3,
            session_gone_status=410,
            status_error_page=2,
            status_error_times=3,
            status_error_results=True,
            status_error_message="Oops.",
            engage_no_total=True,
            short_page=4,
            short_page_sessions=2,
            shifting_sessions=1,
        ),
    )
    assert config_from_args(build_parser().parse_args(argv)) == expected
    # The parser knows no flag beyond these (and --help): a new option is a new row above.
    parser_flags = {
        flag for action in build_parser()._actions for flag in action.option_strings
    } - {"-h", "--help"}
    assert parser_flags == set(FLAG_VALUES)


def test_cli_defaults_are_the_keyword_defaults():
    config = config_from_args(build_parser().parse_args(["--start", "2024-01-01", "--days", "2"]))
    assert config == ServerConfig(start=START, days=2)
    legacy = ["--start", "2024-01-01", "--days", "2", "--api-secret", "s"]
    assert config_from_args(build_parser().parse_args(legacy)).service_account is None
    one_half = ["--start", "2024-01-01", "--days", "2", "--api-secret", "s", "--username", "u"]
    assert config_from_args(build_parser().parse_args(one_half)).service_account == (
        "u",
        "svc-secret",
    )


def test_a_config_and_keywords_build_the_same_server():
    config = ServerConfig(start=START, days=2, events_per_day=3, timezone="Asia/Tokyo")
    by_config = FakeMixpanel(config)
    by_keywords = FakeMixpanel(start=START, days=2, events_per_day=3, timezone="Asia/Tokyo")
    assert list(by_config.events(START, START)) == list(by_keywords.events(START, START))
    assert by_config.timezone == by_keywords.timezone == "Asia/Tokyo"
    assert FakeMixpanel(config, days=1).days == 1
    assert FakeMixpanel(start=START, days=1, faults=None).faults == Faults()
    with pytest.raises(TypeError, match="bogus"):
        FakeMixpanel(start=START, days=1, bogus=1)


# -- Mixpanel's odder answers ---------------------------------------------------------------------


def test_error_message_answers_with_mixpanels_error_json_echoing_the_request():
    faults = Faults(status_override=400, error_message="Unable to authenticate request")
    with FakeMixpanel(start=START, days=5, faults=faults) as fake:
        response = export(fake, from_date="2024-01-01", to_date="2024-01-02")
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "Unable to authenticate request"
    assert body["request"].startswith(EXPORT_PATH + "?")
    assert "to_date=2024-01-02" in body["request"]


def test_throttle_first_answers_429_then_serves():
    with FakeMixpanel(start=START, days=5, faults=Faults(throttle_first=2)) as fake:
        statuses = [export(fake, from_date="2024-01-01", to_date="2024-01-01").status_code]
        statuses += [export(fake, from_date="2024-01-02", to_date="2024-01-02").status_code]
        statuses += [export(fake, from_date="2024-01-01", to_date="2024-01-01").status_code]
    assert statuses == [429, 429, 200]


def test_gzip_trailer_cut_ends_cleanly_on_whole_lines_but_never_completes_the_gzip():
    with FakeMixpanel(
        start=START, days=5, events_per_day=40, faults=Faults(gzip_trailer_cut=1)
    ) as f:
        first = export(f, from_date="2024-01-01", to_date="2024-01-05", stream=True)
        raw = first.raw.read(decode_content=False)
        second = export(f, from_date="2024-01-01", to_date="2024-01-05")
    assert first.headers["Content-Encoding"] == "gzip"
    decoder = zlib.decompressobj(31)
    text = decoder.decompress(raw)
    assert not decoder.eof, "the gzip stream ended although its trailer was cut"
    assert text.endswith(b"\n") and 0 < text.count(b"\n") < 200
    assert len(lines_of(second)) == 200


def test_drip_sends_a_content_length_body_a_byte_at_a_time():
    with FakeMixpanel(start=START, days=5, events_per_day=1, faults=Faults(drip_seconds=0.01)) as f:
        response = export(f, from_date="2024-01-01", to_date="2024-01-01", stream=True)
        first = response.raw.read(3)
        response.close()
    assert int(response.headers["Content-Length"]) > 100
    assert "Transfer-Encoding" not in response.headers
    assert first == b'{"e'
    slow_headers = Faults(drip_seconds=0.01, drip_headers=True)
    with FakeMixpanel(start=START, days=5, events_per_day=1, faults=slow_headers) as f:
        host, port = f.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as conn:
            conn.sendall(
                b"GET " + EXPORT_PATH.encode() + b"?from_date=2024-01-01&to_date=2024-01-01"
                b"&project_id=12345 HTTP/1.1\r\nHost: x\r\nAuthorization: Basic "
                + base64.b64encode(b"svc-user:svc-secret")
                + b"\r\n\r\n"
            )
            assert conn.recv(100) == b"H", "the status line comes a byte at a time"


def test_extra_lines_are_appended_verbatim_to_exports_covering_their_day():
    faults = Faults(extra_lines={"2024-01-02": ["not json at all", '{"event":"x"}']})
    with FakeMixpanel(start=START, days=5, events_per_day=3, faults=faults) as fake:
        covering = export(fake, from_date="2024-01-01", to_date="2024-01-03").text.splitlines()
        other = export(fake, from_date="2024-01-04", to_date="2024-01-05").text.splitlines()
    assert covering[-2:] == ["not json at all", '{"event":"x"}']
    assert len(covering) == 11
    assert len(other) == 6

"""Ranges Mixpanel cannot serve whole, end to end: the real CLI against a fake server that cuts
every request for more than two days ('export terminated early'), as Mixpanel does with a range
too large for it."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections import Counter

from tap_mixpanel_parallel.export.partitions import PlannedPartition
from tap_mixpanel_parallel.export.runner import PartitionRunner, Spooled
from tap_mixpanel_parallel.http.errors import StreamCut
from tap_mixpanel_parallel.http.limiter import RateLimiter
from tap_mixpanel_parallel.run.dates import Partition, split_date_range
from tap_mixpanel_parallel.testing.fake_server import Faults
from tests.helpers import all_ids, assert_exactly_once, base_config, export_requests

D = dt.date
START = D(2024, 1, 1)


def days_of(request) -> int:
    return (D.fromisoformat(request.to_date) - D.fromisoformat(request.from_date)).days + 1


def test_a_server_that_cuts_ranges_over_two_days_still_delivers_every_event_once(
    fake_server, run_tap
):
    server = fake_server(
        start=START, days=30, events_per_day=25, faults=Faults(cut_longer_than_days=2)
    )
    run = run_tap(base_config(server, max_workers=4))
    assert run.returncode == 0, run.stderr[-3000:]
    assert_exactly_once(run, server)
    assert run.bookmark["replication_key_value"] == server.today.isoformat()
    assert run.bookmark["failed_partitions"] == []
    requests = export_requests(server)
    served = [r for r in requests if r.fault is None]
    assert served and all(days_of(r) <= 2 for r in served)
    assert {r.fault for r in requests if days_of(r) > 2} == {"too_large"}
    # each 7-day week: cut whole, then 4+3, then 2+2+2+1: seven requests, fewer once the sizes
    # Mixpanel keeps cutting are split up front; no range is ever asked for twice
    ranges = [(r.from_date, r.to_date) for r in requests]
    assert len(ranges) == len(set(ranges))
    assert len(requests) <= 4 * 7 + 1  # the last partition, 29..30, is served whole
    assert "fetching it in halves" in run.stderr
    assert "piece 2024-01-01..2024-01-02" in run.stderr
    assert "export finished: 750 records, 5 partitions ok, 0 failed" in run.stderr


def test_fit_budget_plans_larger_partitions_that_fit_the_hour(fake_server, run_tap):
    server = fake_server(start=START, days=40, events_per_day=10)
    # 40 days at 7 a partition is 6 requests; an hour of 5 plans at most 4, so 10 days each.
    config = base_config(
        server, max_workers=2, max_requests_per_hour=5, partition_mode="fit_budget"
    )
    run = run_tap(config)
    assert run.returncode == 0, run.stderr[-3000:]
    assert_exactly_once(run, server)
    assert sorted((r.from_date, r.to_date) for r in export_requests(server)) == [
        ("2024-01-01", "2024-01-10"),
        ("2024-01-11", "2024-01-20"),
        ("2024-01-21", "2024-01-30"),
        ("2024-01-31", "2024-02-09"),
    ]
    assert "plan: 4 export requests (10-day partitions, partition_mode fit_budget" in run.stderr


def test_a_day_that_still_fails_is_kept_at_its_size_and_the_rest_is_delivered(fake_server, run_tap):
    server = fake_server(
        start=START,
        days=14,
        events_per_day=10,
        faults=Faults(cut_longer_than_days=2, fail_dates={"2024-01-05"}),
    )
    config = base_config(server, max_retries=1)
    run = run_tap(config)
    assert run.returncode == 1, run.stderr[-3000:]
    failed = run.bookmark["failed_partitions"]
    assert [(f["from_date"], f["to_date"]) for f in failed] == [("2024-01-05", "2024-01-06")]
    owed = {e["properties"]["$insert_id"] for e in server.events(D(2024, 1, 5), D(2024, 1, 6))}
    assert sorted(run.insert_ids()) == sorted(set(all_ids(server)) - owed)
    assert run.bookmark["replication_key_value"] == "2024-01-14"

    server.faults = Faults(cut_longer_than_days=2)
    again = run_tap(config, state=run.last_state)
    assert again.returncode == 0, again.stderr[-3000:]
    assert sorted(again.insert_ids()) == sorted(owed)
    assert again.bookmark["failed_partitions"] == []


def committed(stdout_lines: list[str]) -> list[str]:
    """The records a target keeps from a killed run: those followed by a STATE message."""
    kept: list[str] = []
    pending: list[str] = []
    for line in stdout_lines:
        message = json.loads(line)
        if message["type"] == "RECORD":
            pending.append(message["record"]["insert_id"])
        elif message["type"] == "STATE":
            kept += pending
            pending = []
    return kept


def test_killed_mid_split_and_resumed_every_event_once(fake_server, start_tap, run_tap):
    server = fake_server(
        start=START,
        days=21,
        events_per_day=20,
        latency=0.3,
        faults=Faults(cut_longer_than_days=2),
    )
    config = base_config(server, max_workers=1)
    tap = start_tap(config)
    lines: list[str] = []
    states = 0
    assert tap.stdout is not None
    for line in tap.stdout:
        lines.append(line)
        message = json.loads(line)
        if message["type"] == "STATE":
            events = message["value"]["bookmarks"].get("events", {})
            states += "replication_key_value" in events
        if states == 2:  # two pieces of the first week are settled, one STATE each
            break
    tap.kill()
    tap.wait()
    last_state = [json.loads(line)["value"] for line in lines if '"type":"STATE"' in line][-1]
    bookmark = last_state["bookmarks"]["events"]["replication_key_value"]
    assert bookmark == "2024-01-04"

    rest = run_tap(config, state=last_state)
    assert rest.returncode == 0, rest.stderr[-3000:]
    delivered = committed(lines) + rest.insert_ids()
    assert Counter(delivered).most_common(1)[0][1] == 1, "an event was delivered twice"
    assert sorted(delivered) == all_ids(server)


# -- the runner alone, with an in-memory attempt -------------------------------------------------


def in_memory_runner(attempt, retries=3):
    return PartitionRunner(
        attempt=attempt,
        limiter=RateLimiter(max_concurrent=2, per_second=1000, per_hour=100000),
        max_workers=2,
        max_retries=retries,
        logger=logging.getLogger("test-splitting"),
        backoff_factor=0.01,
    )


def cuts_over(limit):
    """An attempt that spools one line per day, and cuts any range over ``limit`` days halfway."""

    def attempt(planned, sink, stop):
        part = planned.partition
        for i in range(part.days):
            if part.days > limit and i == part.days // 2:
                raise StreamCut("export terminated early")
            sink.write(f"{part.from_date + dt.timedelta(days=i)}\n".encode())
        return Spooled(part.days)

    return attempt


def test_the_runner_hands_back_the_pieces_of_a_cut_partition_in_date_order():
    plan = [
        PlannedPartition(p, retry_of_failed=False)
        for p in split_date_range(START, D(2024, 1, 14), 7)
    ]
    results = []
    for r in in_memory_runner(cuts_over(2)).run(plan):
        results.append((r.index, str(r.part), r.ok, r.last, r.spool.read_text()))
    assert [(i, part, last) for i, part, _, last, _ in results] == [
        (0, "2024-01-01..2024-01-02", False),
        (0, "2024-01-03..2024-01-04", False),
        (0, "2024-01-05..2024-01-06", False),
        (0, "2024-01-07..2024-01-07", True),
        (1, "2024-01-08..2024-01-09", False),
        (1, "2024-01-10..2024-01-11", False),
        (1, "2024-01-12..2024-01-13", False),
        (1, "2024-01-14..2024-01-14", True),
    ]
    spooled = "".join(text for *_, text in results).split()
    assert spooled == [str(START + dt.timedelta(days=i)) for i in range(14)]


def test_without_retries_a_cut_partition_fails_whole_and_is_not_split():
    plan = [PlannedPartition(Partition(START, D(2024, 1, 7)), retry_of_failed=False)]
    (result,) = in_memory_runner(cuts_over(2), retries=0).run(plan)
    assert (result.ok, str(result.part), result.attempts) == (False, "2024-01-01..2024-01-07", 1)


def test_a_day_that_is_always_cut_fails_at_one_day_and_its_neighbours_are_served():
    plan = [PlannedPartition(Partition(START, D(2024, 1, 4)), retry_of_failed=False)]
    always = D(2024, 1, 3)

    def attempt(planned, sink, stop):
        if planned.partition.from_date <= always <= planned.partition.to_date:
            raise StreamCut("export terminated early")
        sink.write(b"x\n" * planned.partition.days)
        return Spooled(planned.partition.days)

    results = [(str(r.part), r.ok, r.attempts) for r in in_memory_runner(attempt, 2).run(plan)]
    assert results == [
        ("2024-01-01..2024-01-02", True, 1),
        ("2024-01-03..2024-01-03", False, 3),
        ("2024-01-04..2024-01-04", True, 1),
    ]


def test_the_plan_is_logged_before_the_first_request(fake_server, start_tap):
    server = fake_server(start=START, days=730, events_per_day=1, latency=0.2)
    tap = start_tap(base_config(server, max_requests_per_hour=60, max_requests_per_second=3))
    assert tap.stderr is not None
    before: list[str] = []
    for line in tap.stderr:
        before.append(line)
        if "plan:" in line:
            break
    tap.kill()
    tap.wait()
    plan = before[-1]
    assert "105 export requests (7-day partitions, partition_mode fixed, 0 retried" in plan
    assert "at least 3 Query API requests" in plan  # annotations, cohorts, engage
    assert "60 export requests an hour, 3 a second, 10 at once" in plan
    assert "in no less than 1h01m" in plan
    assert not any("partition 1/" in line for line in before)


def test_the_plan_under_fit_budget_fits_the_hour(fake_server, start_tap):
    server = fake_server(start=START, days=730, events_per_day=1, latency=0.2)
    config = base_config(
        server, max_requests_per_hour=60, max_requests_per_second=3, partition_mode="fit_budget"
    )
    tap = start_tap(config)
    assert tap.stderr is not None
    for line in tap.stderr:
        if "plan:" in line:
            break
    tap.kill()
    tap.wait()
    assert "46 export requests (16-day partitions, partition_mode fit_budget" in line
    assert "in no less than 15s" in line


def test_a_state_written_under_fit_budget_resumes_under_fixed(fake_server, run_tap):
    server = fake_server(
        start=START,
        days=40,
        events_per_day=10,
        faults=Faults(fail_ranges={("2024-01-11", "2024-01-20"): 500}),
    )
    fitted = base_config(
        server, max_workers=2, max_requests_per_hour=5, partition_mode="fit_budget", max_retries=0
    )
    first = run_tap(fitted)
    assert first.returncode == 1, first.stderr[-3000:]
    owed = [(f["from_date"], f["to_date"]) for f in first.bookmark["failed_partitions"]]
    assert owed == [("2024-01-11", "2024-01-20")]  # kept at the size fit_budget planned

    server.faults = Faults()
    server.reset_stats()
    second = run_tap(base_config(server), state=first.last_state)  # fixed, 7-day partitions
    assert second.returncode == 0, second.stderr[-3000:]
    assert [(r.from_date, r.to_date) for r in export_requests(server)] == owed
    delivered = first.insert_ids() + second.insert_ids()
    assert Counter(delivered).most_common(1)[0][1] == 1
    assert sorted(delivered) == all_ids(server)
    assert second.bookmark["failed_partitions"] == []

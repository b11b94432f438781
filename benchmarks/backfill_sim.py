"""A backfill against Mixpanel's export limits, in simulated time: no request, no sleep.

What a user with years of history waits on is Mixpanel: 60 export requests an hour, 3 a second,
100 at once, a time to first byte that grows with the range, a transfer rate per request, and
ranges too large to be served whole. None of that can be waited out in a test, so this script
runs the tap's own pure functions (``plan_run`` for the partitions, ``Pieces``,
``after_failure`` and ``too_large_days`` for retries and splits, ``settle_done`` and
``settle_failed`` for the state, the limiter's ``SlidingWindow`` for the budgets) against a
model of Mixpanel on a virtual clock, with the runner's look-ahead window (``2 x max_workers``
partitions past the one being written) and its backoff, and prints the wall time of each
partition strategy side by side.

    .venv/bin/python benchmarks/backfill_sim.py            # the table
    .venv/bin/python benchmarks/backfill_sim.py --json out.json

Every strategy's result is checked: each day is delivered once or owed in ``failed_partitions``
once, never both, never twice. The exit code is 1 when a check fails, 0 otherwise; the goals
(the plan at least 2x faster than fixed 7-day partitions where the budget binds, never slower
where it does not, every too-large week delivered) are printed as "meets goal" / "BELOW GOAL".
"""

from __future__ import annotations

import argparse
import datetime as dt
import heapq
import json
import sys
from collections import Counter
from collections.abc import Generator
from dataclasses import asdict, dataclass, field

from tap_mixpanel_parallel.export.plan import (
    FIT_BUDGET,
    FIXED,
    GIVE_UP,
    SPLIT,
    Pieces,
    after_failure,
    can_split,
    duration,
    least_seconds,
    plan_run,
    too_large_days,
)
from tap_mixpanel_parallel.export.state import ExportState, settle_done, settle_failed
from tap_mixpanel_parallel.http.limiter import (
    WINDOW_MARGIN_SECONDS,
    SlidingWindow,
    per_second_window,
)
from tap_mixpanel_parallel.http.retry import MAX_BACKOFF_SECONDS
from tap_mixpanel_parallel.run.dates import Partition

START = dt.date(2023, 1, 2)
TODAY = dt.date(2030, 1, 1)


@dataclass(frozen=True)
class Project:
    """A Mixpanel project as the export API serves it."""

    name: str
    days: int
    #: Seconds one request streams per day of ordinary events (volume / transfer rate).
    transfer_per_day: float = 5.0
    #: Every this-many-th week holds ``large_factor`` times the events (a launch, a backfill).
    large_every: int = 26
    large_factor: float = 10.0
    #: Time to first byte: Mixpanel scans the range before it sends anything.
    ttfb_base: float = 15.0
    ttfb_per_day: float = 1.0
    #: Mixpanel ends a response that streams longer than this ('export terminated early').
    cut_after: float = 240.0

    def volume(self, day: int) -> float:
        """Transfer seconds of day ``day`` (0 is the first)."""
        week = day // 7
        large = self.large_every and week % self.large_every == self.large_every // 2
        return self.transfer_per_day * (self.large_factor if large else 1.0)

    def too_large_weeks(self) -> list[Partition]:
        """The weeks no request of seven days can fetch whole."""
        weeks = []
        for week in range(-(-self.days // 7)):
            days = range(week * 7, min(week * 7 + 7, self.days))
            if sum(self.volume(d) for d in days) > self.cut_after:
                first = START + dt.timedelta(days=days[0])
                weeks.append(Partition(first, START + dt.timedelta(days=days[-1])))
        return weeks


@dataclass(frozen=True)
class Limits:
    """Mixpanel's budgets and the tap's settings."""

    per_hour: int = 60
    per_second: float = 3
    max_concurrent: int = 100
    max_workers: int = 10
    max_retries: int = 5
    request_timeout: float = 600.0


@dataclass(frozen=True)
class Strategy:
    """How partitions are sized, and whether a cut range is fetched again in halves."""

    name: str
    mode: str
    partition_days: int
    split: bool


STRATEGIES = (
    Strategy("fixed 7-day (before)", FIXED, 7, split=False),
    Strategy("fixed 30-day (singer-io size)", FIXED, 30, split=False),
    Strategy("fixed 7-day + halves (default)", FIXED, 7, split=True),
    Strategy("fit_budget + halves (plan)", FIT_BUDGET, 7, split=True),
)
BASELINE = STRATEGIES[0].name
DEFAULT = STRATEGIES[2].name
PLAN = STRATEGIES[-1].name


@dataclass
class Outcome:
    """One strategy's simulated run."""

    strategy: str
    partitions: int
    requests: int = 0
    cut_or_timed_out: int = 0
    wall_seconds: float = 0.0
    floor_seconds: float = 0.0
    days_delivered: int = 0
    days_owed: int = 0
    too_large_weeks_delivered: int = 0
    too_large_weeks: int = 0
    errors: list[str] = field(default_factory=list)


def serve(project: Project, limits: Limits, piece: Partition) -> tuple[bool, float]:
    """Whether Mixpanel serves ``piece`` whole, and after how many seconds the request ends."""
    first = (piece.from_date - START).days
    transfer = sum(project.volume(first + i) for i in range(piece.days))
    ttfb = project.ttfb_base + project.ttfb_per_day * piece.days
    if transfer > project.cut_after:
        end = ttfb + project.cut_after
        return False, min(end, limits.request_timeout)
    if ttfb + transfer > limits.request_timeout:
        return False, limits.request_timeout
    return True, ttfb + transfer


#: What a partition's worker asks of the simulated world: a request for a range, or a pause.
Ask = tuple[str, Partition | float]


@dataclass
class Sizes:
    """The sizes of the ranges cut and served so far in a run, shared by its workers."""

    cut: list[int] = field(default_factory=list)
    served: list[int] = field(default_factory=list)


def worker(
    planned: Partition, limits: Limits, strategy: Strategy, sizes: Sizes
) -> Generator[Ask, bool, list[tuple[Partition, bool]]]:
    """One partition as the runner's worker fetches it: pieces, retries, backoff, halves."""
    pieces = Pieces.of(planned)
    done: list[tuple[Partition, bool]] = []
    while (piece := pieces.next) is not None:
        ceiling = too_large_days(sizes.cut, sizes.served) if strategy.split else None
        if ceiling is not None and can_split(piece) and piece.days >= ceiling:
            pieces = pieces.split()
            continue
        failures = 0
        while True:
            served = yield ("request", piece)
            if served:
                sizes.served.append(piece.days)
                done.append((piece, True))
                pieces = pieces.settled()
                break
            failures += 1
            step = after_failure(
                piece, failures, limits.max_retries, retryable=True, splittable=strategy.split
            )
            if step == GIVE_UP:
                done.append((piece, False))
                pieces = pieces.settled()
                break
            if step == SPLIT:
                sizes.cut.append(piece.days)
                pieces = pieces.split()
                break
            # python-backoff's full jitter of 1, 2, 4 ... seconds: half of that on average
            yield ("sleep", min(2.0 ** (failures - 1), MAX_BACKOFF_SECONDS) / 2)
    return done


class Budget:
    """The limiter's windows, granting starts in the order they are asked for."""

    def __init__(self, limits: Limits) -> None:
        self.windows = (
            SlidingWindow(limits.per_hour, 3600.0 + WINDOW_MARGIN_SECONDS),
            per_second_window(limits.per_second),
        )
        self.last = 0.0

    def grant(self, now: float) -> float:
        at = max(now, self.last)
        while (wait := max(w.wait_time(at) for w in self.windows)) > 0:
            at += wait
        for window in self.windows:
            window.record(at)
        self.last = at
        return at


def simulate(project: Project, limits: Limits, strategy: Strategy) -> Outcome:
    """Run one strategy on the virtual clock; the wall time is when the last partition ends."""
    end = START + dt.timedelta(days=project.days - 1)
    plan = plan_run(
        mode=strategy.mode,
        start_date=START,
        end_date=end,
        partition_days=strategy.partition_days,
        lookback_days=0,
        bookmark=None,
        failed=[],
        per_hour=limits.per_hour,
        max_workers=limits.max_workers,
    )
    outcome = Outcome(strategy.name, len(plan))
    outcome.floor_seconds = least_seconds(len(plan), limits.per_hour, limits.per_second)
    budget = Budget(limits)
    sizes = Sizes()
    window = 2 * limits.max_workers  # the runner's look-ahead past the partition being written
    slots = min(limits.max_workers, limits.max_concurrent)
    results: dict[int, list[tuple[Partition, bool]]] = {}
    finished_at: dict[int, float] = {}
    events: list[tuple[float, int, int]] = []  # (time, sequence, slot)
    running: dict[int, tuple[int, Generator[Ask, bool, list[tuple[Partition, bool]]]]] = {}
    answer: dict[int, bool] = {}
    idle: list[int] = []
    next_index = 0
    head = 0
    sequence = 0

    def schedule(at: float, slot: int) -> None:
        nonlocal sequence
        sequence += 1
        heapq.heappush(events, (at, sequence, slot))

    def step(slot: int, now: float, send: bool | None) -> None:
        """Advance the slot's partition to its next request or pause, or finish it."""
        nonlocal head
        index, job = running[slot]
        try:
            ask = job.send(send) if send is not None else next(job)
        except StopIteration as stop:
            results[index] = stop.value
            finished_at[index] = now
            del running[slot]
            while head in results:
                head += 1
            for waiting in idle:
                schedule(now, waiting)
            idle.clear()
            schedule(now, slot)
            return
        kind, what = ask
        if kind == "sleep":
            assert isinstance(what, float)
            schedule(now + what, slot)
            answer.pop(slot, None)
            return
        assert isinstance(what, Partition)
        start = budget.grant(now)
        served, seconds = serve(project, limits, what)
        outcome.requests += 1
        outcome.cut_or_timed_out += not served
        answer[slot] = served
        schedule(start + seconds, slot)

    for slot in range(slots):
        schedule(0.0, slot)
    while events:
        now, _, slot = heapq.heappop(events)
        if slot in running:
            step(slot, now, answer.pop(slot, None))
            continue
        if next_index < len(plan) and next_index < head + window:
            job = worker(plan[next_index].partition, limits, strategy, sizes)
            running[slot] = (next_index, job)
            next_index += 1
            step(slot, now, None)
        elif next_index < len(plan) and slot not in idle:
            idle.append(slot)
    outcome.wall_seconds = max(finished_at.values(), default=0.0)
    check(project, plan, results, outcome)
    return outcome


def check(project: Project, plan: list, results: dict, outcome: Outcome) -> None:
    """Settle the pieces in plan order as the main thread does, and count every day."""
    state = ExportState()
    delivered: Counter[dt.date] = Counter()
    for index, planned in enumerate(plan):
        for piece, ok in results.get(index, []):
            if ok:
                state = settle_done(state, planned, TODAY, piece)
                delivered.update(_days(piece))
            else:
                state = settle_failed(state, planned, "cut", 1, TODAY, piece)
    owed: Counter[dt.date] = Counter()
    for failed in state.failed:
        owed.update(_days(failed.partition))
    every = {START + dt.timedelta(days=i) for i in range(project.days)}
    if any(n > 1 for n in delivered.values()):
        outcome.errors.append("a day was delivered twice")
    if any(n > 1 for n in owed.values()) or set(owed) & set(delivered):
        outcome.errors.append("a day is owed twice, or owed and delivered")
    if set(owed) | set(delivered) != every:
        outcome.errors.append("a day was neither delivered nor owed")
    outcome.days_delivered = len(delivered)
    outcome.days_owed = len(owed)
    weeks = project.too_large_weeks()
    outcome.too_large_weeks = len(weeks)
    outcome.too_large_weeks_delivered = sum(
        all(day in delivered for day in _days(week)) for week in weeks
    )


def _days(partition: Partition) -> list[dt.date]:
    return [partition.from_date + dt.timedelta(days=i) for i in range(partition.days)]


SCENARIOS = (
    # A large project's two-year backfill: 105 weeks, Mixpanel serves a week in about a minute,
    # so the hour's 60 requests are gone in minutes and the budget binds.
    (Project("two years, a week served in a minute: the budget binds", days=730), True),
    # The same project, six months: 26 weeks fit the hour; the budget does not bind.
    (Project("six months: the budget does not bind", days=182), False),
    # Catching up a month: 5 weeks would leave 5 of the 10 workers idle.
    (Project("one month: the budget does not bind", days=30, large_every=0), False),
    # A heavy project (a week streams for 3.5 minutes, a range of more than 10 days is cut):
    # the budget binds, but larger partitions cannot be served; the plan must not lose.
    (
        Project(
            "two years, heavy: ranges over 10 days are cut",
            days=730,
            transfer_per_day=30.0,
            large_factor=3.0,
            cut_after=300.0,
        ),
        False,
    ),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write every outcome to this JSON file")
    args = parser.parse_args(argv)
    limits = Limits()
    print(
        f"limits: {limits.per_hour} export requests an hour, {limits.per_second:g} a second,"
        f" {limits.max_concurrent} at once; max_workers {limits.max_workers},"
        f" max_retries {limits.max_retries}, request_timeout {limits.request_timeout:g}s"
    )
    failed = False
    report = []
    for project, binds in SCENARIOS:
        outcomes = [simulate(project, limits, s) for s in STRATEGIES]
        by_name = {o.strategy: o for o in outcomes}
        base = by_name[BASELINE].wall_seconds
        print()
        print(
            f"{project.name}: {project.days} days, {project.transfer_per_day:g}s of streaming a"
            f" day, time to first byte {project.ttfb_base:g}s + {project.ttfb_per_day:g}s a day,"
            f" cut after {project.cut_after:g}s of streaming; {len(project.too_large_weeks())}"
            f" weeks too large to serve whole"
        )
        header = (
            f"  {'strategy':<32} {'parts':>5} {'reqs':>5} {'cut':>4} {'floor':>6}"
            f" {'wall':>7} {'vs 7-day':>8} {'days ok':>7} {'owed':>5} {'large wks':>9}"
        )
        print(header)
        for o in outcomes:
            print(
                f"  {o.strategy:<32} {o.partitions:>5} {o.requests:>5} {o.cut_or_timed_out:>4}"
                f" {duration(o.floor_seconds):>6} {duration(o.wall_seconds):>7}"
                f" {base / o.wall_seconds:>7.2f}x {o.days_delivered:>7} {o.days_owed:>5}"
                f" {o.too_large_weeks_delivered:>4}/{o.too_large_weeks:<4}"
            )
            for error in o.errors:
                failed = True
                print(f"    CHECK FAILED: {error}")
        plan = by_name[PLAN]
        ratio = base / plan.wall_seconds
        every_week = plan.too_large_weeks_delivered == plan.too_large_weeks
        default = by_name[DEFAULT].wall_seconds / plan.wall_seconds
        if binds:
            goal = ratio >= 2 and every_week
            text = f"plan vs fixed 7-day: {ratio:.2f}x (goal >= 2x, every too-large week)"
        else:
            goal = ratio >= 1 and default >= 1 and every_week
            text = (
                f"plan vs fixed 7-day: {ratio:.2f}x, vs 7-day + halves: {default:.2f}x"
                " (goal >= 1x: never slower, every too-large week)"
            )
        print(f"  {text}: {'meets goal' if goal else 'BELOW GOAL'}")
        report.append(
            {
                "scenario": asdict(project),
                "budget_binds": binds,
                "outcomes": [asdict(o) for o in outcomes],
                "plan_vs_fixed_7": ratio,
                "plan_vs_fixed_7_halves": default,
                "meets_goal": goal,
            }
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"limits": asdict(limits), "scenarios": report}, fh, indent=2)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

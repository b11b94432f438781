"""Every stream at once: ``events`` and ``engage`` alone and together, against one slow server.

The two streams spend different budgets (the raw export's and the Query API's), so a run that
selects both should cost about the longer of the two, not the sum. The fake server runs as its
own process, slow for both APIs (``--latency``: seconds waited before every answer); three
contenders, each the real CLI with a catalog, run side by side (alternating, the order rotated
each repeat) as ``bench.py`` runs them, and each must emit exactly its records:

- ``events``: the export alone (default settings: 7-day partitions, 10 workers, 3 requests/s);
- ``engage``: people profiles alone (default settings: 5 pages at once);
- ``both``: one run selecting the two.

    .venv/bin/python benchmarks/streams.py [--days 168] [--profiles 30000] [--latency 1.0]
                                           [--repeat 1] [--quick]

Results: a table on stdout and benchmarks/results-streams.json. Nothing is asserted on time;
the goal (both / the longer alone at most 1.2) is printed next to the ratio.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import bench  # noqa: E402
from bench import PROJECT_ID, SECRET, START, USERNAME, Contender  # noqa: E402

GOALS = {"both_over_longest": "<= 1.2", "both_over_sum": "<= 0.7"}


class SlowServer(bench.FakeServer):
    """Events and profiles, every answer ``latency`` seconds late (stopped as bench's)."""

    def __init__(self, days: int, events_per_day: int, profiles: int, latency: float) -> None:
        cmd = [
            sys.executable, "-m", "tap_mixpanel_parallel.testing.fake_server",
            "--start", START.isoformat(), "--days", str(days),
            "--events-per-day", str(events_per_day), "--profiles", str(profiles),
            "--latency", str(latency), "--cache-bodies",
            "--username", USERNAME, "--secret", SECRET, "--project-id", str(PROJECT_ID),
        ]  # fmt: skip
        self.launch(cmd)


def contender(name: str, label: str, work: Path, url: str, end: str, *streams: str) -> Contender:
    """The tap with a catalog selecting exactly ``streams``, default settings otherwise."""
    return bench.selecting_contender(name, label, work, url, streams, end_date=end)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=168, help="days of events (7-day partitions)")
    parser.add_argument("--events-per-day", type=int, default=100)
    parser.add_argument("--profiles", type=int, default=30_000)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="14 days, 2,000 profiles, 0.2 s")
    parser.add_argument("--output", type=Path, default=HERE / "results-streams.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.days, args.profiles, args.latency = 14, 2_000, 0.2
    end = (START + dt.timedelta(days=args.days - 1)).isoformat()
    events = args.days * args.events_per_day
    results: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "python": platform.python_version(),
        "days": args.days,
        "events": events,
        "profiles": args.profiles,
        "latency": args.latency,
        "repeat": args.repeat,
        "git_commit": bench._git_commit(),
    }
    with tempfile.TemporaryDirectory(prefix="bench-streams-") as tmp:
        work = Path(tmp)
        logs = work / "logs"
        logs.mkdir()
        server = SlowServer(args.days, args.events_per_day, args.profiles, args.latency)
        try:
            alone_events = contender("events", "events alone", work, server.url, end, "events")
            alone_engage = contender("engage", "engage alone", work, server.url, end, "engage")
            both = contender(
                "both", "events + engage, one run", work, server.url, end, "events", "engage"
            )
            print(
                f"{events} events in {args.days} days, {args.profiles} profiles,"
                f" {args.latency} s per answer, {args.repeat} repeat(s)"
            )
            contenders = [alone_events, alone_engage, both]
            expected_of = {
                "events": events,
                "engage": args.profiles,
                "both": events + args.profiles,
            }
            for r in range(args.repeat):
                shift = r % len(contenders)
                for c in contenders[shift:] + contenders[:shift]:
                    run = bench.run_once(c, expected_of[c.name], logs, r)
                    c.runs.append(run)
                    print(
                        f"  [{r + 1}/{args.repeat}] {c.label:<26} {run.wall:7.2f} s wall"
                        f" {run.records:>8} records" + ("" if run.ok else "  FAILED"),
                        flush=True,
                    )
        finally:
            server.stop()
    walls = {c.name: c.median("wall") for c in contenders}
    longest = max(walls["events"], walls["engage"])
    total = walls["events"] + walls["engage"]
    print("\nside by side (median wall seconds)")
    print(f"  {'events alone':<34} {walls['events']:8.2f}")
    print(f"  {'engage alone':<34} {walls['engage']:8.2f}")
    print(f"  {'the longer of the two':<34} {longest:8.2f}")
    print(f"  {'the sum of the two':<34} {total:8.2f}")
    print(f"  {'events + engage in one run':<34} {walls['both']:8.2f}")
    results["wall_seconds"] = walls
    results["both_over_longest"] = bench.ratio(walls["both"], longest)
    results["both_over_sum"] = bench.ratio(walls["both"], total)
    for c in contenders:
        results[c.name] = [vars(run) for run in c.runs]
    print("\nratios")
    for key, goal in GOALS.items():
        value = results[key]
        print(f"  {key:<18} {value:8.2f}   goal {goal}: {bench.meets(value, goal)}")
    ok = all(run.ok for c in contenders for run in c.runs)
    results["all_runs_ok"] = ok
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""The engage (people profiles) benchmark: parallel pages against one page at a time, against
singer-io's tap-mixpanel, and peak memory.

The fake server runs as its own process with ``--profiles N`` and ``--latency L`` (seconds
waited before every answer: Mixpanel's engage takes seconds per page of 1,000; users report
about 1.8 s, airbytehq/airbyte#29035). Contenders are separate processes, run side by side
(alternating, the order rotated each repeat), read to the end by the benchmark, measured with
``os.wait4`` (wall, CPU, peak RSS), exactly as ``bench.py`` does; each must emit exactly N
profiles.

- ``parallel``: the tap, defaults (``query_max_workers`` 5, ``engage_page_size`` 1000).
- ``one page at a time``: the same tap with ``query_max_workers`` 1.
- ``singer-io``: tap-mixpanel 1.8.0 (engage stream only), its hosts redirected to the same
  server by ``mixpanel_redirect.py``; 250 profiles a page, one page at a time. It is slow, so it
  runs on ``--singer-profiles`` profiles (default 50,000), side by side with the parallel tap on
  the same smaller server, and the ratio is of wall times on that size.

    .venv/bin/python benchmarks/engage.py [--profiles 1000000] [--latency 0.5] [--repeat 1]
                                          [--singer-profiles 50000] [--no-singer-io] [--quick]

Results: a table on stdout and benchmarks/results-engage.json.
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
import singer_io  # noqa: E402
from bench import PROJECT_ID, SECRET, START, USERNAME, Contender  # noqa: E402

PROFILE_PROPERTIES = [
    "$email", "$name", "$created", "$city", "$last_seen", "plan", "visits", "score", "flags",
]  # fmt: skip
GOALS = {"parallel_speedup": ">= 4", "vs_singer_io": ">= 4", "peak_rss_mib": "<= 150"}


class ProfileServer(bench.FakeServer):
    """The fake server with profiles only, as a subprocess (stopped as ``bench.FakeServer``)."""

    def __init__(self, profiles: int, latency: float) -> None:
        cmd = [
            sys.executable, "-m", "tap_mixpanel_parallel.testing.fake_server",
            "--start", START.isoformat(), "--days", "1", "--events-per-day", "0",
            "--profiles", str(profiles), "--latency", str(latency),
            "--username", USERNAME, "--secret", SECRET, "--project-id", str(PROJECT_ID),
            "--api-secret", singer_io.API_SECRET,
        ]  # fmt: skip
        self.launch(cmd)


def tap_contender(name: str, label: str, work: Path, url: str, **settings: Any) -> Contender:
    return bench.selecting_contender(name, label, work, url, ("engage",), **settings)


def singer_io_contender(work: Path, url: str, venv: Path) -> Contender:
    config = work / "singer-io.json"
    catalog = work / "singer-io-catalog.json"
    # Its engage loop runs once per window from start_date to end_date: they must differ.
    end = (START + dt.timedelta(days=1)).isoformat()
    singer_io.write_config(config, start_date=START.isoformat(), end_date=end)
    env = singer_io.environment(url, [], PROFILE_PROPERTIES)
    singer_io.discover_catalog(venv, config, catalog, env, stream="engage")
    return Contender(
        "singer-io",
        "singer-io tap-mixpanel (engage)",
        [str(singer_io.tap_executable(venv)), "--config", str(config), "--catalog", str(catalog)],
        env=env,
    )


def table(title: str, contenders: list[Contender]) -> None:
    print(f"\n{title}")
    print(f"  {'contender':<34} {'wall s':>8} {'cpu s':>8} {'records/s':>10} {'peak MiB':>9}")
    for c in contenders:
        print(
            f"  {c.label:<34} {c.median('wall'):8.1f} {c.median('cpu'):8.1f}"
            f" {c.median('records_per_second'):10.0f} {c.median('max_rss_mib'):9.1f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--singer-profiles", type=int, default=50_000)
    parser.add_argument("--no-singer-io", action="store_true")
    parser.add_argument("--singer-io-version", default=singer_io.DEFAULT_VERSION)
    parser.add_argument("--quick", action="store_true", help="20,000 profiles, 0.2 s, no singer-io")
    parser.add_argument("--output", type=Path, default=HERE / "results-engage.json")
    args = parser.parse_args(argv)
    if args.quick:
        if args.profiles == parser.get_default("profiles"):
            args.profiles = 20_000
        args.latency, args.no_singer_io = 0.2, True
    results: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "python": platform.python_version(),
        "profiles": args.profiles,
        "latency": args.latency,
        "repeat": args.repeat,
        "git_commit": bench._git_commit(),
    }
    ok = True
    with tempfile.TemporaryDirectory(prefix="bench-engage-") as tmp:
        work = Path(tmp)
        logs = work / "logs"
        logs.mkdir()
        server = ProfileServer(args.profiles, args.latency)
        try:
            parallel = tap_contender("parallel", "tap, query_max_workers 5", work, server.url)
            serial = tap_contender(
                "serial", "tap, one page at a time", work, server.url, query_max_workers=1
            )
            print(f"{args.profiles} profiles, {args.latency} s per page, {args.repeat} repeat(s)")
            bench.run_side_by_side([parallel, serial], args.profiles, args.repeat, logs)
        finally:
            server.stop()
        table("engage: parallel pages against one page at a time", [parallel, serial])
        speedup = bench.ratio(serial.median("wall"), parallel.median("wall"))
        results["parallel"] = [vars(r) for r in parallel.runs]
        results["serial"] = [vars(r) for r in serial.runs]
        results["parallel_speedup"] = speedup
        results["peak_rss_mib"] = parallel.median("max_rss_mib")
        ok = ok and all(r.ok for c in (parallel, serial) for r in c.runs)
        if not args.no_singer_io:
            venv = singer_io.ensure_venv(ROOT, args.singer_io_version)
            small = ProfileServer(args.singer_profiles, args.latency)
            try:
                ours = tap_contender("parallel-small", "tap, defaults", work, small.url)
                theirs = singer_io_contender(work, small.url, venv)
                print(f"\n{args.singer_profiles} profiles for singer-io, side by side")
                bench.run_side_by_side([ours, theirs], args.singer_profiles, args.repeat, logs)
            finally:
                small.stop()
            table(f"engage: against singer-io, {args.singer_profiles} profiles", [ours, theirs])
            results["singer_io"] = [vars(r) for r in theirs.runs]
            results["ours_small"] = [vars(r) for r in ours.runs]
            results["vs_singer_io"] = bench.ratio(theirs.median("wall"), ours.median("wall"))
            ok = ok and all(r.ok for c in (ours, theirs) for r in c.runs)
    print("\nratios")
    for key, goal in GOALS.items():
        value = results.get(key)
        if value is not None:
            print(f"  {key:<18} {value:8.2f}   goal {goal}: {bench.meets(value, goal)}")
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

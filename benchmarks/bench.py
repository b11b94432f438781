"""The benchmark: throughput, parallel speedup, singer-io's tap-mixpanel and peak memory.

Every contender is a separate process reading from the project's fake Mixpanel server, which is
itself a separate process (``--cache-bodies``: bodies are generated and gzipped once, before
the timed runs, so the server is never the bottleneck and its CPU is not in any measured
process). Contenders of a scenario run side by side: alternating, in a rotated order each
repeat, and the table reports medians and ratios of medians. The benchmark reads each
contender's stdout to the end (counting lines and RECORD messages, storing nothing) and takes
its wall time, CPU time and peak RSS from ``os.wait4``.

    .venv/bin/python benchmarks/bench.py [--quick] [--repeat N]
                                         [--only throughput,speedup,singer-io,memory]

See benchmarks/README.md for what each scenario measures and the goals. Results go to stdout
as a table and to benchmarks/results.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import singer_io  # noqa: E402

from tap_mixpanel_parallel.testing.fake_server import FakeMixpanel  # noqa: E402

PARTS = ("throughput", "speedup", "singer-io", "memory")
START = dt.date(2024, 1, 1)
USERNAME, SECRET, PROJECT_ID = "bench-user", "bench-secret", 1
RECORD_MARKERS = (b'{"type":"RECORD"', b'{"type": "RECORD"')
READ_CHUNK = 1 << 20
MIB = 1024 * 1024


# -- scenarios ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    days: int
    events_per_day: int
    latency: float = 0.0
    bytes_per_second: float | None = None

    @property
    def end(self) -> dt.date:
        return START + dt.timedelta(days=self.days - 1)

    @property
    def events(self) -> int:
        return self.days * self.events_per_day

    def describe(self) -> str:
        text = f"{self.days} days x {self.events_per_day} events/day = {self.events} events"
        if self.latency:
            text += f", {self.latency:g} s latency"
        if self.bytes_per_second:
            text += f", {self.bytes_per_second:g} payload B/s per connection"
        return text


FULL = {
    "throughput": Scenario("throughput", days=7, events_per_day=10_000),
    "latency": Scenario(
        "latency", days=140, events_per_day=300, latency=1.0, bytes_per_second=409_600
    ),
    "memory": Scenario("memory", days=7, events_per_day=60_000),
}
QUICK = {
    "throughput": Scenario("throughput", days=7, events_per_day=300),
    "latency": Scenario("latency", days=28, events_per_day=20, latency=0.2),
    "memory": Scenario("memory", days=7, events_per_day=1_000),
}


@dataclass
class Run:
    contender: str
    wall: float
    cpu: float
    max_rss_mib: float
    lines: int
    records: int
    returncode: int
    expected_records: int

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.records == self.expected_records

    @property
    def records_per_second(self) -> float:
        return self.records / self.wall if self.wall > 0 else 0.0


@dataclass
class Contender:
    name: str
    label: str
    command: list[str]
    env: dict[str, str] | None = None
    runs: list[Run] = field(default_factory=list)

    def median(self, attr: str) -> float:
        values = [getattr(run, attr) for run in self.runs]
        return statistics.median(values) if values else float("nan")


# -- processes ------------------------------------------------------------------------------------


class FakeServer:
    """The fake server as a subprocess, bodies cached, every response pre-generated."""

    def __init__(self, scenario: Scenario, extra_args: tuple[str, ...] = ()) -> None:
        self.scenario = scenario
        cmd = [
            sys.executable,
            "-m",
            "tap_mixpanel_parallel.testing.fake_server",
            "--start",
            START.isoformat(),
            "--days",
            str(scenario.days),
            "--events-per-day",
            str(scenario.events_per_day),
            "--event-bytes",
            "590",
            "--cache-bodies",
            "--username",
            USERNAME,
            "--secret",
            SECRET,
            "--project-id",
            str(PROJECT_ID),
            "--api-secret",
            singer_io.API_SECRET,
        ]
        if scenario.latency:
            cmd += ["--latency", str(scenario.latency)]
        if scenario.bytes_per_second:
            cmd += ["--bytes-per-second", str(scenario.bytes_per_second), "--throttle-payload"]
        self.launch([*cmd, *extra_args])

    def launch(self, cmd: list[str]) -> None:
        """Start the server process and read the URL it prints once it listens."""
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("FAKE_MIXPANEL_URL="):
            self.stop()
            raise RuntimeError(f"fake server did not start: {line!r}")
        self.url = line.split("=", 1)[1]

    def warm(self, ranges: list[tuple[dt.date, dt.date]]) -> None:
        """Generate and cache each body once, outside every timed run (latency paid here too)."""

        def fetch(first_last: tuple[dt.date, dt.date]) -> None:
            first, last = first_last
            response = requests.get(
                f"{self.url}/api/2.0/export",
                params={
                    "from_date": first.isoformat(),
                    "to_date": last.isoformat(),
                    "project_id": str(PROJECT_ID),
                },
                auth=(USERNAME, SECRET),
                headers={"Accept-Encoding": "gzip"},
                stream=True,
                timeout=600,
            )
            response.raise_for_status()
            response.close()  # the body is generated and cached before its headers go out

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(fetch, sorted(set(ranges))))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def run_once(contender: Contender, expected: int, log_dir: Path, index: int) -> Run:
    """Start, read stdout to the end (counting only), reap with wait4 for CPU and peak RSS."""
    stderr_path = log_dir / f"{contender.name}.{index}.stderr"
    with open(stderr_path, "wb") as stderr:
        started = time.perf_counter()
        proc = subprocess.Popen(
            contender.command,
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            env=contender.env,
            cwd=ROOT,
        )
        assert proc.stdout is not None
        lines = records = 0
        # Per marker, the bytes of the previous chunk a marker could straddle (len - 1 of them,
        # so a marker wholly inside a tail is never counted twice).
        tails = dict.fromkeys(RECORD_MARKERS, b"")
        read = proc.stdout.read1
        while True:
            chunk = read(READ_CHUNK)
            if not chunk:
                break
            lines += chunk.count(b"\n")
            for marker, tail in tails.items():
                window = tail + chunk[: len(marker) - 1]
                records += window.count(marker) + chunk.count(marker)
                keep = len(marker) - 1
                tails[marker] = chunk[-keep:] if len(chunk) >= keep else (tail + chunk)[-keep:]
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        proc.stdout.close()
    # ru_maxrss is in KiB on Linux.
    run = Run(
        contender=contender.name,
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        max_rss_mib=usage.ru_maxrss / 1024,
        lines=lines,
        records=records,
        returncode=proc.returncode,
        expected_records=expected,
    )
    if not run.ok:
        tail_text = stderr_path.read_text(errors="replace")[-2000:]
        print(
            f"  !! {contender.name}: exit {run.returncode}, {records} records "
            f"(expected {expected}); stderr tail:\n{tail_text}",
            file=sys.stderr,
        )
    return run


def run_side_by_side(
    contenders: list[Contender], expected: int, repeats: int, log_dir: Path
) -> None:
    """Alternate contenders, rotating the order each repeat so no one always goes first."""
    for r in range(repeats):
        shift = r % len(contenders)
        order = contenders[shift:] + contenders[:shift]
        for contender in order:
            run = run_once(contender, expected, log_dir, r)
            contender.runs.append(run)
            print(
                f"  [{r + 1}/{repeats}] {contender.name:<22} {run.wall:7.2f} s wall "
                f"{run.cpu:7.2f} s cpu {run.records:>8} records "
                f"{run.records_per_second:>9.0f} rec/s {run.max_rss_mib:7.1f} MiB"
                + ("" if run.ok else "  FAILED"),
                flush=True,
            )


# -- contenders -----------------------------------------------------------------------------------


def tap_config(path: Path, url: str, scenario: Scenario, **extra: Any) -> Path:
    config = {
        "service_account_username": USERNAME,
        "service_account_secret": SECRET,
        "project_id": PROJECT_ID,
        "api_url": url,
        "start_date": START.isoformat(),
        "end_date": scenario.end.isoformat(),
        **extra,
    }
    path.write_text(json.dumps(config))
    return path


def batch_config(root: Path, compression: str = "none") -> dict[str, Any]:
    """The SDK's batch_config for JSONL files under a local folder."""
    return {
        "encoding": {"format": "jsonl", "compression": compression},
        "storage": {"root": root.as_uri()},
    }


def tap_command(config: Path) -> list[str]:
    exe = Path(sys.executable).parent / "tap-mixpanel-parallel"
    return [str(exe), "--config", str(config)]


def selecting_contender(
    name: str, label: str, work: Path, url: str, streams: tuple[str, ...], **settings: Any
) -> Contender:
    """The tap with a catalog selecting exactly ``streams``; ``settings`` over the defaults."""
    config = work / f"{name}.json"
    config.write_text(
        json.dumps(
            {
                "service_account_username": USERNAME,
                "service_account_secret": SECRET,
                "project_id": PROJECT_ID,
                "api_url": url,
                "start_date": START.isoformat(),
                **settings,
            }
        )
    )
    exe = Path(sys.executable).parent / "tap-mixpanel-parallel"
    catalog = json.loads(
        subprocess.run(
            [str(exe), "--config", str(config), "--discover"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    for stream in catalog["streams"]:
        for entry in stream["metadata"]:
            entry["metadata"]["selected"] = stream["tap_stream_id"] in streams
    path = work / f"{name}-catalog.json"
    path.write_text(json.dumps(catalog))
    return Contender(name, label, [*tap_command(config), "--catalog", str(path)])


def partitions(scenario: Scenario, days: int = 7) -> list[tuple[dt.date, dt.date]]:
    out = []
    first = START
    while first <= scenario.end:
        last = min(first + dt.timedelta(days=days - 1), scenario.end)
        out.append((first, last))
        first = last + dt.timedelta(days=1)
    return out


def singer_io_windows(scenario: Scenario) -> list[tuple[dt.date, dt.date]]:
    """tap-mixpanel 1.8.0's windows for a first run: [s, s+30], then from the next day on."""
    out = []
    first = START
    last = min(first + dt.timedelta(days=30), scenario.end)
    while first <= scenario.end:
        out.append((first, last))
        first = last + dt.timedelta(days=1)
        last = min(last + dt.timedelta(days=30), scenario.end)
    return out


def event_property_names() -> list[str]:
    """What Mixpanel's events/properties/top would list for the fake server's events."""
    fake = FakeMixpanel(start=START, days=1, events_per_day=500)
    names: set[str] = set()
    for event in fake.events(START, START):
        names.update(event["properties"])
    return sorted(names)


def singer_io_contender(
    work: Path, url: str, scenario: Scenario, venv: Path, suffix: str = ""
) -> Contender:
    config = work / f"singer-io-{scenario.name}{suffix}.json"
    catalog = work / f"singer-io-{scenario.name}{suffix}-catalog.json"
    singer_io.write_config(config, start_date=START.isoformat(), end_date=scenario.end.isoformat())
    env = singer_io.environment(url, event_property_names())
    singer_io.discover_catalog(venv, config, catalog, env)
    return Contender(
        "singer-io",
        "singer-io tap-mixpanel",
        [str(singer_io.tap_executable(venv)), "--config", str(config), "--catalog", str(catalog)],
        env=env,
    )


# -- the benchmark --------------------------------------------------------------------------------


def ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def run_throughput(args, scenario, parts, work, logs, venv) -> dict[str, Any]:
    server = FakeServer(scenario)
    try:
        server.warm(partitions(scenario))
        url = server.url
        plain_cfg = tap_config(work / "plain.json", url, scenario)
        contenders = []
        if "throughput" in parts:
            contenders += [
                Contender(
                    "floor",
                    "raw floor (requests + stdlib json)",
                    [sys.executable, str(HERE / "raw_floor.py"), "--config", str(plain_cfg)],
                ),
                Contender(
                    "floor-msgspec",
                    "raw floor (requests + msgspec)",
                    [
                        sys.executable,
                        str(HERE / "raw_floor.py"),
                        "--config",
                        str(plain_cfg),
                        "--json",
                        "msgspec",
                    ],
                ),
                Contender(
                    "plain-sdk",
                    "plain singer-sdk stream",
                    [sys.executable, str(HERE / "plain_sdk_tap.py"), "--config", str(plain_cfg)],
                ),
            ]
        contenders.append(
            Contender(
                "tap",
                "tap-mixpanel-parallel",
                tap_command(tap_config(work / "tap-throughput.json", url, scenario)),
            )
        )
        if venv is not None:
            contenders.append(singer_io_contender(work, url, scenario, venv))
        print(f"\n== throughput: {scenario.describe()}", flush=True)
        run_side_by_side(contenders, scenario.events, args.repeat, logs)
    finally:
        server.stop()
    by = {c.name: c for c in contenders}
    rps = {name: c.median("records_per_second") for name, c in by.items()}
    ratios: dict[str, Any] = {}
    if "floor" in by:
        ratios["tap/floor"] = {"value": ratio(rps["tap"], rps["floor"]), "goal": ">= 0.5"}
        ratios["plain-sdk/floor"] = {
            "value": ratio(rps["plain-sdk"], rps["floor"]),
            "goal": "~0.12 expected",
        }
        ratios["tap/plain-sdk"] = {"value": ratio(rps["tap"], rps["plain-sdk"]), "goal": None}
        ratios["tap/floor-msgspec"] = {
            "value": ratio(rps["tap"], rps["floor-msgspec"]),
            "goal": ">= 0.5",
        }
    if "singer-io" in by:
        ratios["tap/singer-io records/s"] = {
            "value": ratio(rps["tap"], rps["singer-io"]),
            "goal": ">= 25",
        }
    return summarize(scenario, contenders, ratios)


def run_latency(args, scenario, parts, work, logs, venv) -> dict[str, Any]:
    server = FakeServer(scenario)
    try:
        warm = partitions(scenario)
        if venv is not None:
            warm += singer_io_windows(scenario)
        server.warm(warm)
        url = server.url
        contenders = []
        if "speedup" in parts:
            contenders.append(
                Contender(
                    "tap-w1",
                    "tap, max_workers 1",
                    tap_command(tap_config(work / "tap-w1.json", url, scenario, max_workers=1)),
                )
            )
        contenders += [
            Contender(
                "tap-w10",
                "tap, max_workers 10 (3 req/s)",
                tap_command(tap_config(work / "tap-w10.json", url, scenario, max_workers=10)),
            ),
            Contender(
                "tap-w10-rps100",
                "tap, max_workers 10, 100 req/s",
                tap_command(
                    tap_config(
                        work / "tap-w10-rps100.json",
                        url,
                        scenario,
                        max_workers=10,
                        max_requests_per_second=100,
                    )
                ),
            ),
        ]
        if venv is not None:
            contenders.append(singer_io_contender(work, url, scenario, venv))
        print(f"\n== latency-bound: {scenario.describe()}", flush=True)
        run_side_by_side(contenders, scenario.events, args.repeat, logs)
    finally:
        server.stop()
    by = {c.name: c for c in contenders}
    wall = {name: c.median("wall") for name, c in by.items()}
    ratios: dict[str, Any] = {}
    if "tap-w1" in by:
        ratios["speedup w10/w1 (3 req/s)"] = {
            "value": ratio(wall["tap-w1"], wall["tap-w10"]),
            "goal": "capped by the 3 req/s budget",
        }
        ratios["speedup w10/w1 (100 req/s)"] = {
            "value": ratio(wall["tap-w1"], wall["tap-w10-rps100"]),
            "goal": ">= 8",
        }
    if "singer-io" in by:
        ratios["singer-io wall / tap wall (3 req/s)"] = {
            "value": ratio(wall["singer-io"], wall["tap-w10"]),
            "goal": ">= 7",
        }
        ratios["singer-io wall / tap wall (100 req/s)"] = {
            "value": ratio(wall["singer-io"], wall["tap-w10-rps100"]),
            "goal": ">= 7",
        }
    return summarize(scenario, contenders, ratios)


def run_memory(args, scenario, parts, work, logs, venv) -> dict[str, Any]:
    server = FakeServer(scenario)
    try:
        server.warm(partitions(scenario))
        contenders = [
            Contender(
                "tap",
                "tap-mixpanel-parallel (default max_workers)",
                tap_command(tap_config(work / "tap-memory.json", server.url, scenario)),
            )
        ]
        print(f"\n== memory: {scenario.describe()} in one partition", flush=True)
        run_side_by_side(contenders, scenario.events, args.repeat, logs)
    finally:
        server.stop()
    peak = max(run.max_rss_mib for run in contenders[0].runs)
    ratios = {"tap peak RSS MiB (max of runs)": {"value": peak, "goal": "<= 150"}}
    return summarize(scenario, contenders, ratios)


def summarize(scenario: Scenario, contenders: list[Contender], ratios: dict) -> dict[str, Any]:
    return {
        "scenario": asdict(scenario) | {"events": scenario.events, "end": scenario.end.isoformat()},
        "contenders": {
            c.name: {
                "label": c.label,
                "median_wall_s": c.median("wall"),
                "median_cpu_s": c.median("cpu"),
                "median_records_per_s": c.median("records_per_second"),
                "max_rss_mib": max(run.max_rss_mib for run in c.runs),
                "all_ok": all(run.ok for run in c.runs),
                "runs": [asdict(run) for run in c.runs],
            }
            for c in contenders
        },
        "ratios": ratios,
    }


def meets(value: float | None, goal: str | None) -> str:
    if value is None or not goal:
        return ""
    for op in (">=", "<="):
        if goal.startswith(op):
            target = float(goal[2:].strip())
            good = value >= target if op == ">=" else value <= target
            return "meets goal" if good else "BELOW GOAL" if op == ">=" else "ABOVE GOAL"
    return ""


def print_tables(results: dict[str, Any]) -> None:
    print("\n" + "=" * 100)
    meta = results["meta"]
    print(f"medians of {meta['repeats']} run(s) each; command: {meta['command']}")
    for name, section in results["scenarios"].items():
        print(f"\n{name}: {section['scenario_text']}")
        print(
            f"  {'contender':<44} {'wall s':>8} {'cpu s':>8} {'records/s':>10} "
            f"{'peak RSS MiB':>13} {'ok':>4}"
        )
        for c in section["contenders"].values():
            print(
                f"  {c['label']:<44} {c['median_wall_s']:8.2f} {c['median_cpu_s']:8.2f} "
                f"{c['median_records_per_s']:10.0f} {c['max_rss_mib']:13.1f} "
                f"{'yes' if c['all_ok'] else 'NO':>4}"
            )
        for label, r in section["ratios"].items():
            value = r["value"]
            shown = "n/a" if value is None else f"{value:.2f}"
            goal = f"(goal {r['goal']})" if r["goal"] else ""
            print(f"    {label:<42} {shown:>8}  {goal} {meets(value, r['goal'])}")
    print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny ranges, 1 repeat, no singer-io")
    parser.add_argument("--repeat", type=int, default=None, help="runs per contender (default 3)")
    parser.add_argument("--only", default=",".join(PARTS), help="comma list of " + ",".join(PARTS))
    parser.add_argument("--output", type=Path, default=HERE / "results.json")
    parser.add_argument("--singer-io-version", default=singer_io.DEFAULT_VERSION)
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown --only part(s): {', '.join(unknown)}; choose from {PARTS}")
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.quick and "singer-io" in parts:
        if args.only != ",".join(PARTS):
            parser.error("--quick skips singer-io; drop it from --only")
        parts.remove("singer-io")
    scenarios = QUICK if args.quick else FULL

    venv = None
    if "singer-io" in parts:
        venv = singer_io.ensure_venv(ROOT, args.singer_io_version)

    meta = {
        "command": " ".join(
            [".venv/bin/python benchmarks/bench.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "repeats": args.repeat,
        "parts": parts,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "machine": platform.platform(),
        "git_commit": _git_commit(),
        "singer_io_version": args.singer_io_version if venv else None,
        "json_in_floor": "stdlib json (floor), msgspec (floor-msgspec)",
    }
    results: dict[str, Any] = {"meta": meta, "scenarios": {}}
    with tempfile.TemporaryDirectory(prefix="tap-mixpanel-bench-") as tmp:
        work = Path(tmp)
        logs = work / "logs"
        logs.mkdir()
        jobs = []
        if "throughput" in parts or "singer-io" in parts:
            jobs.append(("throughput", run_throughput))
        if "speedup" in parts or "singer-io" in parts:
            jobs.append(("latency", run_latency))
        if "memory" in parts:
            jobs.append(("memory", run_memory))
        for name, job in jobs:
            scenario = scenarios[name]
            section = job(args, scenario, parts, work, logs, venv)
            section["scenario_text"] = scenario.describe()
            results["scenarios"][name] = section
    results["ratios"] = {
        label: r
        for section in results["scenarios"].values()
        for label, r in section["ratios"].items()
    }
    results["all_runs_ok"] = all(
        c["all_ok"] for s in results["scenarios"].values() for c in s["contenders"].values()
    )
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print_tables(results)
    print(f"results written to {args.output}")
    if not results["all_runs_ok"]:
        print("some runs failed or returned the wrong record count (see above)", file=sys.stderr)
        return 1
    return 0


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


if __name__ == "__main__":
    sys.exit(main())

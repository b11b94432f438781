"""The main job, end to end: ``meltano run tap-mixpanel-parallel target-postgres`` against floors.

    .venv/bin/python benchmarks/main_job.py [--quick] [--repeat N] [--days D --events-per-day E]
        [--no-hub] [--no-awkward]

Side by side in one run, alternating and in a rotated order each repeat (medians reported):

- **Hub path**: what a Meltano Hub user runs. A new project (``meltano init``) with both
  plugins added from the two Hub definitions (hub_path.py: a local Meltano Hub serving
  hub/_data, ``pip_url`` pointed at wheels built from this checkout), installed once outside
  the timings; ``meltano run --full-refresh tap-mixpanel target-postgres`` with nothing set but
  credentials, the connection (a database of its own) and BATCH, loading into
  the Hub loader's default schema ``tap_mixpanel_parallel``. Checked like the main job, and no
  ``_sdc_*`` column may hold a NULL.
- **main job**: the real ``meltano run --full-refresh tap-mixpanel-parallel target-postgres``
  with the repository's meltano.yml as shipped (installed once into a temporary Meltano system
  folder, outside the timings), loading into PostgreSQL; wall time from start to exit, the
  rows counted in the table afterwards (each event exactly once). Peak RSS of the tap and of
  target-postgres are read from ``/proc/<pid>/status`` (``VmHWM``) of Meltano's children
  while it runs.
- **tap alone**: ``tap-mixpanel-parallel --config ...`` writing RECORD messages to a pipe that
  the benchmark reads and counts (its defaults: RECORD, no sanitising).
- **COPY floor**: ``copy_floor.py``, one psycopg client COPYing the same records (the files
  the tap writes for the main job) into a table with the same 4-column primary key; stdlib
  ``json`` (the floor of the goal) and, for reference, raw ``properties`` pass-through.

The fake server runs as its own process with cached bodies (see bench.py); its events have the
quirks real exports have (``--awkward-events``: each day adds 3 events without ``$insert_id`` and
events with NUL characters and invalid UTF-8, 5 rows a day; ``--no-awkward`` leaves them out).
Results go to stdout and to ``benchmarks/main_job.json``; exit code 1 when a run failed or
loaded the wrong number of rows. Nothing asserts speed: goals are printed beside the ratios.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import bench  # noqa: E402
import copy_floor  # noqa: E402
import hub_path  # noqa: E402

#: Today's main job, as the issue measured it before this work (records/s).
BEFORE_RPS = 1779
MELTANO_ENV = {
    "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
    "MELTANO_DISABLE_TRACKING": "true",
    "MELTANO_CLI_DISABLE_VERSION_CHECK": "true",
    "MELTANO_CLI_LOG_FORMAT": "uncolored",
}
# Names of this run's own (the PostgreSQL server may be shared by other runs at the same time).
SCHEMA_MAIN = f"bench_main_job_{os.getpid()}"
SCHEMA_FLOOR = f"bench_copy_floor_{os.getpid()}"
#: The Hub path loads into a database of its own, where the Hub loader's default schema is free.
HUB_DATABASE = f"bench_hub_path_{os.getpid()}"
HUB_SCHEMA = "tap_mixpanel_parallel"
#: Rows a day of the fake server's --awkward-events.
AWKWARD_PER_DAY = 5


@dataclass
class Timed:
    wall: float
    cpu: float
    max_rss_mib: float
    returncode: int
    peaks_mib: dict[str, float]


def descendants(root: int) -> dict[int, str]:
    """pid -> command line of every live descendant of ``root``."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        parents[int(entry)] = int(stat[stat.rindex(b")") + 2 :].split()[1])
    found: dict[int, str] = {}
    frontier = [root]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in found:
                try:
                    cmd = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
                except OSError:
                    continue
                found[child] = cmd.decode(errors="replace")
                frontier.append(child)
    return found


def high_water_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def role(cmdline: str) -> str | None:
    if "target-postgres" in cmdline:
        return "target"
    if "tap-mixpanel-parallel" in cmdline and "--discover" not in cmdline:
        return "tap"
    return None


def timed(command: list[str], env: dict[str, str], log: Path, cwd: Path = ROOT) -> Timed:
    """Run to exit; wall, CPU and peak RSS from wait4, children's peaks sampled from /proc."""
    peaks: dict[str, float] = {}
    with open(log, "wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=cwd,
        )  # fmt: skip
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            for child, cmdline in descendants(proc.pid).items():
                name = role(cmdline)
                mib = high_water_mib(child) if name else None
                if name and mib is not None:
                    peaks[name] = max(peaks.get(name, 0.0), mib)
            time.sleep(0.1)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Timed(
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        max_rss_mib=usage.ru_maxrss / 1024,
        returncode=proc.returncode,
        peaks_mib=peaks,
    )


def row_count(schema: str, dbname: str | None = None) -> tuple[int, int]:
    """Rows and distinct keys in ``schema.events``."""
    with copy_floor.connect(dbname) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(*), count(DISTINCT (event, distinct_id, time, insert_id))"
            f' FROM "{schema}".events'
        )
        rows, keys = cur.fetchone()  # type: ignore[misc]
    return int(rows), int(keys)


def null_metadata(schema: str, dbname: str | None = None) -> dict[str, int]:
    """NULLs in each ``_sdc_*`` column of ``schema.events`` (none: no such column)."""
    with copy_floor.connect(dbname) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name = 'events' AND column_name LIKE '\\_sdc\\_%%'",
            (schema,),
        )
        columns = [row[0] for row in cur.fetchall()]
        nulls = {}
        for column in columns:
            cur.execute(f'SELECT count(*) FROM "{schema}".events WHERE "{column}" IS NULL')
            nulls[column] = int(cur.fetchone()[0])  # type: ignore[index]
    return nulls


def recreate_database(name: str) -> None:
    with copy_floor.connect(autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(name: str) -> None:
    with copy_floor.connect(autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def hub_env(config: dict[str, Any], batches: Path) -> dict[str, str]:
    """The Hub path's settings: credentials, connection and BATCH, nothing else."""
    env = {f"TAP_MIXPANEL_{key.upper()}": str(value) for key, value in config.items()}
    env.update(
        {
            "TAP_MIXPANEL_BATCH_CONFIG": json.dumps(
                {
                    "encoding": {"format": "jsonl", "compression": "none"},
                    "storage": {"root": batches.as_uri()},
                }
            ),
            "TARGET_POSTGRES_HOST": os.environ.get("TARGET_POSTGRES_HOST", "127.0.0.1"),
            "TARGET_POSTGRES_PORT": os.environ.get("TARGET_POSTGRES_PORT", "5432"),
            "TARGET_POSTGRES_USER": os.environ.get("TARGET_POSTGRES_USER", "tap"),
            "TARGET_POSTGRES_PASSWORD": os.environ.get("TARGET_POSTGRES_PASSWORD", "tap"),
            "TARGET_POSTGRES_DATABASE": HUB_DATABASE,
        }
    )
    return env


def drop_schema(schema: str) -> None:
    with copy_floor.connect() as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 days x 500 events, 1 repeat")
    parser.add_argument("--repeat", type=int, default=None, help="runs per contender (default 3)")
    parser.add_argument("--days", type=int, default=None, help="default 60 (6 with --quick)")
    parser.add_argument("--events-per-day", type=int, default=None, help="default 5000 (500)")
    parser.add_argument("--output", type=Path, default=HERE / "main_job.json")
    parser.add_argument(
        "--no-awkward", action="store_true", help="leave out the server's awkward events"
    )
    parser.add_argument("--no-hub", action="store_true", help="leave out the Hub path")
    args = parser.parse_args(argv)
    repeats = args.repeat or (1 if args.quick else 3)
    scenario = bench.Scenario(
        "main-job",
        days=args.days or (6 if args.quick else 60),
        events_per_day=args.events_per_day or (500 if args.quick else 5000),
    )
    meltano = Path(sys.executable).with_name("meltano")
    with tempfile.TemporaryDirectory(prefix="tap-mixpanel-main-job-") as tmp:
        work = Path(tmp)
        logs = work / "logs"
        logs.mkdir()
        awkward = () if args.no_awkward else ("--awkward-events",)
        server = bench.FakeServer(scenario, extra_args=awkward)
        expected = scenario.events + (0 if args.no_awkward else AWKWARD_PER_DAY * scenario.days)
        try:
            server.warm(bench.partitions(scenario))
            config = bench.tap_config(work / "tap.json", server.url, scenario)
            base_env = {
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("MELTANO_", "TAP_MIXPANEL_PARALLEL_"))
            }
            meltano_env = {
                **base_env,
                **MELTANO_ENV,
                "MELTANO_SYS_DIR_ROOT": str(work / ".meltano"),
                "MELTANO_DATABASE_URI": f"sqlite:///{work / 'meltano.db'}",
                "TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA": SCHEMA_MAIN,
                "TAP_MIXPANEL_PARALLEL_BATCH_CONFIG": json.dumps(
                    bench.batch_config(work / "batches")
                ),
                **{
                    f"TAP_MIXPANEL_PARALLEL_{key.upper()}": str(value)
                    for key, value in json.loads(config.read_text()).items()
                },
            }
            print(f"== main job: {scenario.describe()}; meltano install (not timed)", flush=True)
            install = subprocess.run(
                [str(meltano), "install"], env=meltano_env, cwd=ROOT, capture_output=True,
                text=True, check=False,
            )  # fmt: skip
            if install.returncode != 0:
                print(install.stderr[-4000:], file=sys.stderr)
                return 1
            # The floor's input: the very records the main job's tap writes, as BATCH files.
            records_dir = work / "records"
            batch_cfg = bench.tap_config(
                work / "tap-batch.json", server.url, scenario,
                batch_config=bench.batch_config(records_dir), sanitize_text=True,
            )  # fmt: skip
            subprocess.run(
                [*bench.tap_command(batch_cfg)], stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, check=True, cwd=ROOT,
            )  # fmt: skip
            files = sorted(str(p) for p in records_dir.glob("*/*.jsonl"))
            hub = None
            if not args.no_hub:
                print("== Hub path: wheels, meltano init, add from the Hub, install (not timed)")
                wheels = hub_path.build_wheels(work / "dist")
                project = hub_path.create_project(work / "hub" / "project", wheels)
                recreate_database(HUB_DATABASE)
                env = hub_env(json.loads(config.read_text()), work / "hub-batches")
                hub = (project, env)
            runs = run_all(
                args, scenario, repeats, meltano, meltano_env, config, files, logs, expected, hub
            )
        finally:
            server.stop()
            if not args.no_hub:
                drop_database(HUB_DATABASE)
    return report(args, argv, scenario, repeats, runs, expected)


def run_all(
    args, scenario, repeats, meltano, meltano_env, config, files, logs, expected, hub
) -> dict:
    """Every contender ``repeats`` times, alternating, the order rotated each repeat."""
    floor_cmd = [sys.executable, str(HERE / "copy_floor.py"), "--schema", SCHEMA_FLOOR]
    contenders: dict[str, dict[str, Any]] = {
        "hub": {"label": "Hub path: new project from the Hub files", "runs": []},
        "main": {"label": "main job: meltano run ... target-postgres", "runs": []},
        "tap": {"label": "tap alone (RECORD messages to a pipe)", "runs": []},
        "floor": {"label": "COPY floor (psycopg, stdlib json)", "runs": []},
        "floor-raw": {"label": "COPY floor (psycopg, raw properties)", "runs": []},
    }

    def main_job(index: int) -> dict[str, Any]:
        drop_schema(SCHEMA_MAIN)
        command = [str(meltano), "run", "--no-install", "--full-refresh"]
        command += ["tap-mixpanel-parallel", "target-postgres"]
        t = timed(command, meltano_env, logs / f"main.{index}.log")
        rows, keys = row_count(SCHEMA_MAIN) if t.returncode == 0 else (0, 0)
        return {
            "wall": t.wall,
            "ok": t.returncode == 0 and rows == keys == expected,
            "rows": rows,
            "tap_peak_rss_mib": t.peaks_mib.get("tap"),
            "target_peak_rss_mib": t.peaks_mib.get("target"),
            "returncode": t.returncode,
        }

    def hub_job(index: int) -> dict[str, Any]:
        project, env = hub
        with copy_floor.connect(HUB_DATABASE) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{HUB_SCHEMA}" CASCADE')
        command = [str(meltano), "run", "--no-install", "--full-refresh"]
        command += ["tap-mixpanel", "target-postgres"]
        t = timed(command, {**project.env, **env}, logs / f"hub.{index}.log", cwd=project.path)
        ok = t.returncode == 0
        rows, keys = row_count(HUB_SCHEMA, HUB_DATABASE) if ok else (0, 0)
        nulls = null_metadata(HUB_SCHEMA, HUB_DATABASE) if ok else {}
        return {
            "wall": t.wall,
            "ok": ok and rows == keys == expected and not any(nulls.values()),
            "rows": rows,
            "sdc_nulls": nulls,
            "tap_peak_rss_mib": t.peaks_mib.get("tap"),
            "target_peak_rss_mib": t.peaks_mib.get("target"),
            "returncode": t.returncode,
        }

    def tap_alone(index: int) -> dict[str, Any]:
        contender = bench.Contender("tap", "tap", bench.tap_command(config))
        run = bench.run_once(contender, expected, logs, index)
        return {
            "wall": run.wall,
            "ok": run.ok,
            "rows": run.records,
            "peak_rss_mib": run.max_rss_mib,
        }

    def floor(kind: str) -> Any:
        def go(index: int) -> dict[str, Any]:
            t = timed(
                [*floor_cmd, "--json", kind, *files],
                os.environ.copy(),
                logs / f"{kind}.{index}.log",
            )
            rows, keys = row_count(SCHEMA_FLOOR) if t.returncode == 0 else (0, 0)
            return {
                "wall": t.wall,
                "ok": t.returncode == 0 and rows == keys == expected,
                "rows": rows,
                "peak_rss_mib": t.max_rss_mib,
            }

        return go

    jobs = {
        "hub": hub_job,
        "main": main_job,
        "tap": tap_alone,
        "floor": floor("stdlib"),
        "floor-raw": floor("raw"),
    }
    if hub is None:
        del jobs["hub"], contenders["hub"]
    names = list(jobs)
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            run = jobs[name](r)
            run["records_per_s"] = expected / run["wall"] if run["ok"] else 0.0
            contenders[name]["runs"].append(run)
            extra = ""
            if name in ("main", "hub"):
                extra = (
                    f"  tap peak {run['tap_peak_rss_mib'] or 0:.0f} MiB,"
                    f" target peak {run['target_peak_rss_mib'] or 0:.0f} MiB"
                )
            print(
                f"  [{r + 1}/{repeats}] {name:<10} {run['wall']:7.2f} s {run['rows']:>8} rows"
                f" {run['records_per_s']:>8.0f} rec/s{extra}" + ("" if run["ok"] else "  FAILED"),
                flush=True,
            )
    drop_schema(SCHEMA_MAIN)
    drop_schema(SCHEMA_FLOOR)
    return contenders


def report(args, argv, scenario, repeats, contenders, expected) -> int:
    rps = {n: median([r["records_per_s"] for r in c["runs"]]) for n, c in contenders.items()}
    main_runs = contenders["main"]["runs"]
    tap_peak = max((r["tap_peak_rss_mib"] or 0.0) for r in main_runs)
    target_peak = max((r["target_peak_rss_mib"] or 0.0) for r in main_runs)

    def ratio(a: str, b: str) -> float | None:
        return rps[a] / rps[b] if rps[b] else None

    ratios = {
        "main job / today's 1,779 records/s": {"value": rps["main"] / BEFORE_RPS, "goal": ">= 3"},
        "main job / COPY floor (stdlib json)": {"value": ratio("main", "floor"), "goal": ">= 0.3"},
        "main job / COPY floor (raw properties)": {
            "value": ratio("main", "floor-raw"),
            "goal": None,
        },
        "main job / tap alone": {"value": ratio("main", "tap"), "goal": None},
        "Hub path / main job": {
            "value": ratio("hub", "main") if "hub" in rps else None,
            "goal": ">= 0.8",
        },
        "tap peak RSS MiB in the main job": {"value": tap_peak, "goal": None},
        "target-postgres peak RSS MiB": {"value": target_peak, "goal": None},
    }
    all_ok = all(r["ok"] for c in contenders.values() for r in c["runs"])
    command = " ".join(
        [".venv/bin/python benchmarks/main_job.py", *(argv if argv is not None else sys.argv[1:])]
    )
    print("\n" + "=" * 100)
    events = f"{scenario.describe()} + {expected - scenario.events} awkward events"
    print(f"main job: {events}; medians of {repeats} run(s); command: {command}")
    print(f"  {'contender':<46} {'wall s':>8} {'records/s':>10}  ok")
    for c in contenders.values():
        wall = median([r["wall"] for r in c["runs"]])
        good = all(r["ok"] for r in c["runs"])
        name_rps = median([r["records_per_s"] for r in c["runs"]])
        print(f"  {c['label']:<46} {wall:8.2f} {name_rps:10.0f}  {'yes' if good else 'NO'}")
    for label, r in ratios.items():
        value = r["value"]
        shown = "n/a" if value is None else f"{value:.2f}"
        goal = f"(goal {r['goal']})" if r["goal"] else ""
        print(f"    {label:<42} {shown:>8}  {goal} {bench.meets(value, r['goal'])}")
    results = {
        "meta": {
            "command": command,
            "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "repeats": repeats,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "git_commit": bench._git_commit(),
        },
        "scenario": {"days": scenario.days, "events_per_day": scenario.events_per_day,
                     "events": scenario.events, "rows_expected": expected,
                     "awkward_events": not args.no_awkward},
        "contenders": contenders,
        "median_records_per_s": rps,
        "ratios": ratios,
        "all_runs_ok": all_ok,
    }  # fmt: skip
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results written to {args.output}")
    if not all_ok:
        print("some runs failed or loaded the wrong number of rows (see above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

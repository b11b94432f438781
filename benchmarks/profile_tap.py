"""Where the tap spends its time per record: cProfile of one partition's worker path.

The tap parses in worker threads, which cProfile does not follow, so this runs the exact
function a worker runs for one attempt (``ExportWorkers.attempt_with(encoder)``: HTTP stream,
gunzip, line split, ``RecordEncoder.encode``, spool write) on the main thread, against the fake
server in its own process, then copies the spool to /dev/null as the main thread would. It
also times the CLI's fixed start-up cost (``--about``, no request), since wall-time
records/s include it.

    .venv/bin/python benchmarks/profile_tap.py [--events-per-day 10000] [--top 20]
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import pstats
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench import FakeServer, Scenario, tap_command, tap_config  # noqa: E402

from tap_mixpanel_parallel.export.partitions import PlannedPartition  # noqa: E402
from tap_mixpanel_parallel.export.records import RecordEncoder  # noqa: E402
from tap_mixpanel_parallel.export.worker import ExportWorkers  # noqa: E402
from tap_mixpanel_parallel.run.dates import Partition  # noqa: E402
from tap_mixpanel_parallel.settings import Settings  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events-per-day", type=int, default=10_000)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    scenario = Scenario("profile", days=7, events_per_day=args.events_per_day)
    server = FakeServer(scenario)
    try:
        first, last = dt.date(2024, 1, 1), scenario.end
        server.warm([(first, last)])
        with tempfile.TemporaryDirectory() as tmp:
            config_path = tap_config(Path(tmp) / "cfg.json", server.url, scenario)
            import json

            settings = Settings.from_config(json.loads(config_path.read_text()))
            pool = ExportWorkers(settings, "profile")
            encoder = RecordEncoder(time_in_ms=False, zone=None, as_messages=True)
            attempt = pool.attempt_with(encoder)
            planned = PlannedPartition(Partition(first, last), retry_of_failed=False)
            spool = Path(tmp) / "spool.jsonl"
            # One untimed attempt: connection set-up, imports, caches.
            with spool.open("wb", buffering=1 << 20) as sink:
                attempt(planned, sink, threading.Event())
            profiler = cProfile.Profile()
            started = time.perf_counter()
            profiler.enable()
            with spool.open("wb", buffering=1 << 20) as sink:
                count = attempt(planned, sink, threading.Event())
            with spool.open("rb") as src, open("/dev/null", "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            profiler.disable()
            elapsed = time.perf_counter() - started
            pool.close()

            # Unprofiled, for the real per-record cost.
            started = time.perf_counter()
            with spool.open("wb", buffering=1 << 20) as sink:
                attempt(planned, sink, threading.Event())
            plain = time.perf_counter() - started

            started = time.perf_counter()
            subprocess.run(
                [*tap_command(config_path)[:1], "--about"], check=True, capture_output=True
            )
            startup = time.perf_counter() - started
    finally:
        server.stop()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).sort_stats("tottime")
    stats.print_stats(args.top)
    print(out.getvalue())
    print(f"records: {count}")
    print(f"worker path, profiled:   {elapsed:.3f} s = {elapsed / count * 1e6:.1f} us/record")
    print(f"worker path, unprofiled: {plain:.3f} s = {plain / count * 1e6:.1f} us/record")
    print(f"CLI start-up (--about):  {startup:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

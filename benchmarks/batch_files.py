"""The tap alone: RECORD lines to a pipe vs BATCH files (jsonl, none and gzip), side by side.

BATCH copies the lines the workers encoded into files instead of stdout; this measures what the
files cost (and gzip on top) against the RECORD fast path, in one run, alternating the contenders
each repeat, and the bytes each run leaves on disk. Nothing is asserted on speed.

    .venv/bin/python benchmarks/batch_files.py [--days 60] [--events-per-day 5000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench  # noqa: E402


def folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*.jsonl*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--events-per-day", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    scenario = bench.Scenario("batch", days=args.days, events_per_day=args.events_per_day)
    expected = scenario.events
    results: dict[str, Any] = {"scenario": scenario.describe(), "contenders": {}}
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        work = Path(tmp)
        logs = work / "logs"
        logs.mkdir()
        server = bench.FakeServer(scenario)
        try:
            server.warm(bench.partitions(scenario))
            contenders: dict[str, tuple[bench.Contender, Path | None]] = {}
            record_cfg = bench.tap_config(work / "records.json", server.url, scenario)
            contenders["record"] = (
                bench.Contender("record", "RECORD lines", bench.tap_command(record_cfg)),
                None,
            )
            for compression in ("none", "gzip"):
                root = work / f"batches-{compression}"
                cfg = bench.tap_config(
                    work / f"{compression}.json",
                    server.url,
                    scenario,
                    batch_config=bench.batch_config(root, compression),
                )
                name = f"batch-{compression}"
                label = f"BATCH jsonl, compression {compression}"
                contenders[name] = (bench.Contender(name, label, bench.tap_command(cfg)), root)
            sizes: dict[str, list[int]] = {name: [] for name in contenders}
            records: dict[str, list[int]] = {name: [] for name in contenders}
            order = list(contenders)
            for index in range(args.repeat):
                for name in order[index % len(order) :] + order[: index % len(order)]:
                    contender, root = contenders[name]
                    if root is not None:
                        shutil.rmtree(root, ignore_errors=True)
                    # BATCH runs write no RECORD line: count them from the files instead
                    run = bench.run_once(contender, 0 if root else expected, logs, index)
                    if root is not None:
                        written = 0
                        for path in root.rglob("*.jsonl*"):
                            data = path.read_bytes()
                            if path.suffix == ".gz":
                                data = gzip.decompress(data)
                            written += data.count(b"\n")
                        run.records = written
                        run.expected_records = expected
                        sizes[name].append(folder_bytes(root))
                    contender.runs.append(run)
                    records[name].append(run.records)
                    time.sleep(0.2)
        finally:
            server.stop()
    base = statistics.median(r.records_per_second for r in contenders["record"][0].runs)
    print(f"== {scenario.describe()}, {args.repeat} repeats, medians")
    print(f"{'contender':38} {'records/s':>10} {'vs RECORD':>9} {'CPU s':>7} {'MiB on disk':>11}")
    ok = True
    for name, (contender, _) in contenders.items():
        rps = contender.median("records_per_second")
        mib = statistics.median(sizes[name]) / bench.MIB if sizes[name] else 0.0
        ok = ok and all(run.ok for run in contender.runs)
        print(
            f"{contender.label:38} {rps:10.0f} {rps / base:9.2f} {contender.median('cpu'):7.1f}"
            f" {mib:11.1f}"
        )
        results["contenders"][name] = {
            "label": contender.label,
            "records_per_second": rps,
            "ratio_to_record": rps / base,
            "cpu_seconds": contender.median("cpu"),
            "mib_on_disk": mib,
            "records": records[name],
        }
    if args.output:
        args.output.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

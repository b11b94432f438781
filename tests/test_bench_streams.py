"""The every-stream-at-once benchmark runs end to end (``--quick``); no timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_streams_benchmark_runs_and_reports_both_ratios(tmp_path: Path) -> None:
    output = tmp_path / "results-streams.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "streams.py"),
            "--quick",
            "--output",
            str(output),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "both_over_longest" in result.stdout and "both_over_sum" in result.stdout
    results = json.loads(output.read_text())
    assert results["all_runs_ok"] is True
    assert [run["records"] for run in results["both"]] == [
        results["events"][0]["records"] + results["engage"][0]["records"]
    ]
    assert results["both_over_longest"] > 0

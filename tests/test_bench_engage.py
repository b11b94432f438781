"""The engage benchmark script runs end to end (``--quick``); no timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_engage_benchmark_runs_and_reports_its_ratios(tmp_path: Path) -> None:
    output = tmp_path / "results-engage.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "engage.py"),
            "--quick",
            "--profiles",
            "3000",
            "--output",
            str(output),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "parallel_speedup" in result.stdout and "peak_rss_mib" in result.stdout
    results = json.loads(output.read_text())
    assert results["profiles"] == 3000
    assert all(run["records"] == 3000 for run in results["parallel"] + results["serial"])
    assert results["parallel_speedup"] > 0

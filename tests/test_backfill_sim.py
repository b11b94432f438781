"""The backfill simulation runs, drives the tap's own planner and splitter, and checks every day.

Nothing is asserted on speed here: the script prints its ratios and goals side by side.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIM = ROOT / "benchmarks" / "backfill_sim.py"


def test_the_simulation_runs_every_strategy_and_every_day_is_accounted_for(tmp_path):
    out = tmp_path / "sim.json"
    proc = subprocess.run(
        [sys.executable, str(SIM), "--json", str(out)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "CHECK FAILED" not in proc.stdout
    report = json.loads(out.read_text())
    assert len(report["scenarios"]) >= 3
    for scenario in report["scenarios"]:
        names = [o["strategy"] for o in scenario["outcomes"]]
        assert names == [
            "fixed 7-day (before)",
            "fixed 30-day (singer-io size)",
            "fixed 7-day + halves (default)",
            "fit_budget + halves (plan)",
        ]
        for outcome in scenario["outcomes"]:
            assert outcome["errors"] == []
            assert outcome["days_delivered"] + outcome["days_owed"] == scenario["scenario"]["days"]
            if "halves" in outcome["strategy"]:
                # fetched in halves, every week too large to serve whole is delivered
                assert outcome["days_owed"] == 0
                assert outcome["too_large_weeks_delivered"] == outcome["too_large_weeks"]
        assert "plan vs fixed 7-day" in proc.stdout

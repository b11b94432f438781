"""The benchmark script runs end to end (``--quick``); no timing is asserted on the tap.

Also covers the fake server's ``throttle_payload`` switch, which the latency-bound benchmark
relies on: without it a gzipped body would go out ~6x faster than its payload rate.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tap_mixpanel_parallel.testing.fake_server import FakeMixpanel

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks" / "bench.py"
DAY = dt.date(2024, 1, 1)

EXPECTED_RATIOS = (
    "tap/floor",
    "tap/floor-msgspec",
    "plain-sdk/floor",
    "tap/plain-sdk",
    "speedup w10/w1 (3 req/s)",
    "speedup w10/w1 (100 req/s)",
    "tap peak RSS MiB (max of runs)",
)


def test_quick_benchmark_runs_and_reports_ratios(tmp_path: Path) -> None:
    output = tmp_path / "results.json"
    result = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for label in EXPECTED_RATIOS:
        assert label in result.stdout
    results = json.loads(output.read_text())
    assert results["all_runs_ok"] is True
    assert results["meta"]["quick"] is True
    assert "singer-io" not in results["meta"]["parts"]
    for label in EXPECTED_RATIOS:
        value = results["ratios"][label]["value"]
        assert isinstance(value, float)
        assert value > 0
    throughput = results["scenarios"]["throughput"]["contenders"]
    assert set(throughput) == {"floor", "floor-msgspec", "plain-sdk", "tap"}
    for contender in throughput.values():
        assert contender["runs"][0]["records"] == contender["runs"][0]["expected_records"]


@pytest.mark.postgres
@pytest.mark.meltano
def test_quick_main_job_benchmark_runs_and_reports_ratios(tmp_path: Path) -> None:
    """The real meltano run into PostgreSQL, the tap alone and the floors, each once."""
    from tests.test_meltano import psql, unavailable

    try:
        psql("SELECT 1")
    except (AssertionError, OSError, subprocess.TimeoutExpired) as exc:
        unavailable(f"PostgreSQL unreachable: {exc}")
    output = tmp_path / "main_job.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "main_job.py"),
            "--quick",
            # the Hub path's project is built and run by tests/test_hub_path.py
            "--no-hub",
            "--output",
            str(output),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads(output.read_text())
    assert results["all_runs_ok"] is True
    assert set(results["contenders"]) == {"main", "tap", "floor", "floor-raw"}
    for label in (
        "main job / today's 1,779 records/s",
        "main job / COPY floor (stdlib json)",
        "tap peak RSS MiB in the main job",
        "target-postgres peak RSS MiB",
    ):
        assert label in result.stdout
        assert results["ratios"][label]["value"] > 0
    (main,) = results["contenders"]["main"]["runs"]
    # every event once, the server's awkward ones (5 a day) included
    scenario = results["scenario"]
    assert scenario["awkward_events"] is True
    assert main["rows"] == scenario["rows_expected"] == scenario["events"] + 5 * scenario["days"]


def test_bench_rejects_an_unknown_part(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--only", "nope", "--output", str(tmp_path / "r.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "unknown --only" in result.stderr


@pytest.mark.parametrize("cache_bodies", [False, True])
def test_throttle_payload_paces_by_bytes_before_gzip(cache_bodies: bool) -> None:
    bps = 400_000
    with FakeMixpanel(
        start=DAY,
        days=1,
        events_per_day=300,
        bytes_per_second=bps,
        throttle_payload=True,
        cache_bodies=cache_bodies,
    ) as fake:
        started = time.monotonic()
        response = requests.get(
            f"{fake.url}/api/2.0/export",
            params={"from_date": "2024-01-01", "to_date": "2024-01-01", "project_id": "12345"},
            auth=("svc-user", "svc-secret"),
            headers={"Accept-Encoding": "gzip"},
            timeout=30,
        )
        elapsed = time.monotonic() - started
        payload = len(response.content)
        assert response.status_code == 200
        assert response.headers["Content-Encoding"] == "gzip"
        deadline = time.monotonic() + 10
        while not fake.requests_log and time.monotonic() < deadline:
            time.sleep(0.01)  # the server logs a request just after its last byte
        assert fake.requests_log[-1].bytes_sent < payload / 2  # really compressed
        # A lower bound only: a busy machine can be slower, never faster than the throttle.
        assert elapsed >= 0.8 * payload / bps

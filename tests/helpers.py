"""What several test files share: the test credentials, configs, parsed CLI runs, waits."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tap_mixpanel_parallel.testing.fake_server import FakeMixpanel

USER = "svc-user-test"
SECRET = "svc-secret-7c1f9e2d"  # distinctive, so a leak is easy to find in any output
PROJECT_ID = 4242
#: The columns of an ``events`` record.
EVENT_COLUMNS = {"event", "time", "distinct_id", "device_id", "user_id", "insert_id", "properties"}
TAP = str(Path(sys.executable).with_name("tap-mixpanel-parallel"))


def base_config(server: FakeMixpanel, **overrides: Any) -> dict[str, Any]:
    """A config for the fake server, with budgets loose enough for quick tests."""
    config: dict[str, Any] = {
        "service_account_username": USER,
        "service_account_secret": SECRET,
        "project_id": PROJECT_ID,
        "api_url": server.url,
        "start_date": server.start_date.isoformat(),
        "end_date": server.today.isoformat(),
        "max_requests_per_second": 50,
        "max_requests_per_hour": 10000,
        "lookback_days": 0,
    }
    config.update(overrides)
    return config


@dataclass
class TapRun:
    """What one CLI run printed, parsed."""

    returncode: int
    stdout: str
    stderr: str
    messages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def records(self) -> list[dict[str, Any]]:
        return [m["record"] for m in self.messages if m["type"] == "RECORD"]

    @property
    def states(self) -> list[dict[str, Any]]:
        return [m["value"] for m in self.messages if m["type"] == "STATE"]

    @property
    def last_state(self) -> dict[str, Any]:
        return self.states[-1]

    @property
    def bookmark(self) -> dict[str, Any]:
        return self.last_state["bookmarks"]["events"]

    def insert_ids(self) -> list[str]:
        return [r["insert_id"] for r in self.records]


def parse_messages(stdout: str) -> list[dict[str, Any]]:
    """Every stdout line must be a whole Singer message: a partial line fails here."""
    return [json.loads(line) for line in stdout.splitlines() if line]


def expected_ids(server: FakeMixpanel, start: dt.date, end: dt.date) -> list[str]:
    return [e["properties"]["$insert_id"] for e in server.events(start, end)]


def export_requests(server: FakeMixpanel) -> list[Any]:
    """The server's log of export requests (not those of other endpoints)."""
    return [r for r in server.requests_log if r.path.startswith("/api/2.0/export")]


def wait_for(condition: Any, timeout: float = 20.0) -> None:
    """Poll ``condition`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def tap_args(folder: Path, config: dict[str, Any], state: dict[str, Any] | None) -> list[str]:
    """The CLI's arguments, with the config (and state) written to fresh files in ``folder``."""
    config_path = folder / f"config-{time.monotonic_ns()}.json"
    config_path.write_text(json.dumps(config))
    args = [TAP, "--config", str(config_path)]
    if state is not None:
        state_path = folder / f"state-{time.monotonic_ns()}.json"
        state_path.write_text(json.dumps(state))
        args += ["--state", str(state_path)]
    return args


def wait_until_idle(server: FakeMixpanel, timeout: float = 10.0) -> None:
    """Until no request is in flight: the server logs a request once its handler is done."""
    deadline = time.monotonic() + timeout
    while server.in_flight and time.monotonic() < deadline:
        time.sleep(0.02)


def all_ids(server: FakeMixpanel) -> list[str]:
    """Every event the server holds, sorted by ``$insert_id``."""
    return sorted(expected_ids(server, server.start_date, server.today))


def assert_exactly_once(run: TapRun, server: FakeMixpanel) -> None:
    """The run emitted every event of the server once, and nothing else."""
    ids = run.insert_ids()
    dupes = [i for i, n in Counter(ids).items() if n > 1]
    assert not dupes, f"{len(dupes)} events emitted more than once"
    assert sorted(ids) == all_ids(server), "events missing (or unexpected) in the output"


def discover(config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """The catalog the installed CLI discovers with ``config``."""
    config_path = tmp_path / f"discover-config-{time.monotonic_ns()}.json"
    config_path.write_text(json.dumps(config))
    proc = subprocess.run(
        [TAP, "--config", str(config_path), "--discover"],
        capture_output=True,
        text=True,
        check=True,
    )
    catalog: dict[str, Any] = json.loads(proc.stdout)
    return catalog


@contextmanager
def machine_zone(name: str) -> Iterator[None]:
    """The machine's local timezone set to ``name`` for the block (POSIX TZ and tzset)."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = name
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()


def most_at_once(requests: list[Any]) -> int:
    """The most of ``requests`` (server log entries) that were in flight at one moment."""
    edges = sorted([(r.started, 1) for r in requests] + [(r.ended, -1) for r in requests])
    peak = now = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return peak

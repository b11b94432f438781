"""Shared fixtures: the project's fake Mixpanel server and the real CLI as a subprocess."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tap_mixpanel_parallel.testing.fake_server import FakeMixpanel

USER = "svc-user-test"
SECRET = "svc-secret-7c1f9e2d"  # distinctive, so a leak is easy to find in any output
PROJECT_ID = 4242
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


@pytest.fixture
def run_tap(tmp_path: Path):
    """Run the installed console script, as a user would."""

    def run(
        config: dict[str, Any],
        state: dict[str, Any] | None = None,
        *,
        timeout: float = 120,
        extra_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> TapRun:
        args = [*tap_args(tmp_path, config, state), *extra_args]
        proc = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
            check=False,
        )
        return TapRun(proc.returncode, proc.stdout, proc.stderr, parse_messages(proc.stdout))

    return run


@pytest.fixture
def start_tap(tmp_path: Path):
    """Start the CLI in the background (for signal tests); yields a Popen factory."""
    procs: list[subprocess.Popen[str]] = []

    def start(config: dict[str, Any], state: dict[str, Any] | None = None) -> subprocess.Popen[str]:
        args = tap_args(tmp_path, config, state)
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()


@pytest.fixture
def fake_server() -> Iterator[Any]:
    """Factory for started fake servers, stopped after the test."""
    servers: list[FakeMixpanel] = []

    def make(**kwargs: Any) -> FakeMixpanel:
        kwargs.setdefault("service_account", (USER, SECRET))
        kwargs.setdefault("project_id", PROJECT_ID)
        server = FakeMixpanel(**kwargs).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()

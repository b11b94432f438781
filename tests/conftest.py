"""Shared fixtures: the project's fake Mixpanel server and the real CLI as a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tap_mixpanel_parallel.testing.fake_server import FakeMixpanel
from tests.helpers import PROJECT_ID, SECRET, TAP, USER, TapRun, parse_messages


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
        config_path = tmp_path / f"config-{time.monotonic_ns()}.json"
        config_path.write_text(json.dumps(config))
        args = [TAP, "--config", str(config_path), *extra_args]
        if state is not None:
            state_path = tmp_path / f"state-{time.monotonic_ns()}.json"
            state_path.write_text(json.dumps(state))
            args += ["--state", str(state_path)]
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
        config_path = tmp_path / f"config-{time.monotonic_ns()}.json"
        config_path.write_text(json.dumps(config))
        args = [TAP, "--config", str(config_path)]
        if state is not None:
            state_path = tmp_path / f"state-{time.monotonic_ns()}.json"
            state_path.write_text(json.dumps(state))
            args += ["--state", str(state_path)]
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

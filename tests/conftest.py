"""Shared fixtures: the project's fake Mixpanel server and the real CLI as a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings

from tap_mixpanel_parallel.testing.fake_server import FakeMixpanel
from tests.helpers import (
    PROJECT_ID,
    SECRET,
    USER,
    TapRun,
    discover,
    parse_messages,
    tap_args,
)

# No timing in tests: these machines are shared and noisy, and a property either holds or not.
# A slow first example (imports, a cold cache) is no failure.
settings.register_profile(
    "shared-machine", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("shared-machine")

# scripts/mutation.sh runs the tests once per mutant and needs only pass or fail: the same
# examples every run (so the score does not wander), no example database carried from one mutant
# to the next, and no shrinking of a failure nobody reads.
settings.register_profile(
    "mutation",
    parent=settings.get_profile("shared-machine"),
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
)

# Modules whose tests start the installed CLI (or another program) as a subprocess; with the
# tests that use the fixtures below, they carry the `cli` marker, which the lowest-versions run
# of .ci/check leaves out to stay quick.
_SUBPROCESS_MODULES = {
    "test_backfill_sim",
    "test_batch",
    "test_batch_storage",
    "test_bench_engage",
    "test_bench_streams",
    "test_benchmarks",
    "test_cli_export",
    "test_cli_modes",
    "test_cli_query",
    "test_config_errors",
    "test_every_stream_at_once",
    "test_faults",
    "test_import_contracts",
    "test_mixpanel_answers",
    "test_packaging",
    "test_signals",
    "test_state_files",
}
_SUBPROCESS_FIXTURES = {"run_tap", "start_tap"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = getattr(item, "module", None)
        name = module.__name__.rpartition(".")[2] if module else ""
        fixtures = set(getattr(item, "fixturenames", ()))
        if name in _SUBPROCESS_MODULES or fixtures & _SUBPROCESS_FIXTURES:
            item.add_marker(pytest.mark.cli)
        if item.get_closest_marker("meltano"):
            # pytest-xdist (`--dist loadgroup`, pyproject.toml) keeps a module's Meltano tests on
            # one worker, so its session-wide `meltano install` is made once, not once a worker.
            item.add_marker(pytest.mark.xdist_group(name))
    # The Meltano modules are the longest chains of tests that cannot be spread: handed out
    # first, they run beside everything else instead of after it. The sort is stable and the
    # same on every worker, as xdist requires.
    items.sort(key=lambda item: item.get_closest_marker("meltano") is None)


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


@pytest.fixture
def catalog_for(tmp_path: Path):
    """A catalog selecting exactly the given streams (and all their fields)."""

    def make(config: dict[str, Any], *names: str) -> tuple[str, str]:
        catalog = discover(config, tmp_path)
        for stream in catalog["streams"]:
            for entry in stream["metadata"]:
                entry["metadata"]["selected"] = stream["tap_stream_id"] in names
        path = tmp_path / f"catalog-{'-'.join(names)}.json"
        path.write_text(json.dumps(catalog))
        return ("--catalog", str(path))

    return make

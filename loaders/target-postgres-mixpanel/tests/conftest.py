"""Fixtures: the real PostgreSQL, the two targets run as CLIs, and moto's S3 server on loopback.

Each test loads the same messages with the stock ``target-postgres`` (meltanolabs-target-postgres,
installed as this package's dependency) and with ``target-postgres-mixpanel``, each into a schema
of its own, and compares the two tables. Without PostgreSQL the tests that need it skip, unless
``REQUIRE_POSTGRES=1`` (CI), where they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

PG = {
    "host": os.environ.get("PGHOST", "127.0.0.1"),
    "port": int(os.environ.get("PGPORT", "5432")),
    "user": os.environ.get("PGUSER", "tap"),
    "password": os.environ.get("PGPASSWORD", "tap"),
    "database": os.environ.get("PGDATABASE", "tap_test"),
}
BIN = Path(sys.executable).parent
STOCK = "target-postgres"
FAST = "target-postgres-mixpanel"


def sql(query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of one statement, in a connection of its own (autocommit)."""
    with psycopg.connect(
        host=PG["host"],
        port=PG["port"],
        user=PG["user"],
        password=PG["password"],
        dbname=PG["database"],
        autocommit=True,
    ) as connection:
        cursor = connection.execute(query, params)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description else []


@pytest.fixture(scope="session")
def postgres() -> None:
    try:
        sql("SELECT 1")
    except psycopg.OperationalError as error:
        message = f"PostgreSQL at {PG['host']}:{PG['port']} not reachable: {error}"
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail(message)
        pytest.skip(message)


@dataclass
class Run:
    """One target run: its exit code, STATE lines and log."""

    returncode: int
    states: list[dict[str, Any]]
    stderr: str


@dataclass
class Pair:
    """The stock target and this one, each with a schema of its own, fed the same messages."""

    stock_schema: str
    fast_schema: str
    tmp_path: Path

    def run(
        self,
        messages: list[dict[str, Any]],
        config: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
    ) -> tuple[Run, Run]:
        stock = run_target(STOCK, self.stock_schema, messages, config, env, self.tmp_path)
        fast = run_target(FAST, self.fast_schema, messages, config, env, self.tmp_path)
        assert stock.returncode == 0, stock.stderr[-3000:]
        assert fast.returncode == 0, fast.stderr[-3000:]
        assert fast.states == stock.states
        return stock, fast

    def assert_same_rows(self, table: str) -> int:
        """Both tables hold the same columns and rows, checked both ways; returns the count."""
        columns = (
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name = %s ORDER BY column_name"
        )
        stock_columns = sql(columns, (self.stock_schema, table))
        assert stock_columns
        assert sql(columns, (self.fast_schema, table)) == stock_columns
        names = ", ".join(f'"{name}"' for name, _ in stock_columns)
        stock, fast = f'"{self.stock_schema}"."{table}"', f'"{self.fast_schema}"."{table}"'
        for left, right in ((stock, fast), (fast, stock)):
            extra = sql(f"SELECT {names} FROM {left} EXCEPT ALL SELECT {names} FROM {right}")
            assert extra == [], f"rows in {left} and not in {right}: {extra[:3]}"
        (count,) = sql(f"SELECT count(*) FROM {fast}")[0]
        assert count == sql(f"SELECT count(*) FROM {stock}")[0][0]
        return int(count)


def run_target(
    executable: str,
    schema: str,
    messages: list[dict[str, Any]],
    config: dict[str, Any] | None,
    env: dict[str, str] | None,
    tmp_path: Path,
) -> Run:
    settings = {**PG, "default_target_schema": schema, "load_method": "upsert", "use_copy": True}
    settings.update(config or {})
    config_file = tmp_path / f"{executable}-{uuid.uuid4().hex}.json"
    config_file.write_text(json.dumps(settings))
    result = subprocess.run(
        [str(BIN / executable), "--config", str(config_file)],
        input="".join(json.dumps(m) + "\n" for m in messages),
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
        check=False,
    )
    states = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return Run(result.returncode, states, result.stderr)


def _pair(tmp_path: Path) -> Iterator[Pair]:
    suffix = uuid.uuid4().hex[:12]
    made = Pair(f"stock_{suffix}", f"fast_{suffix}", tmp_path)
    yield made
    if os.environ.get("KEEP_SCHEMAS") == "1":  # to look at a failure's tables
        return
    for schema in (made.stock_schema, made.fast_schema):
        sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def pair(postgres: None, tmp_path: Path) -> Iterator[Pair]:
    """Two schemas of this test's own."""
    yield from _pair(tmp_path)


@pytest.fixture(scope="module")
def module_pair(postgres: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """Two schemas shared by a module's tests: the targets start once for all of them."""
    yield from _pair(tmp_path_factory.mktemp("pair"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def s3_server() -> Iterator[dict[str, str]]:
    """moto's standalone S3 server on loopback; the environment that points clients at it."""
    executable = shutil.which("moto_server", path=str(BIN))
    assert executable, "moto_server not installed (moto[server], test group)"
    port = _free_port()
    process = subprocess.Popen(
        [executable, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, "moto_server exited"
                assert time.monotonic() < deadline, "moto_server did not start"
                time.sleep(0.1)
        yield {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    finally:
        process.terminate()
        process.wait(timeout=10)

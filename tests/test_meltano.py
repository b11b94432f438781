"""``meltano run tap-mixpanel-parallel target-postgres``, end to end.

The real ``meltano`` CLI runs the repository's own meltano.yml (cwd = the repo root), with its
system directory (plugin venvs, catalog cache) moved to a temporary folder by
``MELTANO_SYS_DIR_ROOT`` and installed once per session with a real ``meltano install``. Each test
gets a system database of its own (``MELTANO_DATABASE_URI``), so the state ids are Meltano's
defaults (``dev:tap-mixpanel-parallel-to-target-postgres``) and no test sees another's state.
The tap's settings come from ``TAP_MIXPANEL_PARALLEL_*`` variables, as a user would set them, and
point at the fake server started in this process on a loopback port.

PostgreSQL is the one ``.ci/postgres.sh`` provisions; each test loads into a schema of its own and
drops it afterwards. Without PostgreSQL these tests skip, unless ``REQUIRE_POSTGRES=1`` (CI), where
they fail. Queries go through ``psql``, so the test process needs no database driver.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from tap_mixpanel_parallel.testing.fake_server import FakeMixpanel, Faults
from tests.helpers import SECRET, base_config, expected_ids

pytestmark = pytest.mark.meltano

D = dt.date
ROOT = Path(__file__).resolve().parents[1]
MELTANO = Path(sys.executable).with_name("meltano")
EXTRACTOR = "tap-mixpanel-parallel"
RECORDS_EXTRACTOR = "tap-mixpanel-parallel--records"  # RECORD messages, for target-jsonl
PG = {"host": "127.0.0.1", "port": "5432", "user": "tap", "password": "tap", "dbname": "tap_test"}
# Settings of the plugins and Meltano itself that a developer's shell might carry into the run.
FOREIGN_ENV_PREFIXES = (
    "MELTANO_",
    "TAP_MIXPANEL_PARALLEL_",
    "TARGET_POSTGRES_",
    "TARGET_JSONL_",
    "COVERAGE_PROCESS_",
)
CI_ENV = {
    "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
    "MELTANO_DISABLE_TRACKING": "true",
    "MELTANO_CLI_DISABLE_VERSION_CHECK": "true",
    "MELTANO_CLI_LOG_FORMAT": "uncolored",
}


def strict() -> bool:
    return os.environ.get("REQUIRE_POSTGRES") == "1"


def unavailable(reason: str) -> None:
    if strict() or os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


# -- meltano --------------------------------------------------------------------------------------


@dataclass
class Meltano:
    """The meltano CLI against the repo's meltano.yml, with a private system dir and database."""

    env: dict[str, str]

    def __call__(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 240
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(MELTANO), *args],
            cwd=ROOT,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def with_database(self, path: Path) -> Meltano:
        return Meltano({**self.env, "MELTANO_DATABASE_URI": f"sqlite:///{path}"})

    def run(
        self, loader: str, env: dict[str, str], extractor: str = EXTRACTOR
    ) -> subprocess.CompletedProcess[str]:
        return self("run", "--no-install", extractor, loader, env=env)

    def state(self, loader: str, extractor: str = EXTRACTOR) -> dict[str, Any]:
        proc = self("state", "get", f"dev:{extractor}-to-{loader}")
        assert proc.returncode == 0, proc.stderr
        state: dict[str, Any] = json.loads(proc.stdout)["singer_state"]
        return state


@pytest.fixture(scope="session")
def meltano_installed(tmp_path_factory) -> Meltano:
    """``meltano install`` once per session, into a temporary system dir."""
    if not MELTANO.exists():
        unavailable(f"{MELTANO} is missing: pip install -e . --group dev")
    home = tmp_path_factory.mktemp("meltano")
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_ENV_PREFIXES)}
    env.update(CI_ENV)
    env["MELTANO_SYS_DIR_ROOT"] = str(home / ".meltano")
    env["MELTANO_DATABASE_URI"] = f"sqlite:///{home / 'install.db'}"
    meltano = Meltano(env)
    proc = meltano("install", timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return meltano


@pytest.fixture
def meltano(meltano_installed, tmp_path) -> Meltano:
    """A system database and a BATCH folder of the test's own."""
    meltano = meltano_installed.with_database(tmp_path / "meltano.db")
    # meltano.yml's batch_config with the test's own root, the whole object in one variable
    # (a nested one, ..._BATCH_CONFIG_STORAGE_ROOT, would crash Meltano 4.4.1 on the RECORD
    # variant, whose batch_config is false)
    project = yaml.safe_load((ROOT / "meltano.yml").read_text())
    (extractor,) = [e for e in project["plugins"]["extractors"] if e["name"] == EXTRACTOR]
    batch_config = extractor["config"]["batch_config"]
    batch_config["storage"]["root"] = (tmp_path / "batches").as_uri()
    meltano.env[BATCH_CONFIG_ENV] = json.dumps(batch_config)
    return meltano


def tap_env(server, **overrides: Any) -> dict[str, str]:
    """The tap's config as Meltano environment variables, with only ``events`` selected.

    Most tests here are about the export; the shipped selection (events and the Query API
    streams meltano.yml selects) is what test_engage_loads_beside_events... runs.
    """
    config = base_config(server, **overrides)
    env = {f"TAP_MIXPANEL_PARALLEL_{key.upper()}": str(value) for key, value in config.items()}
    env[SELECT_ENV] = json.dumps(["events.*"])
    return env


SELECT_ENV = "TAP_MIXPANEL_PARALLEL__SELECT"
BATCH_CONFIG_ENV = "TAP_MIXPANEL_PARALLEL_BATCH_CONFIG"


def succeeded(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stderr[-6000:]
    return proc.stderr


def export_ranges(server) -> list[tuple[str, str]]:
    return sorted(
        (r.from_date, r.to_date)
        for r in server.requests_log
        if r.path.startswith("/api/2.0/export")
    )


# -- postgres -------------------------------------------------------------------------------------


def psql(sql: str, timeout: float = 30, dbname: str = PG["dbname"]) -> list[str]:
    proc = subprocess.run(
        [
            "psql",
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            PG["host"],
            "-p",
            PG["port"],
            "-U",
            PG["user"],
            "-d",
            dbname,
            "-c",
            sql,
        ],
        env={**os.environ, "PGPASSWORD": PG["password"], "PGCONNECT_TIMEOUT": "5"},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stdout.splitlines() if line]


@pytest.fixture(scope="session")
def postgres() -> None:
    try:
        psql("SELECT 1")
    except (AssertionError, OSError, subprocess.TimeoutExpired) as exc:
        unavailable(
            f"PostgreSQL {PG['user']}@{PG['host']}:{PG['port']}/{PG['dbname']} unreachable"
            f" (start it with `bash .ci/postgres.sh`): {exc}"
        )


@pytest.fixture
def schema(postgres) -> Any:
    """A schema of this test's own for target-postgres, dropped afterwards."""
    name = f"mp_test_{uuid.uuid4().hex[:12]}"
    yield name
    psql(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def table_ids(schema: str) -> list[str]:
    return psql(f"SELECT insert_id FROM {schema}.events")


def assert_each_event_once(schema: str, server, start: dt.date, end: dt.date) -> None:
    ids = table_ids(schema)
    duplicated = [i for i, n in Counter(ids).items() if n > 1]
    assert not duplicated, f"{len(duplicated)} events loaded twice"
    assert sorted(ids) == sorted(expected_ids(server, start, end))


# -- the tests ------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_run_loads_every_event_once_into_postgres(schema, meltano, fake_server):
    server = fake_server(start=D(2024, 1, 1), days=24, events_per_day=30)
    env = {**tap_env(server), "TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA": schema}
    log = succeeded(meltano.run("target-postgres", env))

    assert export_ranges(server) == [
        ("2024-01-01", "2024-01-07"),
        ("2024-01-08", "2024-01-14"),
        ("2024-01-15", "2024-01-21"),
        ("2024-01-22", "2024-01-24"),
    ]
    assert_each_event_once(schema, server, D(2024, 1, 1), D(2024, 1, 24))

    # properties is jsonb, whole: top-level and nested keys are queryable
    (kind,) = psql(
        "SELECT data_type FROM information_schema.columns"
        f" WHERE table_schema = '{schema}' AND table_name = 'events'"
        " AND column_name = 'properties'"
    )
    assert kind == "jsonb"
    (matching,) = psql(
        f"SELECT count(*) FROM {schema}.events"
        " WHERE properties->>'$insert_id' = insert_id AND properties->>'distinct_id' = distinct_id"
    )
    assert int(matching) == 24 * 30
    sample = next(iter(server.events(D(2024, 1, 10), D(2024, 1, 10))))
    props = sample["properties"]
    (row,) = psql(
        "SELECT properties->'plan'->>'tier' || '|' || (properties->'plan'->>'seats')::int"
        f" || '|' || jsonb_array_length(properties->'tags') || '|' || event"
        f" FROM {schema}.events WHERE insert_id = '{props['$insert_id']}'"
    )
    assert (
        row
        == f"{props['plan']['tier']}|{props['plan']['seats']}|{len(props['tags'])}|"
        + (sample["event"])
    )
    # upserts key on Mixpanel's deduplication key
    key = psql(
        "SELECT kcu.column_name FROM information_schema.table_constraints tc"
        " JOIN information_schema.key_column_usage kcu"
        " ON tc.constraint_name = kcu.constraint_name AND tc.table_schema = kcu.table_schema"
        f" WHERE tc.table_schema = '{schema}' AND tc.table_name = 'events'"
        " AND tc.constraint_type = 'PRIMARY KEY'"
    )
    assert sorted(key) == ["distinct_id", "event", "insert_id", "time"]

    # the main job's fast path: BATCH files, one manifest per partition, no RECORD lines
    assert "BATCH files go to" in log
    # one STATE per partition, and one the SDK writes after the first BATCH message, adding
    # events' empty entry before the first partition's bookmark (no bookmark moves in it)
    assert "0 records, 4 batch manifests, 5 state messages" in log
    # Meltano relays the tap's plain progress lines; no terminal bar into its pipe
    assert "partition 4/4 2024-01-22..2024-01-24: 90 records" in log
    assert "export finished: 720 records, 4 partitions ok, 0 failed" in log
    assert "\r" not in log
    assert SECRET not in log
    state = meltano.state("target-postgres")
    assert state["bookmarks"]["events"]["replication_key_value"] == "2024-01-24"
    assert state["bookmarks"]["events"]["failed_partitions"] == []


@pytest.mark.postgres
def test_second_run_fetches_only_new_days_plus_lookback(schema, meltano, fake_server):
    server = fake_server(start=D(2024, 1, 1), days=14, events_per_day=20)
    target = {"TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA": schema}
    succeeded(meltano.run("target-postgres", {**tap_env(server, lookback_days=2), **target}))
    assert_each_event_once(schema, server, D(2024, 1, 1), D(2024, 1, 14))

    server.add_days(10)
    server.reset_stats()
    env = {**tap_env(server, lookback_days=2, end_date=server.today.isoformat()), **target}
    log = succeeded(meltano.run("target-postgres", env))
    # bookmark 01-14 and lookback 2: from 01-13 to the new last day, 01-24
    assert export_ranges(server) == [("2024-01-13", "2024-01-19"), ("2024-01-20", "2024-01-24")]
    assert "export finished: 240 records, 2 partitions ok" in log
    # the re-read days were upserted, not appended
    assert_each_event_once(schema, server, D(2024, 1, 1), D(2024, 1, 24))
    assert meltano.state("target-postgres")["bookmarks"]["events"]["replication_key_value"] == (
        "2024-01-24"
    )


@pytest.mark.postgres
def test_failed_partition_is_kept_in_meltano_state_and_completed_next_run(
    schema, meltano, fake_server
):
    server = fake_server(
        start=D(2024, 1, 1),
        days=21,
        events_per_day=10,
        faults=Faults(fail_ranges={("2024-01-08", "2024-01-14"): 503}),
    )
    env = {**tap_env(server, max_retries=1), "TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA": schema}
    first = meltano.run("target-postgres", env)
    assert first.returncode != 0, first.stderr[-4000:]
    assert "BATCH files go to" in first.stderr
    assert "1 partition failed and are saved in state" in first.stderr
    assert "Extractor failed" in first.stderr

    bookmark = meltano.state("target-postgres")["bookmarks"]["events"]
    failed = bookmark["failed_partitions"]
    assert [(f["from_date"], f["to_date"], f["attempts"]) for f in failed] == [
        ("2024-01-08", "2024-01-14", 2)
    ]
    assert "503" in failed[0]["error"]
    assert bookmark["replication_key_value"] == "2024-01-21"
    # the healthy partitions were loaded all the same
    assert sorted(table_ids(schema)) == sorted(
        expected_ids(server, D(2024, 1, 1), D(2024, 1, 7))
        + expected_ids(server, D(2024, 1, 15), D(2024, 1, 21))
    )

    server.faults = Faults()
    server.reset_stats()
    succeeded(meltano.run("target-postgres", env))
    assert export_ranges(server) == [("2024-01-08", "2024-01-14")], "only the failed partition"
    assert meltano.state("target-postgres")["bookmarks"]["events"]["failed_partitions"] == []
    assert_each_event_once(schema, server, D(2024, 1, 1), D(2024, 1, 21))


def test_run_into_jsonl(meltano, fake_server, tmp_path):
    server = fake_server(start=D(2024, 1, 1), days=10, events_per_day=15)
    out = tmp_path / "output"
    out.mkdir()
    env = {**tap_env(server), "TARGET_JSONL_DESTINATION_PATH": str(out)}
    # TAP_MIXPANEL_PARALLEL_* reaches every plugin of the namespace: batch_config from there
    # would reach the RECORD variant too
    meltano.env.pop(BATCH_CONFIG_ENV)
    log = succeeded(meltano.run("target-jsonl", env, extractor=RECORDS_EXTRACTOR))
    assert "BATCH files go to" not in log, "target-jsonl reads RECORD messages only"
    records = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    ids = [r["insert_id"] for r in records]
    assert sorted(ids) == sorted(expected_ids(server, D(2024, 1, 1), D(2024, 1, 10)))
    assert len(set(ids)) == len(ids)
    assert all(isinstance(r["properties"], dict) for r in records)
    assert "export finished: 150 records, 2 partitions ok" in log


def test_demo_script_runs_the_main_job(meltano_installed, tmp_path):
    """scripts/demo.sh, the README's one command, on a small range and this session's install."""
    if Path(sys.executable).parent != ROOT / ".venv" / "bin":
        pytest.skip("scripts/demo.sh uses the repo's .venv, and these tests run elsewhere")
    out = tmp_path / "output"
    env = {
        **meltano_installed.env,
        "MELTANO_DATABASE_URI": f"sqlite:///{tmp_path / 'meltano.db'}",
        "TARGET_JSONL_DESTINATION_PATH": str(out),
        "DEMO_DAYS": "14",
        "DEMO_EVENTS_PER_DAY": "20",
    }
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "demo.sh")],
        cwd=tmp_path,  # the script finds the repo itself
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert "export finished: 280 records, 2 partitions ok, 0 failed" in proc.stderr
    assert f"{out}/events.jsonl: 280 events" in proc.stdout
    server = FakeMixpanel(start=D(2024, 1, 1), days=14, events_per_day=20)
    ids = [json.loads(line)["insert_id"] for line in (out / "events.jsonl").open()]
    assert sorted(ids) == sorted(expected_ids(server, D(2024, 1, 1), D(2024, 1, 14)))
    state = json.loads(proc.stdout.splitlines()[-1])
    assert state["singer_state"]["bookmarks"]["events"]["replication_key_value"] == "2024-01-14"


@pytest.mark.postgres
def test_ctrl_c_and_sigterm_to_the_group_mid_copy_then_a_rerun_loads_every_event_once(
    schema, meltano, fake_server, tmp_path
):
    """What a terminal's Ctrl+C and then an orchestrator's SIGTERM do to `meltano run`.

    Both signals reach the whole process group (meltano, the tap, the target), and Meltano
    forwards a SIGTERM of its own. The pipeline must end by itself, leave no spool folder, and
    the next run must complete the load with every event once.
    """
    import signal
    import time

    # ~5 MB a partition as RECORD messages: target-postgres takes seconds to load each, so the
    # tap spends most of the run writing partitions into the pipe, the moment the signals land.
    # (BATCH files would let the tap finish before the signals could land.)
    server = fake_server(start=D(2024, 1, 1), days=28, events_per_day=1500)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    meltano.env.pop(BATCH_CONFIG_ENV)  # RECORD messages, from the RECORD variant
    env = {
        **meltano.env,
        **tap_env(server, max_workers=4),
        "TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA": schema,
        "TMPDIR": str(tmpdir),
    }
    log_path = tmp_path / "first.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(MELTANO), "run", "--no-install", RECORDS_EXTRACTOR, "target-postgres"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a process group of its own, as a terminal job has
        )
    try:
        deadline = time.monotonic() + 240
        # the first partition went out whole: the tap is now writing the second
        while "partition 1/4 2024-01-01..2024-01-07" not in log_path.read_text():
            assert proc.poll() is None, log_path.read_text()[-6000:]
            assert time.monotonic() < deadline, "the first partition never finished"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.3)
        os.killpg(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=240)  # liveness: this hung for minutes before
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    first = log_path.read_text()
    assert code != 0, first[-6000:]
    assert "signal 2: stopping" in first, first[-6000:]
    assert "export finished: 42000 records, 4 partitions ok" not in first, "no signal landed"
    assert SECRET not in first
    assert [p for p in tmpdir.iterdir() if p.name.startswith("tap-mixpanel-parallel-")] == []

    second = meltano.run(
        "target-postgres",
        {**tap_env(server, max_workers=4), "TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA": schema},
        extractor=RECORDS_EXTRACTOR,
    )
    succeeded(second)
    assert_each_event_once(schema, server, D(2024, 1, 1), D(2024, 1, 28))
    bookmark = meltano.state("target-postgres", RECORDS_EXTRACTOR)["bookmarks"]["events"]
    assert bookmark["replication_key_value"] == "2024-01-28"
    assert bookmark["failed_partitions"] == []


AWKWARD = ("Server Import", "Form Submit")


def batch_run_folders(meltano: Meltano) -> list[Path]:
    root = Path(urlparse(json.loads(meltano.env[BATCH_CONFIG_ENV])["storage"]["root"]).path)
    return sorted(p for p in root.iterdir() if p.name.startswith("tap-mixpanel-parallel-"))


def assert_awkward_events_loaded(
    schema: str, server, start: dt.date, end: dt.date, dbname: str = PG["dbname"]
) -> None:
    def query(sql: str) -> list[str]:
        return psql(sql, dbname=dbname)

    days = [start + dt.timedelta(days=n) for n in range((end - start).days + 1)]
    # Three events without $insert_id a day share event, distinct_id and second, and two of
    # them are byte-identical: three rows, three keys, two distinct properties.
    rows = query(
        "SELECT distinct_id, count(*), count(DISTINCT insert_id), count(DISTINCT properties)"
        f" FROM {schema}.events WHERE event = 'Server Import' GROUP BY distinct_id"
        " ORDER BY distinct_id"
    )
    assert rows == [f"legacy-{day}|3|3|2" for day in days]
    # NUL characters at any depth, and in a key, arrive as U+FFFD
    for day in (start, end):
        (row,) = query(
            "SELECT (properties->>'$browser') || '|'"
            " || (properties->'form'->'fields'->0->>'value') || '|'"
            f" || (properties->'form' ? 'key\ufffd')::text"
            f" FROM {schema}.events WHERE insert_id = 'nul-{day}'"
        )
        assert row == "Mozilla\ufffd|a\ufffdb|true"
        # invalid UTF-8: each bad sequence is one U+FFFD
        (row,) = query(
            f"SELECT properties->'form'->>'name' FROM {schema}.events"
            f" WHERE insert_id = 'utf8-{day}'"
        )
        assert row == "caf\ufffd \ufffd\ufffd"
    # and every ordinary event exactly once, beside them
    ordinary = query(
        f"SELECT insert_id FROM {schema}.events WHERE event NOT IN {AWKWARD!r}".replace('"', "'")
    )
    expected = [
        e["properties"]["$insert_id"]
        for e in server.events(start, end)
        if e["event"] not in AWKWARD
    ]
    assert len(ordinary) == len(set(ordinary)), "an event was loaded twice"
    # Mixpanel's duplicates (the same $insert_id sent twice, here within one BATCH file)
    # keep one row
    assert len(expected) > len(set(expected))
    assert sorted(ordinary) == sorted(set(expected))


@pytest.mark.postgres
def test_events_without_insert_id_nul_and_bad_utf8_load_once_across_lookback(
    schema, meltano, fake_server
):
    server = fake_server(
        start=D(2024, 1, 1), days=10, events_per_day=20, awkward_events=True, duplicate_rate=0.2
    )
    target = {"TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA": schema}
    log = succeeded(meltano.run("target-postgres", {**tap_env(server, lookback_days=3), **target}))
    assert "BATCH files go to" in log
    assert_awkward_events_loaded(schema, server, D(2024, 1, 1), D(2024, 1, 10))
    (first_run,) = batch_run_folders(meltano)

    # The next run re-reads 01-08..01-10 (lookback 3): the events without $insert_id get the
    # same keys again and stay three rows a day, not six.
    server.add_days(4)
    server.reset_stats()
    env = {**tap_env(server, lookback_days=3, end_date=server.today.isoformat()), **target}
    succeeded(meltano.run("target-postgres", env))
    assert export_ranges(server) == [("2024-01-08", "2024-01-14")]
    assert_awkward_events_loaded(schema, server, D(2024, 1, 1), D(2024, 1, 14))
    # The first run's BATCH files were removed when the second started; the second's stay
    # until the next run (its loader may read them after the tap exited).
    (second_run,) = batch_run_folders(meltano)
    assert second_run != first_run
    assert sorted(p.name for p in second_run.glob("*.jsonl")) == [
        "00001-events-2024-01-08-2024-01-14-001.jsonl"  # the run's first unit
    ]


@pytest.mark.postgres
def test_engage_loads_beside_events_and_updates_profiles_in_place(schema, meltano, fake_server):
    server = fake_server(start=D(2024, 1, 1), days=5, events_per_day=10, profiles=300)
    env = {
        **tap_env(server, engage_page_size=40, query_max_requests_per_hour=10000),
        "TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA": schema,
    }
    del env[SELECT_ENV]  # the selection meltano.yml ships: events, engage, cohorts, annotations
    succeeded(meltano.run("target-postgres", env))
    assert_each_event_once(schema, server, D(2024, 1, 1), D(2024, 1, 5))
    data = server.query.data
    rows = psql(
        "SELECT distinct_id || '|' || (properties->'flags'->'nested'->>'level')"
        f" || '|' || coalesce(last_seen::text, '-') FROM {schema}.engage"
    )
    expected = {
        f"{data.distinct_id(i)}|{i % 3}|"
        + (seen.replace("T", " ") if (seen := data.last_seen(i)) else "-")
        for i in range(300)
    }
    assert set(rows) == expected and len(rows) == 300
    first = meltano.state("target-postgres")["bookmarks"]["engage"]["replication_key_value"]

    # An update after the first run: the next run reads it and upserts on distinct_id.
    later = dt.datetime.fromisoformat(first) + dt.timedelta(hours=1)
    data.touch([7], later)
    succeeded(meltano.run("target-postgres", env))
    assert psql(f"SELECT count(*) FROM {schema}.engage") == ["300"]
    assert psql(f"SELECT last_seen FROM {schema}.engage WHERE distinct_id = 'user-0000007'") == [
        later.isoformat(sep=" ")
    ]
    state = meltano.state("target-postgres")["bookmarks"]
    assert state["engage"]["replication_key_value"] == later.isoformat()
    assert state["events"]["failed_partitions"] == []

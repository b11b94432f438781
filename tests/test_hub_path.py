"""The Hub user's main job: a new Meltano project made only from the two Hub definitions.

``meltano init``, then both plugins added as a Hub user adds them (``meltano add --plugin-type
extractor tap-mixpanel --variant mixpanel-parallel``, the loader likewise) from a local Meltano
Hub serving ``hub/_data`` (benchmarks/hub_path.py), installed by ``meltano install`` from wheels
built from this checkout, then ``meltano run tap-mixpanel target-postgres`` into a PostgreSQL
database of the test's own. Nothing is set but credentials, the connection and BATCH; the
tables land in the Hub loader's default schema, the extractor's namespace
``tap_mixpanel_parallel``.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from benchmarks import hub_path
from tests.helpers import PROJECT_ID, SECRET, USER
from tests.test_meltano import (
    PG,
    assert_awkward_events_loaded,
    psql,
    succeeded,
    unavailable,
)

pytestmark = [pytest.mark.meltano, pytest.mark.postgres]

D = dt.date
SCHEMA = "tap_mixpanel_parallel"
#: What the loader's Hub definition sets apart from target-postgres's own defaults.
LOADER_DEFAULTS = {
    "load_method": "upsert",
    "use_copy": True,
    "validate_records": False,
    "add_record_metadata": False,
    "activate_version": False,
}


@pytest.fixture(scope="session")
def hub_project(tmp_path_factory) -> hub_path.HubProject:
    if not Path(sys.executable).with_name("meltano").exists():
        unavailable("meltano is missing: pip install -e . --group dev")
    home = tmp_path_factory.mktemp("hub-path")
    wheels = hub_path.build_wheels(home / "dist")
    return hub_path.create_project(home / "project", wheels)


@pytest.fixture
def database(hub_project) -> Any:
    """A database of the test's own, so the Hub's default schema name can be used as is."""
    try:
        psql("SELECT 1")
    except (AssertionError, OSError) as exc:
        unavailable(f"PostgreSQL unreachable (start it with `bash .ci/postgres.sh`): {exc}")
    name = f"hub_path_{uuid.uuid4().hex[:12]}"
    psql(f"CREATE DATABASE {name}")
    yield name
    psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def credentials(server) -> dict[str, str]:
    """Credentials, where Mixpanel is (the fake server), and what to export."""
    return {
        "TAP_MIXPANEL_SERVICE_ACCOUNT_USERNAME": USER,
        "TAP_MIXPANEL_SERVICE_ACCOUNT_SECRET": SECRET,
        "TAP_MIXPANEL_PROJECT_ID": str(PROJECT_ID),
        "TAP_MIXPANEL_API_URL": server.url,
        "TAP_MIXPANEL_START_DATE": server.start_date.isoformat(),
        "TAP_MIXPANEL_END_DATE": server.today.isoformat(),
    }


def connection(database: str) -> dict[str, str]:
    return {
        "TARGET_POSTGRES_HOST": PG["host"],
        "TARGET_POSTGRES_PORT": PG["port"],
        "TARGET_POSTGRES_USER": PG["user"],
        "TARGET_POSTGRES_PASSWORD": PG["password"],
        "TARGET_POSTGRES_DATABASE": database,
    }


def batch(tmp_path: Path) -> dict[str, str]:
    """The SDK's batch_config: JSONL BATCH files for the loader, in a folder of the test's own."""
    config = {
        "encoding": {"format": "jsonl", "compression": "none"},
        "storage": {"root": (tmp_path / "batches").as_uri()},
    }
    return {"TAP_MIXPANEL_BATCH_CONFIG": json.dumps(config)}


def test_hub_path_loads_quirky_events_once_with_nothing_but_credentials_and_connection(
    hub_project, database, fake_server, tmp_path
):
    server = fake_server(
        start=D(2024, 1, 1),
        days=10,
        events_per_day=20,
        awkward_events=True,
        duplicate_rate=0.2,
        profiles=30,
        cohorts=2,
        funnels=1,
    )
    env = {**credentials(server), **connection(database), **batch(tmp_path)}
    log = succeeded(hub_project("run", "tap-mixpanel", "target-postgres", env=env))
    assert "BATCH files go to" in log
    assert SECRET not in log

    assert_awkward_events_loaded(SCHEMA, server, D(2024, 1, 1), D(2024, 1, 10), dbname=database)
    # every row has every key column, and no _sdc_* metadata column is left NULL
    columns = psql(
        "SELECT column_name FROM information_schema.columns"
        f" WHERE table_schema = '{SCHEMA}' AND table_name = 'events'",
        dbname=database,
    )
    assert {"event", "distinct_id", "time", "insert_id", "properties"} <= set(columns)
    for column in [c for c in columns if c.startswith("_sdc_")]:
        assert psql(
            f"SELECT count(*) FROM {SCHEMA}.events WHERE {column} IS NULL", dbname=database
        ) == ["0"], column
    # The Hub's `select`: events, engage, cohorts, annotations; no query per cohort or funnel
    # (the server has both).
    paths = {r.path for r in server.requests_log}
    assert {"/api/query/engage", "/api/query/cohorts/list"} <= paths
    assert not [p for p in paths if "funnels" in p], paths
    engage = [r for r in server.requests_log if r.path == "/api/query/engage"]
    assert not [r for r in engage if "filter_by_cohort" in r.params]
    assert psql(f"SELECT count(*) FROM {SCHEMA}.engage", dbname=database) == ["30"]


def test_loader_hub_definition_matches_the_installed_loader(hub_project):
    """The Hub file says what the installed target-postgres-mixpanel reports with --about."""
    executable = (
        hub_project.path / ".meltano/loaders/target-postgres/venv/bin/target-postgres-mixpanel"
    )
    proc = subprocess.run(
        [str(executable), "--about", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    about = json.loads(proc.stdout)
    definition = hub_path.definitions({hub_path.LOADER: "x"})
    ((_, loader),) = definition.items()
    properties = about["settings"]["properties"]
    assert set(loader["capabilities"]) <= set(about["capabilities"])
    for setting in loader["settings"]:
        name = setting["name"]
        top = name.split(".", 1)[0]
        assert top in properties, name
        if "." in name or name == "default_target_schema":
            continue
        expected = LOADER_DEFAULTS.get(name, properties[name].get("default"))
        assert setting.get("value") == expected, name
    assert set(LOADER_DEFAULTS) <= {s["name"] for s in loader["settings"]}


def test_decimal_settings_work_from_meltano_yml_and_crash_meltano_from_env_vars(hub_project):
    """Meltano 4.4.1 and the Hub's `decimal` kind, as docs/meltano.md documents them."""
    # in an environment of the project's own (`meltano init` makes staging), not in dev's config
    staging = "--environment=staging"
    hub_project.ok(staging, "config", "set", "tap-mixpanel", "max_requests_per_second", "0.5")
    config = json.loads(hub_project.ok(staging, "invoke", "--dump=config", "tap-mixpanel"))
    assert config["max_requests_per_second"] == 0.5
    # any value from an environment variable, even a whole number
    proc = hub_project(
        "invoke",
        "--dump=config",
        "tap-mixpanel",
        env={"TAP_MIXPANEL_MAX_REQUESTS_PER_SECOND": "2"},
    )
    assert proc.returncode != 0
    assert "Object of type Decimal is not JSON serializable" in proc.stderr

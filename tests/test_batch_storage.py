"""BATCH files on S3: a real S3 API on loopback (moto's standalone server, its own process).

The tap writes through s3fs, as a user's would, to ``s3://`` roots named in the SDK's
``batch_config``; the test reads the objects back with boto3, a client that shares nothing with
the tap's writer. An unusable root stops the run with one line before any Mixpanel request.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.helpers import SECRET, TAP, base_config, discover

boto3 = pytest.importorskip("boto3", reason="moto[server] (test group) brings boto3")

D = dt.date
KEY, SECRET_KEY = "testing-key", "testing-secret-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory) -> Iterator[str]:
    """moto's S3 server on a loopback port, in a process of its own."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto server did not start: {log.read_text()[-2000:]}")
                time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def s3(s3_endpoint):
    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
    )


def s3_env(endpoint: str) -> dict[str, str]:
    """Credentials and endpoint as a user's environment would carry them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID=KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_ENDPOINT_URL=endpoint,
        AWS_DEFAULT_REGION="us-east-1",
    )
    return env


def read_object(s3, url: str) -> bytes:
    parsed = urlparse(url)
    assert parsed.scheme == "s3"
    body = s3.get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))["Body"].read()
    return gzip.decompress(body) if url.endswith(".gz") else body


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_events_go_to_s3_as_batch_files_with_every_record_once(
    fake_server, run_tap, s3, s3_endpoint, compression
):
    bucket = f"batches-{compression}"
    s3.create_bucket(Bucket=bucket)
    server = fake_server(start=D(2024, 1, 1), days=10, events_per_day=30, awkward_events=True)
    storage = {"root": f"s3://{bucket}/mixpanel/", "prefix": "run-"}
    if compression == "gzip":  # credentials in the storage options ...
        storage["params"] = {"endpoint_url": s3_endpoint, "key": KEY, "secret": SECRET_KEY}
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    else:  # ... or in the environment, as boto reads them
        env = s3_env(s3_endpoint)
    config = base_config(
        server,
        max_workers=2,
        batch_config={
            "encoding": {"format": "jsonl", "compression": compression},
            "storage": storage,
            "batch_size": 100,
        },
    )
    run = run_tap(config, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "RECORD" not in [m["type"] for m in run.messages if m.get("stream") == "events"]
    batches = [m for m in run.messages if m["type"] == "BATCH"]
    assert [m["stream"] for m in batches] == ["events", "events"]  # 7 + 3 days
    records = []
    for message in batches:
        assert message["encoding"] == {"format": "jsonl", "compression": compression}
        for url in message["manifest"]:
            assert url.startswith(f"s3://{bucket}/mixpanel/tap-mixpanel-parallel-")
            assert Path(urlparse(url).path).name.startswith("run-")
            lines = read_object(s3, url).splitlines()
            assert 1 <= len(lines) <= 100
            records += [json.loads(line) for line in lines]
    ids = [r["insert_id"] for r in records]
    assert len(ids) == len(set(ids)) == len(list(server.events(D(2024, 1, 1), D(2024, 1, 10))))
    plain = {
        e["properties"]["$insert_id"]
        for e in server.events(D(2024, 1, 1), D(2024, 1, 10))
        if "$insert_id" in e["properties"]
    }
    assert plain < set(ids)
    # sanitize_text is on by default: no NUL reaches the files
    assert not any("\x00" in json.dumps(r["properties"], ensure_ascii=False) for r in records)
    # the secret key never reaches the output
    assert SECRET_KEY not in run.stdout + run.stderr
    assert SECRET not in run.stdout + run.stderr
    # no probe object is left behind
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert not [k for k in keys if "probe" in k]


def test_engage_and_cohort_members_go_to_s3_as_batch_files(
    fake_server, run_tap, s3, s3_endpoint, tmp_path
):
    s3.create_bucket(Bucket="profiles")
    server = fake_server(start=D(2024, 1, 1), days=1, events_per_day=1, profiles=25, cohorts=2)
    doc = discover(base_config(server), tmp_path)
    for entry in doc["streams"]:
        for md in entry["metadata"]:
            md["metadata"]["selected"] = entry["tap_stream_id"] in ("engage", "cohort_members")
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps(doc))
    config = base_config(
        server,
        engage_page_size=10,
        batch_config={
            "encoding": {"format": "jsonl", "compression": "gzip"},
            "storage": {"root": "s3://profiles"},
        },
    )
    run = run_tap(config, env=s3_env(s3_endpoint), extra_args=("--catalog", str(catalog)))
    assert run.returncode == 0, run.stderr[-3000:]
    assert [m["type"] for m in run.messages].count("RECORD") == 0
    by_stream: dict[str, list[dict]] = {}
    for message in run.messages:
        if message["type"] == "BATCH":
            for url in message["manifest"]:
                lines = read_object(s3, url).splitlines()
                by_stream.setdefault(message["stream"], []).extend(json.loads(x) for x in lines)
    assert len(by_stream["engage"]) == 25
    assert len({r["distinct_id"] for r in by_stream["engage"]}) == 25
    members = sorted((r["cohort_id"], r["distinct_id"]) for r in by_stream["cohort_members"])
    expected = [
        (cohort, server.query.data.distinct_id(i))
        for cohort in server.query.data.cohort_ids()
        for i in server.query.data.matching(cohort=cohort)
    ]
    assert members == sorted(expected)
    assert len(expected) > 0


@pytest.mark.parametrize(
    ("root", "params", "why"),
    [
        ("s3://no-such-bucket/x", None, "bucket does not exist"),
        ("s3://batches-probe/x", {"endpoint_url": "http://127.0.0.1:9"}, "cannot write"),
        ("nosuchproto://bucket/x", None, "not a storage fsspec knows"),
    ],
)
def test_an_unusable_storage_root_is_one_line_before_any_request(
    fake_server, run_tap, s3, s3_endpoint, root, params, why
):
    s3.create_bucket(Bucket="batches-probe")
    server = fake_server(start=D(2024, 1, 1), days=2, events_per_day=3)
    storage: dict = {"root": root}
    if params:
        storage["params"] = {**params, "key": KEY, "secret": SECRET_KEY, "connect_timeout": 2}
    config = base_config(
        server,
        batch_config={"encoding": {"format": "jsonl", "compression": "gzip"}, "storage": storage},
    )
    run = run_tap(config, env=s3_env(s3_endpoint), timeout=180)
    assert run.returncode == 1, run.returncode  # as every invalid setting (README: Settings)
    assert not [m for m in run.messages if m["type"] in ("RECORD", "BATCH", "STATE")]
    errors = [line for line in run.stderr.splitlines() if "batch_config.storage.root" in line]
    assert errors, run.stderr[-2000:]
    assert why in errors[0]
    assert "Traceback" not in run.stderr
    assert SECRET_KEY not in run.stderr
    assert server.requests_log == []


# -- s3:// BATCH files through the stock SDK loader into PostgreSQL --------------------------------

STOCK_TARGET = "meltanolabs-target-postgres==0.8.1"


@pytest.fixture(scope="module")
def stock_target_postgres(tmp_path_factory) -> Path:
    """The Hub's default PostgreSQL loader with s3fs, in a venv of its own (uv, as Meltano)."""
    uv = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    venv = tmp_path_factory.mktemp("target-postgres") / "venv"
    env = {**os.environ, "VIRTUAL_ENV": str(venv)}
    for args in (["venv", "-q", str(venv)], ["pip", "install", "-q", STOCK_TARGET, "s3fs"]):
        proc = subprocess.run([uv, *args], env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            pytest.fail(f"uv {' '.join(args)}: {proc.stderr[-2000:]}")
    return venv / "bin" / "target-postgres"


@pytest.mark.postgres
def test_s3_batch_files_load_into_postgresql_through_the_stock_sdk_loader(
    fake_server, s3, s3_endpoint, stock_target_postgres, tmp_path
):
    """tap (BATCH on s3://, gzip) | meltanolabs target-postgres: every event one row.

    The loader reads each manifest through the SDK's fsspec storage (s3fs), credentials and
    endpoint from the environment; the tap writes with its own storage options.
    """
    from tests.test_meltano import psql, unavailable

    try:
        psql("SELECT 1")
    except (AssertionError, OSError, subprocess.TimeoutExpired) as exc:
        unavailable(f"PostgreSQL unreachable: {exc}")
    s3.create_bucket(Bucket="roundtrip")
    server = fake_server(start=D(2024, 1, 1), days=9, events_per_day=40, awkward_events=True)
    schema = f"batch_s3_{uuid.uuid4().hex[:10]}"
    tap_config = tmp_path / "tap.json"
    tap_config.write_text(
        json.dumps(
            base_config(
                server,
                batch_config={
                    "encoding": {"format": "jsonl", "compression": "gzip"},
                    "storage": {
                        "root": "s3://roundtrip/batches",
                        "params": {"endpoint_url": s3_endpoint, "key": KEY, "secret": SECRET_KEY},
                    },
                    "batch_size": 50,
                },
            )
        )
    )
    target_config = tmp_path / "target.json"
    target_config.write_text(
        json.dumps(
            {
                "host": "127.0.0.1",
                "port": 5432,
                "user": "tap",
                "password": "tap",
                "database": "tap_test",
                "default_target_schema": schema,
                # BATCH records carry no _sdc_* values: no columns left NULL
                "add_record_metadata": False,
                "activate_version": False,
            }
        )
    )
    catalog = discover(base_config(server), tmp_path)
    for entry in catalog["streams"]:
        for md in entry["metadata"]:
            md["metadata"]["selected"] = entry["tap_stream_id"] == "events"
    (tmp_path / "catalog.json").write_text(json.dumps(catalog))
    tap = subprocess.Popen(
        [TAP, "--config", str(tap_config), "--catalog", str(tmp_path / "catalog.json")],
        stdout=subprocess.PIPE,
        stderr=open(tmp_path / "tap.log", "wb"),  # noqa: SIM115
        env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
    )
    try:
        target = subprocess.run(
            [str(stock_target_postgres), "--config", str(target_config)],
            stdin=tap.stdout,
            capture_output=True,
            text=True,
            env=s3_env(s3_endpoint),
            timeout=300,
            check=False,
        )
        assert tap.wait(60) == 0, (tmp_path / "tap.log").read_text()[-3000:]
        assert target.returncode == 0, target.stderr[-3000:]
        events = list(server.events(D(2024, 1, 1), D(2024, 1, 9)))
        (rows, keys) = psql(
            f"SELECT count(*), count(DISTINCT (event, distinct_id, time, insert_id))"
            f" FROM {schema}.events"
        )[0].split("|")
        assert int(rows) == int(keys) == len(events)
        # NUL characters and invalid UTF-8 (sanitize_text, on by default) arrived as U+FFFD
        replaced = psql(
            f"SELECT count(*) FROM {schema}.events WHERE strpos(properties::text, chr(65533)) > 0"
        )
        assert int(replaced[0]) > 0
        # the loader's last STATE covers the last partition: nothing is owed again
        states = [json.loads(x) for x in target.stdout.splitlines() if x.strip()]
        assert states[-1]["bookmarks"]["events"]["replication_key_value"] == "2024-01-09"
        # the files went to S3, none to a local folder
        keys_in_bucket = [o["Key"] for o in s3.list_objects_v2(Bucket="roundtrip")["Contents"]]
        assert len(keys_in_bucket) >= len(events) // 50
    finally:
        if tap.poll() is None:
            tap.kill()
        psql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")

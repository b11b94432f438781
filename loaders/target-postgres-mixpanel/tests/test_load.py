"""The same messages, loaded by target-postgres and by target-postgres-mixpanel: the same rows.

Both targets run as CLIs into the real PostgreSQL, each into a schema of its own, and each table
is compared with EXCEPT ALL both ways (and its columns and types); both must emit the same STATE.
To keep CI short, one message stream carries every case as a stream of its own (a table each),
and the targets start twice (two runs: the second updates rows of the first). The log line "Fast
BATCH load ... into <table>" shows which files took this package's path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from batchdata import (
    batch_message,
    line,
    record,
    schema_message,
    state_message,
    write_jsonl,
)
from conftest import Pair, Run, sql

pytestmark = pytest.mark.postgres

FAST_LOG = "Fast BATCH load"
FALLBACK_LOG = "target-postgres's own BATCH load"
# RECORD messages would get _sdc_* times of each run's own, so no record metadata here; the
# default (on) is tested on its own below.
CONFIG = {
    "sanitize_null_text_characters": True,
    "add_record_metadata": False,
    "activate_version": False,
}


def fast_loads(run: Run, pair: Pair, table: str) -> int:
    return run.stderr.count(f"into {pair.fast_schema}.{table}\n")


def files(folder: Path, name: str, first: range, version: int, *, gzip_it: bool) -> Path:
    suffix = ".jsonl.gz" if gzip_it else ".jsonl"
    lines = [line(record(i, version=version), i) for i in first]
    if version > 1:
        lines.append(line(record(first[20], version=version + 1), first[20]))  # last one wins
    return write_jsonl(folder / f"{name}-{version}{suffix}", lines, gzip_it=gzip_it)


def first_run(folder: Path, pair: Pair, s3_urls: list[str]) -> list[dict[str, Any]]:
    """Every case, a stream each."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    plain = [files(folder, "plain", range(0, 200), 1, gzip_it=False)]
    plain.append(files(folder, "plain", range(100, 350), 2, gzip_it=False))
    gzipped = [files(folder, "gzip", range(0, 200), 1, gzip_it=True)]
    gzipped.append(files(folder, "gzip", range(100, 350), 2, gzip_it=True))
    evolving = [
        write_jsonl(folder / "ev-1.jsonl", [line(record(i), i) for i in range(50)], gzip_it=False),
        write_jsonl(
            folder / "ev-2.jsonl",
            [line(record(i, version=2, country=f"c{i % 4}"), i) for i in range(25, 90)],
            gzip_it=False,
        ),
    ]
    parquet = folder / "part.parquet"
    rows = [{"event": f"e{i % 2}", "insert_id": f"id-{i}", "time": i} for i in range(30)]
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    # a table made by an older run or another tool: the key columns, no unique index on them
    for schema in (pair.stock_schema, pair.fast_schema):
        sql(f'CREATE SCHEMA "{schema}"')
        sql(f'CREATE TABLE "{schema}".legacy (event varchar, insert_id varchar, note varchar)')
        sql(f"INSERT INTO \"{schema}\".legacy VALUES ('e0', 'id-0', 'old'), ('zz', 'x', 'kept')")
    country = {"country": {"type": ["string", "null"]}}
    return [
        schema_message("plain"),
        batch_message([plain[0].as_uri()], stream="plain"),
        state_message(1),
        batch_message([plain[1].as_uri()], stream="plain"),
        state_message(2),
        # RECORD messages beside BATCH ones: target-postgres's own path in both
        {"type": "RECORD", "stream": "plain", "record": record(400, price=1.5)},
        {"type": "RECORD", "stream": "plain", "record": record(5, version=9, price=None)},
        state_message(3),
        schema_message("gzip"),
        batch_message([p.as_uri() for p in gzipped], compression="gzip", stream="gzip"),
        schema_message("s3"),
        batch_message(s3_urls, compression="gzip", stream="s3"),
        schema_message("evolving"),
        batch_message([evolving[0].as_uri()], stream="evolving"),
        schema_message("evolving", extra=country),
        batch_message([evolving[1].as_uri()], stream="evolving"),
        schema_message("legacy"),
        batch_message([p.as_uri() for p in gzipped], compression="gzip", stream="legacy"),
        schema_message("parquet"),
        batch_message([parquet.as_uri()], fmt="parquet", stream="parquet"),
        {**schema_message("nokey"), "key_properties": []},
        batch_message([plain[0].as_uri()], stream="nokey"),
        batch_message([plain[0].as_uri()], stream="nokey"),
        state_message(4),
    ]


def second_run(folder: Path) -> list[dict[str, Any]]:
    """A later run: new values for keys the first run loaded, and new keys."""
    later = files(folder, "gzip", range(300, 500), 3, gzip_it=True)
    return [
        schema_message("gzip"),
        batch_message([later.as_uri()], compression="gzip", stream="gzip"),
        state_message(5),
    ]


@pytest.fixture(scope="module")
def runs(module_pair: Pair, s3_server: dict[str, str]) -> tuple[tuple[Run, Run], tuple[Run, Run]]:
    import boto3

    folder = module_pair.tmp_path
    client = boto3.client(
        "s3",
        endpoint_url=s3_server["AWS_ENDPOINT_URL"],
        aws_access_key_id=s3_server["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=s3_server["AWS_SECRET_ACCESS_KEY"],
        region_name=s3_server["AWS_DEFAULT_REGION"],
    )
    client.create_bucket(Bucket="batches")
    s3_urls = []
    for version, keys in ((1, range(0, 200)), (2, range(100, 350))):
        path = files(folder, "s3", keys, version, gzip_it=True)
        client.upload_file(str(path), "batches", f"run-1/{path.name}")
        s3_urls.append(f"s3://batches/run-1/{path.name}")
    first = module_pair.run(first_run(folder, module_pair, s3_urls), CONFIG, env=s3_server)
    second = module_pair.run(second_run(folder), CONFIG)
    return first, second


@pytest.mark.parametrize(
    ("table", "files_read", "rows"),
    [("plain", 2, 351), ("gzip", 2, 350), ("s3", 2, 350), ("evolving", 2, 90)],
)
def test_batch_files_load_the_same_rows_as_target_postgres(
    runs, module_pair: Pair, table, files_read, rows
):
    (_, fast), _ = runs
    assert fast_loads(fast, module_pair, table) == files_read
    if table == "gzip":
        rows += 150  # the second run's new keys
    assert module_pair.assert_same_rows(table) == rows


def test_both_emit_the_same_state_after_the_batches(runs):
    (stock, fast), (stock_2, fast_2) = runs
    assert fast.states == stock.states
    # the SDK's target emits the latest STATE once the records before it are loaded
    assert fast.states[-1] == {"bookmarks": {"events": {"n": 4}}}
    assert fast_2.states == stock_2.states == [{"bookmarks": {"events": {"n": 5}}}]


def test_the_rows_hold_the_files_values(runs, module_pair: Pair):
    # the content itself, not only the agreement: the last version of a key in a file won,
    # NULs became U+FFFD in strings and in an object's first level, numbers went through float
    # as in target-postgres, a missing or null object is JSON null
    (row,) = sql(
        f'SELECT time, properties, note, price FROM "{module_pair.fast_schema}".plain'
        " WHERE insert_id = 'id-120'"
    )
    assert row[0] == 1_700_000_000 + 120 * 3
    assert row[1]["v"] == 3
    assert row[1]["nul"] == "a\ufffdb"
    assert str(row[3]) == "12.345678901234567"
    nulls = sql(
        f"SELECT count(*) FROM \"{module_pair.fast_schema}\".plain WHERE properties = 'null'"
    )
    assert nulls[0][0] > 0


def test_a_later_run_updates_rows_as_target_postgres(runs, module_pair: Pair):
    (_, _), (_, fast) = runs
    assert fast_loads(fast, module_pair, "gzip") == 1
    (version,) = sql(
        f"SELECT properties->>'v' FROM \"{module_pair.fast_schema}\".gzip"
        " WHERE insert_id = 'id-320'"
    )[0]
    assert version == "4"


def test_a_column_added_by_a_later_schema_loads_as_in_target_postgres(runs, module_pair: Pair):
    counts = sql(f'SELECT count(country), count(*) FROM "{module_pair.fast_schema}".evolving')
    assert counts == [(65, 90)]


def test_a_key_without_a_unique_index_takes_target_postgres_path(runs, module_pair: Pair):
    (_, fast), _ = runs
    assert fast_loads(fast, module_pair, "legacy") == 0
    assert fast.stderr.count(FALLBACK_LOG) == 2  # once per file
    assert module_pair.assert_same_rows("legacy") == 351  # 350 keys and the one it kept


def test_parquet_batch_files_take_target_postgres_path(runs, module_pair: Pair):
    (_, fast), _ = runs
    assert fast_loads(fast, module_pair, "parquet") == 0
    assert module_pair.assert_same_rows("parquet") == 30


def test_a_stream_without_key_properties_appends_as_target_postgres(runs, module_pair: Pair):
    (_, fast), _ = runs
    assert fast_loads(fast, module_pair, "nokey") == 0
    assert module_pair.assert_same_rows("nokey") == 400


def test_default_settings_add_the_same_metadata_columns(pair: Pair, tmp_path):
    # add_record_metadata and activate_version on (target-postgres's defaults): the _sdc_*
    # columns exist in both and are filled the same way (the SDK fills none for BATCH records)
    path = files(tmp_path, "meta", range(0, 20), 1, gzip_it=False)
    _, fast = pair.run(
        [schema_message("meta"), batch_message([path.as_uri()], stream="meta")],
        config={"sanitize_null_text_characters": True},
    )
    assert fast_loads(fast, pair, "meta") == 1
    assert pair.assert_same_rows("meta") == 20
    columns = sql(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = %s AND column_name LIKE '\\_sdc\\_%%'",
        (pair.fast_schema,),
    )
    assert len(columns) >= 5

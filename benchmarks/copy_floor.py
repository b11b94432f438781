"""The COPY floor: one Python client COPYing the tap's records into PostgreSQL, nothing else.

    python benchmarks/copy_floor.py --schema S [--json stdlib|raw] FILE...

Reads the record files (one JSON record per line, as the tap writes BATCH files), creates
``S.events`` with the same columns and 4-column primary key target-postgres creates, and COPYs
every record into it in one transaction with psycopg. ``--json stdlib`` (the floor the main
job is measured against) parses each record with the standard library and writes
``properties`` back as JSON text, as any loader that handles records as objects must;
``--json raw`` decodes only the key columns with msgspec and passes the ``properties`` bytes
through untouched, a stricter floor no Singer target can reach. Connection settings come from
the ``TARGET_POSTGRES_*`` variables (default: the local test database).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import msgspec
import psycopg

COLUMNS = ("event", "time", "distinct_id", "insert_id", "properties")


class _Keys(msgspec.Struct):
    event: str
    time: str
    distinct_id: str
    insert_id: str
    properties: msgspec.Raw


def connect(dbname: str | None = None, **kwargs) -> psycopg.Connection:
    env = os.environ
    return psycopg.connect(
        host=env.get("TARGET_POSTGRES_HOST", "127.0.0.1"),
        port=int(env.get("TARGET_POSTGRES_PORT", "5432")),
        user=env.get("TARGET_POSTGRES_USER", "tap"),
        password=env.get("TARGET_POSTGRES_PASSWORD", "tap"),
        dbname=dbname or env.get("TARGET_POSTGRES_DATABASE", "tap_test"),
        **kwargs,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schema", required=True)
    parser.add_argument("--json", choices=("stdlib", "raw"), default="stdlib")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    decode = msgspec.json.Decoder(_Keys).decode
    records = 0
    with connect() as conn, conn.cursor() as cur:
        cur.execute(f'DROP SCHEMA IF EXISTS "{args.schema}" CASCADE')
        cur.execute(f'CREATE SCHEMA "{args.schema}"')
        cur.execute(
            f'CREATE TABLE "{args.schema}".events (event text, time timestamp,'
            " distinct_id text, insert_id text, properties jsonb,"
            " PRIMARY KEY (event, distinct_id, time, insert_id))"
        )
        copy_sql = f'COPY "{args.schema}".events ({", ".join(COLUMNS)}) FROM STDIN'
        with cur.copy(copy_sql) as copy:
            for path in args.files:
                with open(path, "rb") as lines:
                    for line in lines:
                        if args.json == "stdlib":
                            r = json.loads(line)
                            row = (
                                r["event"],
                                r["time"],
                                r["distinct_id"],
                                r["insert_id"],
                                json.dumps(r["properties"]),
                            )
                        else:
                            k = decode(line)
                            row = (
                                k.event,
                                k.time,
                                k.distinct_id,
                                k.insert_id,
                                bytes(k.properties).decode(),
                            )
                        copy.write_row(row)
                        records += 1
    print(f"copied {records} records", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

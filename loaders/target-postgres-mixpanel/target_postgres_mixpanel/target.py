"""MeltanoLabs target-postgres, with a faster load of Singer SDK BATCH files.

Everything is target-postgres's own (settings, connection, table creation and evolution, the
RECORD path) except how a JSON Lines BATCH file of a stream with key properties reaches its
table when ``use_copy`` is on. target-postgres parses every record with the standard library
(``Decimal`` floats), re-serialises each JSON column, COPYs into a temporary table, inserts the
new keys and then UPDATEs every row of the batch, new ones included, with a hash join over the
whole target table. Here, per file, in one transaction:

1. each line is split into its top-level values with msgspec; JSON columns (``jsonb``, for
   objects) go to COPY as the JSON text the file holds, never parsed (unless a NUL must be
   replaced); other values (arrays included) are decoded as the SDK decodes them (floats as
   ``Decimal``) and passed through their column type's bind processor, as target-postgres does;
2. the rows are COPYed into a temporary table;
3. one ``INSERT ... SELECT DISTINCT ON (key) ... ON CONFLICT (key) DO UPDATE`` merges them:
   new keys are written once, existing ones updated, and within a file the last record of a
   key wins, as with target-postgres.

The rows in the table are the same as target-postgres's (``tests/test_load.py`` compares them
both ways). Files are loaded when the BATCH message is read, before the next message, and STATE
is emitted as the SDK target does. Other cases (no key properties, no unique index on them,
``use_copy`` off, Parquet) take target-postgres's own path.
"""

from __future__ import annotations

import typing as t
import uuid
from decimal import Decimal

import msgspec
from sqlalchemy.types import JSON
from target_postgres.sinks import PostgresSink
from target_postgres.target import TargetPostgres

from target_postgres_mixpanel.seams import connect, is_jsonl, open_batch_file

if t.TYPE_CHECKING:
    import sqlalchemy
    from psycopg import Cursor

    from target_postgres_mixpanel.seams import BaseBatchFileEncoding

_split = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
# The SDK reads BATCH lines with json.loads(parse_float=Decimal): the same values here.
_decode = msgspec.json.Decoder(float_hook=Decimal).decode
_encode = msgspec.json.Encoder(decimal_format="number").encode
_NULL = b"null"
_ESCAPED_NUL = b"\\u0000"


def _replace_nul(text: str) -> str:
    return text.replace("\x00", "\ufffd")


def sanitize_like_target_postgres(value: t.Any) -> t.Any:
    """``PostgresSink.sanitize_null_text_characters``: a string, or the strings one level down.

    Deeper strings keep their NUL characters, there as in target-postgres.
    """
    if isinstance(value, str):
        return _replace_nul(value)
    if isinstance(value, dict):
        return {k: _replace_nul(v) if isinstance(v, str) else v for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_nul(v) if isinstance(v, str) else v for v in value]
    return value


def copy_value(raw: bytes, *, json_column: bool, sanitize: bool) -> t.Any:
    """What COPY receives for one top-level JSON value of a record, or None for SQL NULL."""
    if raw == _NULL:
        return None
    if json_column:
        if sanitize and _ESCAPED_NUL in raw:
            return _encode(sanitize_like_target_postgres(_decode(raw))).decode("utf-8")
        return raw.decode("utf-8")
    value = _decode(raw)
    return sanitize_like_target_postgres(value) if sanitize else value


class FastBatchSink(PostgresSink):
    """A PostgresSink whose JSON Lines BATCH files go in with COPY and a single upsert."""

    _unique_key: bool | None = None

    def process_batch_files(
        self,
        encoding: BaseBatchFileEncoding,
        files: t.Sequence[str],
    ) -> None:
        """Load each file in a transaction of its own, as the SDK's implementation does."""
        if not is_jsonl(encoding) or not self.key_properties or not self.config.get("use_copy"):
            super().process_batch_files(encoding, files)
            return
        for path in files:
            with open_batch_file(path, encoding, self.batch_config) as lines:
                count = self._load_file(lines)
            if count is None:
                self.logger.info(
                    "No unique index on %s %s: target-postgres's own BATCH load",
                    self.full_table_name,
                    list(self.key_properties),
                )
                super().process_batch_files(encoding, [path])
                continue
            self.logger.info("Fast BATCH load: %d records into %s", count, self.full_table_name)
            self.record_counter_metric.increment(count)

    def _load_file(self, lines: t.IO[bytes]) -> int | None:
        """COPY one file into a temporary table and upsert it; None without a unique key."""
        columns = self.column_representation(self.schema)
        keys = list(self.key_properties)
        sanitize = bool(self.connector.sanitize_null_text_characters)
        with connect(self.connector) as connection, connection.begin():
            table = self.connector.prepare_table(
                full_table_name=self.full_table_name,
                schema=self.schema,
                primary_keys=self.key_properties,
                as_temp_table=False,
                connection=connection,
            )
            cursor: Cursor[t.Any] = connection.connection.cursor()  # type: ignore[assignment]
            if not self._has_unique_key(cursor, connection, table):
                return None
            preparer = connection.dialect.identifier_preparer
            target = preparer.format_table(table)
            temp = preparer.quote(f"batch_{uuid.uuid4().hex}")
            names = [column.name for column in columns]
            json_columns = [isinstance(column.type, JSON) for column in columns]
            # target-postgres passes every value through its column type's bind processor
            # before COPY (numeric columns, for one, go through float; a missing or null JSON
            # value becomes JSON null); the same here, except for a JSON column's non-null
            # values, where the processor would only re-serialise the file's JSON text.
            processors = [column.type.bind_processor(connection.dialect) for column in columns]
            quoted = [preparer.quote(name) for name in names]
            column_list = ", ".join(quoted)
            key_list = ", ".join(preparer.quote(name) for name in keys)
            cursor.execute(
                f"CREATE TEMP TABLE {temp} ON COMMIT DROP AS"  # noqa: S608
                f" SELECT {column_list} FROM {target} WITH NO DATA"
            )
            count = 0
            with cursor.copy(f"COPY {temp} ({column_list}) FROM STDIN") as copy:
                for line in lines:
                    record = _split(line)
                    row = []
                    for name, json_column, process in zip(
                        names, json_columns, processors, strict=True
                    ):
                        raw = record.get(name)
                        value = (
                            None
                            if raw is None
                            else copy_value(bytes(raw), json_column=json_column, sanitize=sanitize)
                        )
                        if process is not None and (value is None or not json_column):
                            value = process(value)
                        row.append(value)
                    copy.write_row(row)
                    count += 1
            updates = ", ".join(
                f"{q} = EXCLUDED.{q}"
                for name, q in zip(names, quoted, strict=True)
                if name not in keys
            )
            action = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
            # DISTINCT ON: a key twice in one file would make the upsert touch a row twice;
            # the last one in the file (highest ctid in a fresh temporary table) wins.
            cursor.execute(
                f"INSERT INTO {target} ({column_list})"  # noqa: S608
                f" SELECT DISTINCT ON ({key_list}) {column_list} FROM {temp}"
                f" ORDER BY {key_list}, ctid DESC"
                f" ON CONFLICT ({key_list}) {action}"
            )
        return count

    def _has_unique_key(
        self,
        cursor: Cursor[t.Any],
        connection: sqlalchemy.Connection,
        table: sqlalchemy.Table,
    ) -> bool:
        """True when a unique index covers exactly the key properties (ON CONFLICT needs one).

        A table that target-postgres made has one; a table made by an older target or another
        tool may not, and then target-postgres's own load (UPDATE, then INSERT) is used.
        """
        if self._unique_key is None:
            regclass = connection.dialect.identifier_preparer.format_table(table)
            cursor.execute(
                "SELECT array_agg(a.attname::text) FROM pg_index i"
                " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
                " WHERE i.indrelid = %s::regclass AND i.indisunique GROUP BY i.indexrelid",
                (regclass,),
            )
            wanted = set(self.key_properties)
            self._unique_key = any(set(names) == wanted for (names,) in cursor.fetchall())
        return self._unique_key


class TargetPostgresMixpanel(TargetPostgres):
    """target-postgres, whose streams load BATCH files with :class:`FastBatchSink`."""

    name = "target-postgres"
    default_sink_class = FastBatchSink

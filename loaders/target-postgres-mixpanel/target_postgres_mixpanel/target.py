"""meltanolabs target-postgres 0.8.1, with a faster load of Singer SDK BATCH files.

Everything is target-postgres's own (settings, connection, table creation and evolution, the
RECORD path) except how a BATCH file of a stream with key properties reaches its table, when
``use_copy`` is on. target-postgres parses every record with the standard library (``Decimal``
floats), re-serialises each JSON column, COPYs into a temporary table, inserts the new keys
and then UPDATEs every row of the batch, new ones included, with a hash join over the whole
target table. Here, per file, in one transaction:

1. each line is split into its top-level values with msgspec; JSON columns (objects, arrays)
   go to COPY as the JSON text the file holds, never parsed; other values are decoded;
2. the rows are COPYed into a temporary table;
3. one ``INSERT ... SELECT DISTINCT ON (key) ... ON CONFLICT (key) DO UPDATE`` merges them:
   new keys are written once, existing ones updated, and within a file the last record of a
   key wins, as with target-postgres.

The result in the table is the same as target-postgres's. Files are still loaded when the BATCH
message is read, before the next message, and STATE is emitted as the SDK target does. Other
cases (no key properties, no unique index on them, COPY off, Parquet) take target-postgres's
own path.
"""

from __future__ import annotations

import typing as t
import uuid
from gzip import open as gzip_open

import msgspec
from singer_sdk.helpers._batch import BatchFileFormat, StorageTarget
from target_postgres.sinks import PostgresSink
from target_postgres.target import TargetPostgres

if t.TYPE_CHECKING:
    import sqlalchemy
    from singer_sdk.helpers._batch import BaseBatchFileEncoding

_split = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
_decode = msgspec.json.decode
_NULL = b"null"


def _is_json_column(prop: dict[str, t.Any]) -> bool:
    types = prop.get("type", [])
    types = types if isinstance(types, list) else [types]
    return bool({"object", "array"} & set(types)) or (not types and "anyOf" in prop)


class FastBatchSink(PostgresSink):
    """A PostgresSink whose BATCH files go in with COPY and a single upsert statement."""

    _unique_key: bool | None = None

    def process_batch_files(
        self,
        encoding: BaseBatchFileEncoding,
        files: t.Sequence[str],
    ) -> None:
        """Load each file in a transaction of its own, as the SDK's implementation does."""
        if (
            encoding.format != BatchFileFormat.JSONL
            or not self.key_properties
            or not self.config.get("use_copy")
        ):
            super().process_batch_files(encoding, files)
            return
        storage = self.batch_config.storage if self.batch_config else None
        for path in files:
            head, tail = StorageTarget.split_url(path)
            file_storage = storage or StorageTarget.from_url(head)
            with file_storage.open(tail, mode="rb") as raw:
                if encoding.compression == "gzip":
                    with gzip_open(raw) as lines:
                        count = self._load_file(lines)
                else:
                    count = self._load_file(raw)
            if count is None:  # no unique index on the key: target-postgres's own way
                super().process_batch_files(encoding, [path])
                continue
            self.record_counter_metric.increment(count)

    def _load_file(self, lines: t.IO[bytes]) -> int | None:
        columns = [column.name for column in self.column_representation(self.schema)]
        json_columns = {
            name for name, prop in self.schema["properties"].items() if _is_json_column(prop)
        }
        keys = list(self.key_properties)
        sanitize = bool(self.connector.sanitize_null_text_characters)
        with self.connector._connect() as connection, connection.begin():
            table = self.connector.prepare_table(
                full_table_name=self.full_table_name,
                schema=self.schema,
                primary_keys=self.key_properties,
                as_temp_table=False,
                connection=connection,
            )
            if not self._has_unique_key(connection, table):
                return None
            preparer = connection.dialect.identifier_preparer
            target = preparer.format_table(table)
            temp = preparer.quote(f"batch_{uuid.uuid4().hex}")
            quoted = [preparer.quote(name) for name in columns]
            column_list = ", ".join(quoted)
            key_list = ", ".join(preparer.quote(name) for name in keys)
            cursor = connection.connection.cursor()
            cursor.execute(
                f"CREATE TEMP TABLE {temp} ON COMMIT DROP AS"  # noqa: S608
                f" SELECT {column_list} FROM {target} WITH NO DATA"
            )
            count = 0
            with cursor.copy(f"COPY {temp} ({column_list}) FROM STDIN") as copy:
                write = copy.write_row
                for line in lines:
                    if not line.strip():
                        continue
                    record = _split(line)
                    row = []
                    for name in columns:
                        value = record.get(name)
                        if value is None or value == _NULL:
                            row.append(None)
                        elif name in json_columns:
                            row.append(bytes(value).decode("utf-8"))
                        else:
                            decoded = _decode(value)
                            if sanitize and isinstance(decoded, str):
                                decoded = decoded.replace("\x00", "\ufffd")
                            elif isinstance(decoded, (dict, list)):
                                decoded = bytes(value).decode("utf-8")
                            row.append(decoded)
                    write(row)
                    count += 1
            pairs = zip(columns, quoted, strict=True)
            updates = ", ".join(f"{q} = EXCLUDED.{q}" for name, q in pairs if name not in keys)
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

    def _has_unique_key(self, connection: sqlalchemy.Connection, table: sqlalchemy.Table) -> bool:
        """True when a unique index covers exactly the key properties (ON CONFLICT needs one)."""
        if self._unique_key is None:
            cursor = connection.connection.cursor()
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

"""Each private name of target_postgres_mixpanel.seams still exists and works as it is used.

An upgrade of the Singer SDK or of target-postgres that renames, removes or reshapes one of them
must fail here, in CI, rather than in a user's load.
"""

from __future__ import annotations

import gzip
import inspect
from functools import cached_property
from pathlib import Path

import singer_sdk.helpers._batch as sdk_batch
from singer_sdk.sinks.core import Sink
from singer_sdk.target_base import Target
from target_postgres.connector import PostgresConnector
from target_postgres.sinks import PostgresSink

from target_postgres_mixpanel import seams
from target_postgres_mixpanel.target import FastBatchSink, TargetPostgresMixpanel


def test_the_sdk_batch_helpers_keep_their_names_and_shapes():
    for name in ("BaseBatchFileEncoding", "BatchConfig", "BatchFileFormat", "StorageTarget"):
        assert hasattr(sdk_batch, name), name
    assert sdk_batch.BatchFileFormat.JSONL.value == "jsonl"
    encoding = sdk_batch.BaseBatchFileEncoding.from_dict({"format": "jsonl", "compression": "gzip"})
    assert seams.is_jsonl(encoding)
    assert encoding.compression == "gzip"
    parquet = sdk_batch.BaseBatchFileEncoding.from_dict({"format": "parquet"})
    assert not seams.is_jsonl(parquet)
    head, tail = sdk_batch.StorageTarget.split_url("s3://bucket/run/part-1.jsonl.gz")
    assert (head, tail) == ("s3://bucket/run", "part-1.jsonl.gz")


def test_the_sdk_sink_still_reads_batch_files_as_open_batch_file_does():
    # the stock path and the fast path must open the same file for the same manifest entry
    source = inspect.getsource(Sink.process_batch_files)
    assert "StorageTarget.split_url(path)" in source
    assert "self.batch_config.storage if self.batch_config else None" in source
    assert "storage or StorageTarget.from_url(head)" in source
    assert list(inspect.signature(Sink.process_batch_files).parameters) == [
        "self",
        "encoding",
        "files",
    ]
    # and the target hands every BATCH message's manifest to it
    assert "sink.process_batch_files(" in inspect.getsource(Target._process_batch_message)


def test_open_batch_file_reads_a_manifest_url_gzip_or_not(tmp_path: Path):
    plain = tmp_path / "a.jsonl"
    plain.write_bytes(b'{"a": 1}\n')
    packed = tmp_path / "b.jsonl.gz"
    packed.write_bytes(gzip.compress(b'{"b": 2}\n'))
    none = sdk_batch.BaseBatchFileEncoding.from_dict({"format": "jsonl", "compression": "none"})
    gz = sdk_batch.BaseBatchFileEncoding.from_dict({"format": "jsonl", "compression": "gzip"})
    with seams.open_batch_file(plain.as_uri(), none, None) as lines:
        assert list(lines) == [b'{"a": 1}\n']
    with seams.open_batch_file(packed.as_uri(), gz, None) as lines:
        assert list(lines) == [b'{"b": 2}\n']
    # a batch_config in the target's config: its storage root, as the SDK's sink reads it
    config = sdk_batch.BatchConfig.from_dict(
        {"encoding": {"format": "jsonl"}, "storage": {"root": tmp_path.as_uri()}}
    )
    with seams.open_batch_file("file:///elsewhere/a.jsonl", none, config) as lines:
        assert list(lines) == [b'{"a": 1}\n']


def test_the_connectors_connect_is_still_a_context_manager_of_connections():
    assert list(inspect.signature(PostgresConnector._connect).parameters) == ["self"]
    assert "self.connector._connect()" in inspect.getsource(PostgresSink.process_batch)


def test_the_sink_still_has_what_the_fast_path_calls():
    for name in ("column_representation", "process_batch_files", "process_batch"):
        assert callable(getattr(PostgresSink, name)), name
    wanted = {"full_table_name", "schema", "primary_keys", "connection", "as_temp_table"}
    assert wanted <= set(inspect.signature(PostgresConnector.prepare_table).parameters)
    assert isinstance(PostgresConnector.sanitize_null_text_characters, (property, cached_property))
    # the stock sanitiser that sanitize_like_target_postgres mirrors
    assert "replace_null_character" in inspect.getsource(PostgresSink.sanitize_null_text_characters)
    assert TargetPostgresMixpanel.default_sink_class is FastBatchSink
    assert issubclass(FastBatchSink, PostgresSink)

"""Every private Singer SDK or target-postgres name this package uses, in one place.

The rest of the package uses public API only. Each seam exists because there is no public way to
do the same thing, and ``tests/test_seams.py`` checks each against the installed versions, so an
upgrade that removes or reshapes one fails the tests instead of a user's load:

- the BATCH encoding and storage helpers live in the SDK's private ``singer_sdk.helpers._batch``
  (the SDK's own ``Sink.process_batch_files`` reads files with them; reading a manifest URL the
  same way is what makes the fast path open exactly the file the stock path would);
- ``PostgresConnector._connect()`` is how target-postgres itself opens the connection (and the
  SSH tunnel, when configured) that a load runs in.
"""

from __future__ import annotations

import typing as t
from contextlib import contextmanager
from gzip import open as gzip_open

from singer_sdk.helpers._batch import (
    BaseBatchFileEncoding,
    BatchConfig,
    BatchFileFormat,
    StorageTarget,
)

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    import sqlalchemy
    from target_postgres.connector import PostgresConnector

__all__ = ["BaseBatchFileEncoding", "connect", "is_jsonl", "open_batch_file"]


def is_jsonl(encoding: BaseBatchFileEncoding) -> bool:
    """True for JSON Lines BATCH files (gzip or not), the encoding the fast path reads."""
    return bool(encoding.format == BatchFileFormat.JSONL)


@contextmanager
def open_batch_file(
    url: str,
    encoding: BaseBatchFileEncoding,
    batch_config: BatchConfig | None,
) -> Iterator[t.IO[bytes]]:
    """The lines of one file of a BATCH manifest, decompressed, as the SDK's sink opens it.

    Any fsspec URL (``file://``, ``s3://`` with s3fs installed, ...); with a ``batch_config`` in
    the target's config, its storage (root and parameters) is used, as the SDK does.
    """
    head, tail = StorageTarget.split_url(url)
    storage = batch_config.storage if batch_config else StorageTarget.from_url(head)
    with storage.open(tail, mode="rb") as raw:
        if encoding.compression == "gzip":
            with gzip_open(raw) as lines:
                yield t.cast("t.IO[bytes]", lines)
        else:
            yield t.cast("t.IO[bytes]", raw)


def connect(connector: PostgresConnector) -> t.ContextManager[sqlalchemy.Connection]:
    """A connection of target-postgres's own making (SSL, SSH tunnel and all)."""
    return t.cast("t.ContextManager[sqlalchemy.Connection]", connector._connect())

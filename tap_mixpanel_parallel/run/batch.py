"""Singer SDK BATCH files: a finished unit's records as files the loader reads itself.

Written where the SDK's ``batch_config`` says (``storage.root``: a local folder, or any fsspec
storage such as ``s3://bucket/prefix``), encoded as it says (JSONL, gzip or not), at most
``batch_size`` records per file. The lines are the records as the workers encoded them, copied
without parsing them again: that is what keeps BATCH as fast as copying RECORD lines.

A loader built on the Singer SDK (target-postgres) loads a BATCH message's files when it reads
the message, before it reads the next line, and it emits a STATE only once everything before
that STATE is loaded. So a unit (a partition, an engage query, a cohort) goes out as BATCH then
STATE, exactly as RECORDs then STATE did, and a STATE never covers a file the loader has not
loaded.

Where files live and who removes them:

- Each run writes into a folder of its own under the root: ``tap-mixpanel-parallel-*``. On
  local storage it is made and locked as spool folders are
  (:mod:`tap_mixpanel_parallel.run.spool`), with an ``flock`` held for as long as the tap
  runs; every stream of the run writes into this one folder.
- The tap never removes a file of its own run: the loader may read it after the tap exited.
- On local storage, a run first removes the folders of earlier runs that are gone (their lock
  is free), with the spool folders' sweep. That is safe once their pipeline finished: each
  file was either loaded, or was never covered by a STATE and is owed again, so this run
  fetches it anew. At most one finished run's files stay between runs.
- On remote storage (s3://...) nothing can tell a finished run's folder from a live one: the
  tap removes nothing there; a lifecycle rule on the prefix does (README: BATCH files).
- One root serves one pipeline at a time: a second pipeline starting while the loader of the
  first still reads could remove files under it (that load would then fail and be retried;
  nothing is lost, as no STATE covers it).

Each file holds at most ``max_records`` records and, whatever the records' size, at most
:data:`MAX_FILE_BYTES` bytes of JSON (a single larger record gets a file of its own): the
loader holds a whole file in memory, so this bounds its memory whatever the unit's size.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import gzip
import os
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, cast

import fsspec

from tap_mixpanel_parallel.compat import override
from tap_mixpanel_parallel.http.errors import redact
from tap_mixpanel_parallel.locks import try_lock, write_owner
from tap_mixpanel_parallel.run.spool import LOCK_NAME, PREFIX, Swept, remove_stale
from tap_mixpanel_parallel.settings import BatchTarget

#: target-postgres holds a file's records as Python objects: roughly 25 bytes of memory per byte
#: of JSON, so 16 MiB files keep it near 400 MB even for very large events.
MAX_FILE_BYTES = 16 * 1024 * 1024
COPY_BUFFER_BYTES = 1 << 20
#: gzip's fastest level: the files are read once and removed, and level 1 already shrinks
#: event JSON about 6 times at several times the speed of the default level.
GZIP_LEVEL = 1
#: Upload part size for remote storage (s3 needs at least 5 MiB per part).
REMOTE_BLOCK_BYTES = 8 * 1024 * 1024


def filesystem(target: BatchTarget) -> fsspec.AbstractFileSystem:
    """The fsspec filesystem of ``target``, with its storage options."""
    return fsspec.filesystem(target.protocol, **target.params)


def check_storage(target: BatchTarget) -> str | None:
    """One line saying why files cannot be written to ``target``, or None when they can.

    A probe file is written and removed, so a missing bucket, wrong credentials or an
    unreachable endpoint stop the run before its first request, not after a day's export.
    """
    if target.local:
        return None  # checked writable with the other settings, without writing anything
    probe = f"{target.root}/{PREFIX}probe-{uuid.uuid4().hex}"
    try:
        fs = filesystem(target)
        fs.pipe_file(probe, b"")
        fs.rm_file(probe)
    except Exception as exc:  # any fsspec/botocore failure is the same answer
        secrets = [str(v) for v in target.params.values() if isinstance(v, str)]
        reason = redact(f"{type(exc).__name__}: {exc}", secrets).splitlines()[0][:200]
        return (
            f"batch_config.storage.root: cannot write to {target.url}: {reason}; check the"
            " bucket, the credentials (storage.params or the environment) and the endpoint"
        )
    return None


class BatchFiles:
    """This run's folder of BATCH files: created, (locally) locked, filled, left for the loader."""

    def __init__(self, target: BatchTarget, *, max_bytes: int = MAX_FILE_BYTES) -> None:
        self.target = target
        self.max_records = target.max_records
        self.max_bytes = max_bytes
        self.folder: str | None = None
        self._fs: fsspec.AbstractFileSystem | None = None
        self._lock_fd: int | None = None
        self._units = 0

    @property
    def is_open(self) -> bool:
        """True between :meth:`open` and :meth:`close`."""
        return self.folder is not None

    def open(self) -> Swept:
        """Make this run's folder; locally, first remove earlier runs' folders whose run is gone."""
        if not self.target.local:
            stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            self._fs = filesystem(self.target)
            self.folder = f"{self.target.root}/{PREFIX}{stamp}-{uuid.uuid4().hex[:8]}"
            return Swept()
        root = Path(self.target.root)
        root.mkdir(parents=True, exist_ok=True)
        swept = remove_stale(str(root))
        folder = Path(tempfile.mkdtemp(prefix=PREFIX, dir=root))
        fd = try_lock(folder / LOCK_NAME, create=True)
        assert fd is not None, "a folder just made cannot be locked by another run"
        with contextlib.suppress(OSError):
            write_owner(fd)
        self.folder, self._lock_fd = str(folder), fd
        return swept

    def close(self) -> None:
        """Release the lock; the files stay, the loader may still be reading them."""
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def write(self, spools: Sequence[Path], name: str) -> list[str]:
        """Copy a unit's spooled records, in order, into bounded files; their URLs.

        Files are named ``<prefix><n>-<name>-<m>.jsonl[.gz]``, ``n`` counting the run's units.
        """
        if self.folder is None:
            msg = "BatchFiles.open() first"
            raise RuntimeError(msg)
        self._units += 1
        stem = f"{self.target.prefix}{self._units:05d}-{name}"
        suffix = ".jsonl.gz" if self.target.compression == "gzip" else ".jsonl"
        paths: list[str] = []
        out: IO[bytes] | None = None
        records = size = 0
        try:
            for line in _lines(spools):
                full = records >= self.max_records or (
                    records and size + len(line) > self.max_bytes
                )
                if out is None or full:
                    if out is not None:
                        out.close()
                        out = None
                    path = f"{self.folder}/{stem}-{len(paths) + 1:03d}{suffix}"
                    out = self._open(path)
                    paths.append(path)
                    records = size = 0
                out.write(line)
                records += 1
                size += len(line)
            if out is not None:
                out.close()  # flushes the last buffer (uploads it, remotely): may fail too
                out = None
        except OSError:
            # no message will name these files: remove them, then fail
            if out is not None:
                with contextlib.suppress(OSError):
                    out.close()
            for path in paths:
                with contextlib.suppress(OSError):
                    if self._fs is None:
                        os.unlink(path)
                    else:
                        self._fs.rm_file(path)
            raise
        return [self._url(path) for path in paths]

    def _open(self, path: str) -> IO[bytes]:
        raw: IO[bytes]
        if self._fs is None:
            raw = open(path, "wb", buffering=COPY_BUFFER_BYTES)  # noqa: SIM115
        else:
            raw = self._fs.open(path, "wb", block_size=REMOTE_BLOCK_BYTES)
        if self.target.compression != "gzip":
            return raw
        return cast("IO[bytes]", _GzipFile(raw))

    def _url(self, path: str) -> str:
        if self._fs is None:
            return Path(path).as_uri()
        return f"{self.target.protocol}://{path}"


class _GzipFile(gzip.GzipFile):
    """A gzip stream that closes the file it writes into (``GzipFile`` leaves it open)."""

    def __init__(self, raw: IO[bytes]) -> None:
        super().__init__(fileobj=raw, mode="wb", compresslevel=GZIP_LEVEL, mtime=0)
        self._raw = raw

    @override
    def close(self) -> None:
        try:
            super().close()
        finally:
            self._raw.close()


def batch_error(exc: OSError, target: BatchTarget) -> str:
    """The one-line reason a unit's BATCH files could not be written, and what to do."""
    where = f"{target.url} (batch_config.storage.root)"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left for BATCH files in {where}: free space there or use another root"
    return f"cannot write BATCH files in {where}: {exc.strerror or exc}"


def _lines(spools: Sequence[Path]) -> Iterator[bytes]:
    for spool in spools:
        with open(spool, "rb", buffering=COPY_BUFFER_BYTES) as fh:
            yield from fh


def describe(files: BatchFiles, swept: Swept) -> str:
    """The log line for a run's BATCH folder."""
    where = Path(files.folder).as_uri() if files.target.local and files.folder else ""
    where = where or f"{files.target.protocol}://{files.folder}"
    if not files.target.local:
        return f"BATCH files go to {where} (remote storage: nothing is removed by the tap)"
    return (
        f"BATCH files go to {where} ({swept.directories} earlier run folder"
        f"{'' if swept.directories == 1 else 's'} removed, {swept.bytes / (1 << 20):.1f} MiB freed)"
    )

"""Singer SDK BATCH files: a finished partition's records as files the loader reads itself.

A loader built on the Singer SDK (target-postgres) loads a BATCH message's files when it reads
the message, before it reads the next line, and it emits a STATE only once everything before
that STATE is loaded. So a partition goes out as BATCH then STATE, exactly as RECORDs then
STATE did, and a STATE never covers a file the loader has not loaded.

Where files live and who removes them:

- Each run writes into a folder of its own under ``batch_dir``, made and locked as spool folders
  are (:mod:`tap_mixpanel_parallel.run.spool`): ``tap-mixpanel-parallel-*``, with an
  ``flock`` held on its lock file for as long as the tap runs.
- The tap never removes a file of its own run: the loader may read it after the tap exited.
- At start-up a run removes the folders of earlier runs that are gone (their lock is free), with
  the spool folders' sweep. That is safe once their pipeline finished: each file was either
  loaded, or was never covered by a STATE and is owed again, so this run fetches it anew. Files
  therefore never pile up across runs: at most one finished run's files stay between runs.
- One ``batch_dir`` serves one pipeline at a time: a second pipeline starting while the loader
  of the first still reads could remove files under it (that load would then fail and be
  retried; nothing is lost, as no STATE covers it).

Each file holds at most ``max_records`` records and, whatever the records' size, at most
:data:`MAX_FILE_BYTES` bytes (a single larger record gets a file of its own): the loader holds a
whole file in memory, so this bounds its memory whatever the partition size.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import IO

from tap_mixpanel_parallel.locks import try_lock, write_owner
from tap_mixpanel_parallel.run.spool import LOCK_NAME, PREFIX, Swept, remove_stale

#: target-postgres holds a file's records as Python objects: roughly 25 bytes of memory per byte
#: of JSON, so 16 MiB files keep it near 400 MB even for very large events.
MAX_FILE_BYTES = 16 * 1024 * 1024
COPY_BUFFER_BYTES = 1 << 20


class BatchFiles:
    """This run's folder of BATCH files: created, locked, filled, and left for the loader."""

    def __init__(self, root: Path, *, max_records: int, max_bytes: int = MAX_FILE_BYTES) -> None:
        self.root = root
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.folder: Path | None = None
        self._lock_fd: int | None = None

    def open(self) -> Swept:
        """Remove earlier runs' folders whose run is gone, make and lock this run's."""
        self.root.mkdir(parents=True, exist_ok=True)
        swept = remove_stale(str(self.root))
        folder = Path(tempfile.mkdtemp(prefix=PREFIX, dir=self.root))
        fd = try_lock(folder / LOCK_NAME, create=True)
        assert fd is not None, "a folder just made cannot be locked by another run"
        with contextlib.suppress(OSError):
            write_owner(fd)
        self.folder, self._lock_fd = folder, fd
        return swept

    def close(self) -> None:
        """Release the lock; the files stay, the loader may still be reading them."""
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def write(self, spool: Path, name: str) -> list[Path]:
        """Copy a partition's spooled records into bounded files named ``<name>-<n>.jsonl``.

        On an ``OSError`` the files written so far are removed (no message will name them)
        and the error is raised.
        """
        if self.folder is None:
            msg = "BatchFiles.open() first"
            raise RuntimeError(msg)
        files: list[Path] = []
        out: IO[bytes] | None = None
        records = size = 0
        try:
            with open(spool, "rb") as lines:
                for line in lines:
                    full = records >= self.max_records or (
                        records and size + len(line) > self.max_bytes
                    )
                    if out is None or full:
                        if out is not None:
                            out.close()
                            out = None
                        path = self.folder / f"{name}-{len(files) + 1:03d}.jsonl"
                        out = open(path, "wb", buffering=COPY_BUFFER_BYTES)  # noqa: SIM115
                        files.append(path)
                        records = size = 0
                    out.write(line)
                    records += 1
                    size += len(line)
            if out is not None:
                out.close()  # flushes the last buffer: may fail too
                out = None
        except OSError:
            if out is not None:
                with contextlib.suppress(OSError):
                    out.close()
            for path in files:
                with contextlib.suppress(OSError):
                    path.unlink()
            raise
        return files


def batch_error(exc: OSError, root: Path) -> str:
    """The one-line reason a partition's BATCH files could not be written, and what to do."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"no space left for BATCH files in {root} (batch_dir): free space there or point"
            " batch_dir at a larger disk"
        )
    return f"cannot write BATCH files in {root} (batch_dir): {exc.strerror or exc}"

"""Singer SDK BATCH files: a finished partition's records as files the loader reads itself.

A loader built on the Singer SDK (target-postgres) loads a BATCH message's files when it reads
the message, before it reads the next line, and it emits a STATE only once everything before
that STATE is loaded. So a partition goes out as BATCH then STATE, exactly as RECORDs then
STATE did, and a STATE never covers a file the loader has not loaded.

Where files live and who removes them:

- Each run writes into a folder of its own, ``run-<UTC time>-<pid>``, under ``batch_dir``, and
  holds an exclusive ``flock`` on the folder's ``.lock`` for as long as the tap runs.
- The tap never removes a file of its own run: the loader may read it after the tap exited.
- At start-up a run removes the folders of earlier runs whose lock no process holds. That is
  safe once their pipeline finished: each file was either loaded, or was never covered by a
  STATE and is owed again, so this run fetches it anew. Files therefore never pile up across
  runs: at most one finished run's files stay on disk between runs.
- One ``batch_dir`` serves one pipeline at a time: a second pipeline starting while the loader
  of the first still reads could remove files under it (that load would then fail and be
  retried; nothing is lost, as no STATE covers it).

Each file holds at most ``max_records`` records and, whatever the records' size, at most
:data:`MAX_FILE_BYTES` bytes (a single larger record gets a file of its own): the loader holds a
whole file in memory, so this bounds its memory whatever the partition size.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import shutil
from pathlib import Path
from typing import IO

RUN_PREFIX = "run-"
LOCK_NAME = ".lock"
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
        self._lock: IO[bytes] | None = None

    def open(self) -> list[Path]:
        """Remove earlier runs' folders no live tap holds, make this run's; returns the removed."""
        self.root.mkdir(parents=True, exist_ok=True)
        removed = [folder for folder in self._earlier_runs() if _remove_if_unlocked(folder)]
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        folder = self.root / f"{RUN_PREFIX}{stamp}-{os.getpid()}"
        folder.mkdir()
        lock = open(folder / LOCK_NAME, "wb")  # noqa: SIM115  (held until close())
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.folder, self._lock = folder, lock
        return removed

    def close(self) -> None:
        """Release the lock; the files stay, the loader may still be reading them."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def write(self, spool: Path, name: str) -> list[Path]:
        """Copy a partition's spooled records into bounded files named ``<name>-<n>.jsonl``."""
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
                        path = self.folder / f"{name}-{len(files) + 1:03d}.jsonl"
                        out = open(path, "wb", buffering=COPY_BUFFER_BYTES)  # noqa: SIM115
                        files.append(path)
                        records = size = 0
                    out.write(line)
                    records += 1
                    size += len(line)
        finally:
            if out is not None:
                out.close()
        return files

    def _earlier_runs(self) -> list[Path]:
        return sorted(
            p for p in self.root.iterdir() if p.is_dir() and p.name.startswith(RUN_PREFIX)
        )


def _remove_if_unlocked(folder: Path) -> bool:
    """Remove a run folder unless a live process holds its lock; True when removed."""
    lock_path = folder / LOCK_NAME
    try:
        lock = open(lock_path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        lock = None  # a folder whose run died before locking: nobody can be using it
    except OSError:
        return False
    try:
        if lock is not None:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return False  # a running tap holds it
        shutil.rmtree(folder, ignore_errors=True)
        return not folder.exists()
    finally:
        if lock is not None:
            with contextlib.suppress(OSError):
                lock.close()

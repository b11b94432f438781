"""Spool directories: one per run, removed by the run, and by later runs when it was killed.

A run's spool directory holds the partitions fetched ahead of the one being written out, so
it can be large. A run ended by SIGKILL (or by the machine going down) cannot remove its own,
so every run first removes those whose owner is gone. The owner holds a lock on a file in the
directory for as long as it runs (see :mod:`tap_mixpanel_parallel.locks`).
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tap_mixpanel_parallel.compat import Buffer, override
from tap_mixpanel_parallel.http.errors import ExportError
from tap_mixpanel_parallel.http.limiter import StopRequested
from tap_mixpanel_parallel.locks import try_lock, write_owner

PREFIX = "tap-mixpanel-parallel-"
LOCK_NAME = ".owner.lock"
#: A directory without a lock file was made by a version that had none, or its run died in
#: the instant between creating it and locking it. Once nothing in it changed for this long,
#: no run is using it.
UNLOCKED_STALE_SECONDS = 3600.0
SPOOL_BUFFER_BYTES = 1 << 20
_WAIT_SLICE_SECONDS = 0.25


class SpoolError(ExportError):
    """A spool file could not be written (a full disk, most often): the partition fails.

    Not retried in the same run: the disk is as full a second later. It is owed to the next
    run like any failed partition.
    """


def spool_error(exc: OSError, directory: Path) -> SpoolError:
    """The one-line reason, with what to do for the usual causes."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return SpoolError(
            f"no space left for spool files in {directory.parent} (TMPDIR): free space there,"
            " point TMPDIR at a larger disk, or lower max_spool_mb or max_workers"
        )
    return SpoolError(f"cannot write a spool file in {directory.parent}: {exc.strerror or exc}")


class SpoolBudget:
    """Spooled bytes not yet written out, held under a bound.

    Workers of partitions after the *head* (the one the main thread waits for next) wait
    while the bound is reached; the head never waits, so a partition larger than the whole
    bound still goes through, alone. ``limit`` None means no bound.
    """

    def __init__(self, limit: int | None, on_full: Callable[[], None] = lambda: None) -> None:
        self.limit = limit
        self._on_full = on_full
        self._cond = threading.Condition()
        self._used: dict[int, int] = {}
        self._total = 0
        self._head = 0
        self._reported = False

    @property
    def total(self) -> int:
        """Bytes spooled now, all partitions."""
        return self._total

    def full(self) -> bool:
        """True when partitions other than the head must wait."""
        if self.limit is None or self._total < self.limit:
            return False
        if not self._reported:
            self._reported = True
            self._on_full()
        return True

    def take(self, index: int, size: int, stop: threading.Event) -> None:
        """Account ``size`` more bytes of partition ``index``, first waiting for room."""
        with self._cond:
            while index != self._head and self.full():
                if stop.is_set():
                    raise StopRequested
                self._cond.wait(_WAIT_SLICE_SECONDS)
            self._used[index] = self._used.get(index, 0) + size
            self._total += size

    def release(self, index: int, size: int | None = None) -> None:
        """Partition ``index``'s spool was deleted or truncated (``size`` bytes of it, or all)."""
        with self._cond:
            if size is None:
                self._total -= self._used.pop(index, 0)
            else:
                size = min(size, self._used.get(index, 0))
                self._used[index] = self._used.get(index, 0) - size
                self._total -= size
            self._cond.notify_all()

    def set_head(self, index: int) -> None:
        """The main thread now waits for partition ``index``: it may spool without bound."""
        with self._cond:
            self._head = index
            self._cond.notify_all()


class _BudgetedFile(io.FileIO):
    """A spool file whose every flush waits for room in the budget first.

    Under a 1 MiB buffer this runs once per MiB, not once per record.
    """

    def __init__(self, path: Path, budget: SpoolBudget, index: int, stop: threading.Event) -> None:
        super().__init__(path, "w")
        self._budget = budget
        self._index = index
        self._stop = stop

    @override
    def write(self, data: Buffer, /) -> int | None:  # type: ignore[override]
        size = memoryview(data).nbytes
        self._budget.take(self._index, size, self._stop)
        try:
            return super().write(data)
        except OSError as exc:
            raise spool_error(exc, Path(self.name).parent) from None


def open_spool(
    path: Path, budget: SpoolBudget, index: int, stop: threading.Event, *, fresh: bool = True
) -> io.BufferedWriter:
    """Partition ``index``'s spool file, truncated, writing under ``budget``.

    ``fresh`` False opens the spool of a later piece of a split partition: the earlier pieces'
    bytes stay counted.
    """
    if fresh:
        budget.release(index)
    try:
        raw = _BudgetedFile(path, budget, index, stop)
    except OSError as exc:
        raise spool_error(exc, path.parent) from None
    return io.BufferedWriter(raw, buffer_size=SPOOL_BUFFER_BYTES)


@dataclass(frozen=True)
class Swept:
    """What :func:`remove_stale` freed."""

    directories: int = 0
    bytes: int = 0


class SpoolDir:
    """This run's spool directory, locked until :meth:`remove`."""

    def __init__(self, parent: str | None = None) -> None:
        self.path = Path(tempfile.mkdtemp(prefix=PREFIX, dir=parent))
        try:
            fd = try_lock(self.path / LOCK_NAME, create=True)
        except OSError:
            shutil.rmtree(self.path, ignore_errors=True)
            raise
        assert fd is not None, "a directory just made cannot be locked by another run"
        self._lock_fd: int | None = fd
        with contextlib.suppress(OSError):
            write_owner(fd)

    def remove(self) -> None:
        """Delete every spool file and the directory; safe to call twice, or from a signal."""
        shutil.rmtree(self.path, ignore_errors=True)
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def remove_stale(parent: str | None = None, *, now: float | None = None) -> Swept:
    """Remove the spool directories of runs that are gone; live runs' are left alone."""
    root = Path(parent or tempfile.gettempdir())
    now = time.time() if now is None else now
    swept = Swept()
    try:
        candidates = [p for p in root.iterdir() if p.name.startswith(PREFIX) and not p.is_symlink()]
    except OSError:
        return swept
    for directory in candidates:
        if not directory.is_dir():
            continue
        size = _size(directory)
        if _owner_gone(directory, now):
            shutil.rmtree(directory, ignore_errors=True)
            if not directory.exists():
                swept = Swept(swept.directories + 1, swept.bytes + size)
    return swept


def _owner_gone(directory: Path, now: float) -> bool:
    try:
        fd = try_lock(directory / LOCK_NAME, create=False)
    except FileNotFoundError:
        return now - _newest_change(directory) > UNLOCKED_STALE_SECONDS
    except OSError:
        return False
    if fd is None:
        return False  # its run still holds the lock
    # Closing drops the lock just taken; the directory is removed right after, and a run
    # never locks an existing directory, so nobody can claim it in between.
    os.close(fd)
    return True


def _newest_change(directory: Path) -> float:
    newest = 0.0
    with contextlib.suppress(OSError):
        newest = directory.stat().st_mtime
        for entry in directory.iterdir():
            with contextlib.suppress(OSError):
                newest = max(newest, entry.stat().st_mtime)
    return newest


def _size(directory: Path) -> int:
    total = 0
    with contextlib.suppress(OSError):
        for entry in directory.iterdir():
            with contextlib.suppress(OSError):
                total += entry.stat().st_size
    return total

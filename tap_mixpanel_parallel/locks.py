"""Advisory locks that die with their process.

``flock`` locks belong to an open file and the kernel drops them when the process ends,
however it ends (SIGKILL included): a lock that can be taken means its last owner is gone,
with no pid file to go stale and no pid reused by another process to be fooled by.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path


def try_lock(path: Path, *, create: bool) -> int | None:
    """An open descriptor holding an exclusive lock on ``path``, or None when it is held.

    Without ``create`` a missing file raises ``FileNotFoundError``. The lock lasts until the
    descriptor is closed or the process ends.
    """
    flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    fd = os.open(path, flags, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_owner(fd: int) -> None:
    """Record this process's id in a held lock file, for the message another run shows."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


def read_owner(path: Path) -> str:
    """The pid written by the holder of ``path``'s lock, or "?"."""
    with contextlib.suppress(OSError, ValueError):
        return str(int(path.read_text().strip()))
    return "?"


#: Locks this process holds until it ends.
_held: list[int] = []


def hold_state_lock(state_file: str) -> str | None:
    """Lock ``state_file`` for this run; the other run's pid when one already holds it.

    The lock is an ``flock`` on the state file itself (opened read-only, never written), so
    every run given that file meets it, by any path and whatever its ``TMPDIR``. A state that
    is not a regular file (stdin, a pipe) has nothing to key on and is not locked; nor is one
    this process cannot open.
    """
    path = Path(state_file)
    try:
        if not path.is_file():
            return None
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        owner = flock_owner(fd)
        os.close(fd)
        return owner
    _held.append(fd)
    return None


def flock_owner(fd: int) -> str:
    """The pid holding an ``flock`` on ``fd``'s file, from Linux's ``/proc/locks``, or "?"."""
    st = os.fstat(fd)
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            # "1: FLOCK  ADVISORY  WRITE 4242 08:01:1234 0 EOF"; blocked waiters add "->".
            if "->" not in fields and "FLOCK" in fields and inode in fields:
                return str(int(fields[fields.index(inode) - 1]))
    return "?"

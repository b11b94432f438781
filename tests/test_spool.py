"""Spool folders and the spool byte bound, with real files, real locks and real threads."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from tap_mixpanel_parallel.http.limiter import StopRequested
from tap_mixpanel_parallel.run.spool import (
    LOCK_NAME,
    PREFIX,
    UNLOCKED_STALE_SECONDS,
    SpoolBudget,
    SpoolDir,
    remove_stale,
)


def test_a_folder_whose_run_is_gone_is_removed_and_a_live_ones_is_kept(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from tap_mixpanel_parallel.run.spool import SpoolDir\n"
            f"d = SpoolDir({str(tmp_path)!r})\n"
            "(d.path / 'x.jsonl').write_bytes(b'x' * 1000)\n"
            "print(d.path, flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        live = holder.stdout.readline().strip()
        mine = SpoolDir(str(tmp_path))  # this process's own, live too
        assert remove_stale(str(tmp_path)).directories == 0
        assert os.path.isdir(live) and mine.path.is_dir()
        holder.kill()
        holder.wait()
        swept = remove_stale(str(tmp_path))
        assert (swept.directories, os.path.exists(live)) == (1, False)
        assert swept.bytes >= 1000
        assert mine.path.is_dir()
        mine.remove()
        assert not mine.path.exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_folder_without_a_lock_is_removed_only_once_it_is_an_hour_old(tmp_path):
    old = tmp_path / f"{PREFIX}old-version"
    old.mkdir()
    (old / "000000.jsonl").write_bytes(b"{}\n")
    assert not (old / LOCK_NAME).exists()
    assert remove_stale(str(tmp_path)).directories == 0
    later = time.time() + UNLOCKED_STALE_SECONDS + 1
    assert remove_stale(str(tmp_path), now=later).directories == 1
    assert not old.exists()
    other = tmp_path / "somebody-elses"
    other.mkdir()
    assert remove_stale(str(tmp_path), now=later).directories == 0
    assert other.exists()


def test_the_head_partition_never_waits_and_the_others_wait_for_room():
    budget = SpoolBudget(100)
    stop = threading.Event()
    budget.take(0, 150, stop)  # the head: past the bound, alone
    taken = threading.Event()

    def second() -> None:
        budget.take(1, 10, stop)
        taken.set()

    worker = threading.Thread(target=second)
    worker.start()
    assert not taken.wait(0.5), "a partition after the head spooled past the bound"
    budget.release(0)  # the head was written out
    budget.set_head(1)
    assert taken.wait(10)
    worker.join()
    assert budget.total == 10


def test_a_waiting_partition_gives_up_on_stop():
    budget = SpoolBudget(1)
    stop = threading.Event()
    budget.take(0, 1, stop)
    errors: list[BaseException] = []

    def second() -> None:
        try:
            budget.take(1, 1, stop)
        except StopRequested as exc:
            errors.append(exc)

    worker = threading.Thread(target=second)
    worker.start()
    stop.set()
    worker.join(10)
    assert not worker.is_alive()
    assert len(errors) == 1


@pytest.mark.parametrize("limit", [None, 10])
def test_no_bound_or_room_left_never_waits(limit):
    budget = SpoolBudget(limit)
    budget.take(3, 5, threading.Event())
    assert budget.total == 5 and not budget.full()

"""The tap's bookmark and its list of failed partitions, as pure values.

Singer state for the ``events`` stream looks like::

    {"replication_key": "time",
     "replication_key_value": "2024-03-10",
     "failed_partitions": [{"from_date": "2024-02-01", "to_date": "2024-02-07",
                            "error": "HTTP 503 ...", "attempts": 6}]}

``replication_key_value`` is the last project-timezone day up to which every day of the
incremental range is *settled*: exported, or written into ``failed_partitions``. Failed
partitions are owed separately, so the bookmark may move past them; they leave the list only
when a later run exports them. The bookmark never covers today, because today is not over
and Mixpanel is still receiving its events.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from tap_mixpanel_parallel.export.partitions import PlannedPartition
from tap_mixpanel_parallel.run.dates import ONE_DAY, Partition
from tap_mixpanel_parallel.run.state import StateError

REPLICATION_KEY = "time"
STREAM = "events"
_FIX = "fix or delete the state"
_START_OVER = (
    "pass the last STATE message's value, or no --state to export from start_date"
    " (under Meltano: meltano state clear)"
)


@dataclass(frozen=True)
class FailedPartition:
    """A partition owed to the next run, with why it failed and how often it was tried."""

    partition: Partition
    error: str
    attempts: int

    def to_json(self) -> dict[str, Any]:
        """The shape documented in the README."""
        return {
            "from_date": self.partition.from_date.isoformat(),
            "to_date": self.partition.to_date.isoformat(),
            "error": self.error,
            "attempts": self.attempts,
        }


@dataclass(frozen=True)
class ExportState:
    """What the tap knows between runs."""

    bookmark: dt.date | None = None
    failed: tuple[FailedPartition, ...] = ()

    @property
    def failed_partitions(self) -> list[Partition]:
        """The failed partitions in the order they will be retried."""
        return [f.partition for f in self.failed]


def _parse_day(value: Any, where: str) -> dt.date:
    if not isinstance(value, str):
        msg = f"state {where} must be a YYYY-MM-DD string, got {value!r}; fix or delete the state"
        raise StateError(msg)
    try:
        return dt.date.fromisoformat(value[:10])
    except ValueError:
        msg = f"state {where} is not a date: {value!r}; fix or delete the state"
        raise StateError(msg) from None


def load_state(stream_state: Mapping[str, Any]) -> ExportState:
    """Read the ``bookmarks.events`` entry of incoming Singer state."""
    raw_bookmark = stream_state.get("replication_key_value")
    bookmark = None if raw_bookmark is None else _parse_day(raw_bookmark, "replication_key_value")
    raw_failed = stream_state.get("failed_partitions")
    if raw_failed is None:
        raw_failed = []
    if not isinstance(raw_failed, list):
        msg = "state failed_partitions must be a list; fix or delete the state"
        raise StateError(msg)
    failed: list[FailedPartition] = []
    for i, item in enumerate(raw_failed):
        where = f"failed_partitions[{i}]"
        if not isinstance(item, Mapping):
            msg = f"state {where} must be an object; fix or delete the state"
            raise StateError(msg)
        start = _parse_day(item.get("from_date"), f"{where}.from_date")
        end = _parse_day(item.get("to_date"), f"{where}.to_date")
        if start > end:
            msg = f"state {where} has from_date after to_date; fix or delete the state"
            raise StateError(msg)
        attempts = item.get("attempts", 0)
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 0:
            msg = f"state {where}.attempts must be a whole number, got {attempts!r}; {_FIX}"
            raise StateError(msg)
        error = item.get("error", "")
        if not isinstance(error, str):
            msg = f"state {where}.error must be a string; {_FIX}"
            raise StateError(msg)
        failed.append(FailedPartition(Partition(start, end), error, attempts))
    return ExportState(bookmark, merge_overlapping(failed))


def merge_overlapping(failed: Sequence[FailedPartition]) -> tuple[FailedPartition, ...]:
    """Failed partitions that share a day become one, so no day is fetched twice in a run.

    The tap never writes overlapping ones; a hand-edited state may. A merged entry spans the
    union of its members, sits where its first member was, keeps that member's error and the
    largest attempt count. Ranges that merely touch stay apart: they are separate requests.
    """
    order = sorted(range(len(failed)), key=lambda i: failed[i].partition)
    groups: list[list[int]] = []
    reach: dt.date | None = None
    for i in order:
        part = failed[i].partition
        if reach is not None and part.from_date <= reach:
            groups[-1].append(i)
            reach = max(reach, part.to_date)
        else:
            groups.append([i])
            reach = part.to_date
    merged: list[tuple[int, FailedPartition]] = []
    for members in groups:
        first = min(members)
        span = Partition(
            min(failed[i].partition.from_date for i in members),
            max(failed[i].partition.to_date for i in members),
        )
        attempts = max(failed[i].attempts for i in members)
        merged.append((first, FailedPartition(span, failed[first].error, attempts)))
    return tuple(entry for _, entry in sorted(merged, key=lambda pair: pair[0]))


def read_state_file(text: str, name: str) -> dict[str, Any]:
    """The ``--state`` file's text as Singer state, or a :class:`StateError` saying what to do.

    The SDK parses the file itself and ends in a traceback on anything but a JSON object of
    objects; checking first gives the user one line instead.
    """
    if not text.strip():
        msg = f"state file {name} is empty; {_START_OVER}"
        raise StateError(msg)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        msg = f"state file {name} is not JSON (line {exc.lineno} column {exc.colno}); {_START_OVER}"
        raise StateError(msg) from None
    check_state(value)
    assert isinstance(value, dict)
    return value


def check_state(state: Any) -> None:
    """Raise :class:`StateError` unless ``state`` is Singer state this tap can resume from.

    Other streams' bookmarks are only checked to be objects (the SDK requires it); the
    ``events`` entry is read in full, so a wrong type fails before any request.
    """
    if not isinstance(state, Mapping):
        kind = type(state).__name__
        msg = f'state must be a JSON object {{"bookmarks": ...}}, not a {kind}; {_START_OVER}'
        raise StateError(msg)
    bookmarks = state.get("bookmarks", {})
    if not isinstance(bookmarks, Mapping):
        msg = f"state bookmarks must be an object; {_START_OVER}"
        raise StateError(msg)
    if "export" in bookmarks and not isinstance(bookmarks["export"], Mapping):
        msg = (
            "state has singer-io tap-mixpanel's shape (bookmarks.export), which this tap does"
            " not read; to go on from that day, set start_date to it and run without --state"
        )
        raise StateError(msg)
    for stream, entry in bookmarks.items():
        if not isinstance(entry, Mapping):
            msg = f"state bookmarks.{stream} must be an object; {_START_OVER}"
            raise StateError(msg)
    load_state(bookmarks.get(STREAM, {}))


def bookmark_in_future(state: ExportState, today: dt.date) -> dt.date | None:
    """The latest bookmark a run can write (yesterday) when ``state``'s is later, else None.

    A run never settles today, so a later bookmark was hand-edited or written under a wrong
    clock. Kept as is, it would silently export nothing until that day comes; read as
    yesterday, the run exports today (and the lookback) as usual.
    """
    latest = today - dt.timedelta(days=1)
    if state.bookmark is not None and state.bookmark > latest:
        return latest
    return None


def dump_state(state: ExportState) -> dict[str, Any]:
    """The ``bookmarks.events`` entry to emit."""
    out: dict[str, Any] = {
        "replication_key": REPLICATION_KEY,
        "failed_partitions": [f.to_json() for f in state.failed],
    }
    if state.bookmark is not None:
        out["replication_key_value"] = state.bookmark.isoformat()
    return out


def _advance(
    state: ExportState, planned: PlannedPartition, piece: Partition, today: dt.date
) -> ExportState:
    if planned.retry_of_failed:
        return state
    reach = min(piece.to_date, today - dt.timedelta(days=1))
    if state.bookmark is not None and state.bookmark >= reach:
        return state
    return replace(state, bookmark=reach)


def _replace_owed(
    state: ExportState, piece: Partition, failed: FailedPartition | None
) -> ExportState:
    """Settle ``piece`` in the failed list: the entry holding it keeps only its other days.

    A failed partition retried in pieces (Mixpanel cut it, so it was split) leaves the list a
    piece at a time; ``failed`` takes the piece's place when it failed again, so the list
    always holds exactly the days still owed, at the size that failed.
    """
    entry = next(
        (
            f
            for f in state.failed
            if f.partition.from_date <= piece.from_date <= f.partition.to_date
        ),
        None,
    )
    if entry is None:
        return replace(state, failed=state.failed if failed is None else (*state.failed, failed))
    span = entry.partition
    around: list[FailedPartition] = []
    if span.from_date < piece.from_date:
        around.append(
            replace(entry, partition=Partition(span.from_date, piece.from_date - ONE_DAY))
        )
    if failed is not None:
        around.append(replace(failed, attempts=failed.attempts + entry.attempts))
    if piece.to_date < span.to_date:
        around.append(replace(entry, partition=Partition(piece.to_date + ONE_DAY, span.to_date)))
    i = state.failed.index(entry)
    return replace(state, failed=(*state.failed[:i], *around, *state.failed[i + 1 :]))


def settle_done(
    state: ExportState, planned: PlannedPartition, today: dt.date, piece: Partition | None = None
) -> ExportState:
    """A partition's events (or those of ``piece`` of it) were all emitted.

    Its days leave the failed list and the bookmark moves over them.
    """
    piece = planned.partition if piece is None else piece
    return _advance(_replace_owed(state, piece, None), planned, piece, today)


def settle_failed(
    state: ExportState,
    planned: PlannedPartition,
    error: str,
    attempts: int,
    today: dt.date,
    piece: Partition | None = None,
) -> ExportState:
    """A partition (or ``piece`` of it) ran out of retries: it is owed, attempts summed."""
    piece = planned.partition if piece is None else piece
    entry = FailedPartition(piece, error, attempts)
    return _advance(_replace_owed(state, piece, entry), planned, piece, today)

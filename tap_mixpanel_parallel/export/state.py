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
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from tap_mixpanel_parallel.export.partitions import Partition, PlannedPartition

REPLICATION_KEY = "time"


class StateError(ValueError):
    """The incoming state cannot be read; the message says which key and what to do."""


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
        failed.append(
            FailedPartition(
                Partition(start, end),
                str(item.get("error", "")),
                attempts if isinstance(attempts, int) else 0,
            )
        )
    return ExportState(bookmark, tuple(failed))


def dump_state(state: ExportState) -> dict[str, Any]:
    """The ``bookmarks.events`` entry to emit."""
    out: dict[str, Any] = {
        "replication_key": REPLICATION_KEY,
        "failed_partitions": [f.to_json() for f in state.failed],
    }
    if state.bookmark is not None:
        out["replication_key_value"] = state.bookmark.isoformat()
    return out


def _advance(state: ExportState, planned: PlannedPartition, today: dt.date) -> ExportState:
    if planned.retry_of_failed:
        return state
    reach = min(planned.partition.to_date, today - dt.timedelta(days=1))
    if state.bookmark is not None and state.bookmark >= reach:
        return state
    return replace(state, bookmark=reach)


def settle_done(state: ExportState, planned: PlannedPartition, today: dt.date) -> ExportState:
    """A partition's events were all emitted: drop it from the failed list, move the bookmark."""
    remaining = tuple(f for f in state.failed if f.partition != planned.partition)
    return _advance(replace(state, failed=remaining), planned, today)


def settle_failed(
    state: ExportState,
    planned: PlannedPartition,
    error: str,
    attempts: int,
    today: dt.date,
) -> ExportState:
    """A partition ran out of retries: keep (or add) it in the failed list, attempts summed."""
    previous = next((f for f in state.failed if f.partition == planned.partition), None)
    entry = FailedPartition(
        planned.partition, error, attempts + (previous.attempts if previous else 0)
    )
    if previous is None:
        failed = (*state.failed, entry)
    else:
        failed = tuple(entry if f is previous else f for f in state.failed)
    return _advance(replace(state, failed=failed), planned, today)

"""The bookmarks of the query streams (pure).

``engage`` is bookmarked on ``$last_seen`` (Mixpanel's "updated at" of a profile). The pages
of one session arrive in no particular order, so the largest ``$last_seen`` is only known, and
only safe to keep, once the whole query was emitted; until then the state stays as it was.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tap_mixpanel_parallel.run.state import StateError

UTC = dt.timezone.utc
LAST_SEEN_FORMAT = "%Y-%m-%dT%H:%M:%S"


def parse_last_seen(value: Any) -> dt.datetime | None:
    """``$last_seen`` as an aware UTC datetime, or None when absent or unreadable.

    Mixpanel writes it without an offset (``2024-01-31T12:00:00``); it is read as UTC, as the
    peers do. Nothing in Mixpanel's documentation says otherwise. A ``Z`` offset, which RFC 3339
    allows in either case, is UTC too (``fromisoformat`` reads neither on Python 3.10, nor a
    lowercase one on any version).
    """
    if not isinstance(value, str) or not value:
        return None
    if value[-1:].upper() == "Z":
        value = value[:-1] + "+00:00"
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def format_last_seen(moment: dt.datetime) -> str:
    """The form Mixpanel writes and compares ``$last_seen`` in (UTC, no offset, seconds)."""
    return moment.astimezone(UTC).strftime(LAST_SEEN_FORMAT)


def later(a: dt.datetime | None, b: dt.datetime | None) -> dt.datetime | None:
    """The later of two optional moments."""
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def load_bookmark(stream_state: Mapping[str, Any], stream: str) -> dt.datetime | None:
    """The bookmark of a stream bookmarked on a date-time, or None on a first run."""
    value = stream_state.get("replication_key_value")
    if value is None:
        return None
    moment = parse_last_seen(value)
    if moment is None:
        msg = f"bookmarks.{stream}.replication_key_value: {value!r} is not an ISO 8601 date-time"
        raise StateError(msg)
    return moment


def dump_bookmark(moment: dt.datetime, key: str) -> dict[str, Any]:
    """The SDK's own bookmark shape, so Meltano and users read it as usual."""
    return {"replication_key": key, "replication_key_value": format_last_seen(moment)}


@dataclass(frozen=True)
class EngageState:
    """``bookmarks.engage``: the bookmark, and when every profile was last read (only kept
    when ``engage_full_refresh_days`` asks for it)."""

    bookmark: dt.datetime | None = None
    last_full_read: dt.datetime | None = None


ENGAGE = "engage"
LAST_FULL_READ = "last_full_read"


def load_engage_state(stream_state: Mapping[str, Any]) -> EngageState:
    """Read ``bookmarks.engage``; :class:`StateError` names the key that cannot be read."""
    bookmark = load_bookmark(stream_state, ENGAGE)
    raw = stream_state.get(LAST_FULL_READ)
    last_full_read = None if raw is None else parse_last_seen(raw)
    if raw is not None and last_full_read is None:
        msg = f"bookmarks.{ENGAGE}.{LAST_FULL_READ}: {raw!r} is not an ISO 8601 date-time"
        raise StateError(msg)
    return EngageState(bookmark, last_full_read)


def dump_engage_state(state: EngageState, key: str) -> dict[str, Any]:
    """``bookmarks.engage`` to emit."""
    out: dict[str, Any] = {"replication_key": key}
    if state.bookmark is not None:
        out = dump_bookmark(state.bookmark, key)
    if state.last_full_read is not None:
        out[LAST_FULL_READ] = format_last_seen(state.last_full_read)
    return out


def ahead_of(moment: dt.datetime | None, clock: dt.datetime) -> dt.datetime | None:
    """``moment`` when it is after ``clock`` (a bookmark or ``$last_seen`` in the future), else
    None. Nothing a run reads was updated after the run read it, so such a moment was set by
    hand (an import writing ``$last_seen``, an edited state) or under a wrong clock; kept as a
    bookmark it would hide every update until that day comes."""
    if moment is not None and moment > clock:
        return moment
    return None


def full_read_due(
    state: EngageState, now: dt.datetime, every_days: int | None, *, forced: bool
) -> bool:
    """Whether this engage run reads every profile: asked for, a first run, or
    ``every_days`` (``engage_full_refresh_days``) since the last full read."""
    if forced or state.bookmark is None:
        return True
    if every_days is None:
        return False
    return state.last_full_read is None or now - state.last_full_read >= dt.timedelta(
        days=every_days
    )


def engage_where(
    bookmark: dt.datetime | None, lookback_days: int, *, full_refresh: bool
) -> str | None:
    """The ``where`` expression of an incremental engage query, None for all profiles.

    The lookback re-reads profiles updated shortly before the bookmark: an update can reach
    Mixpanel's profile store after later ones were already read.
    """
    if full_refresh or bookmark is None:
        return None
    since = bookmark - dt.timedelta(days=lookback_days)
    return f'properties["$last_seen"] >= "{format_last_seen(since)}"'

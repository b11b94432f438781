"""The bookmarks of the query streams (pure).

``engage`` is bookmarked on ``$last_seen`` (Mixpanel's "updated at" of a profile). The pages
of one session arrive in no particular order, so the largest ``$last_seen`` is only known, and
only safe to keep, once the whole query was emitted; until then the state stays as it was.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from tap_mixpanel_parallel.run.state import StateError

UTC = dt.timezone.utc
LAST_SEEN_FORMAT = "%Y-%m-%dT%H:%M:%S"


def parse_last_seen(value: Any) -> dt.datetime | None:
    """``$last_seen`` as an aware UTC datetime, or None when absent or unreadable.

    Mixpanel writes it without an offset (``2024-01-31T12:00:00``); it is read as UTC, as the
    peers do. Nothing in Mixpanel's documentation says otherwise.
    """
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
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

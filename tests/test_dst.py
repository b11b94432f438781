"""Local-time projects: the repeated autumn hour reads as its first pass (docs/streams.md)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from tap_mixpanel_parallel.export.records import event_time

NEW_YORK = ZoneInfo("America/New_York")


def local_number(wall: dt.datetime) -> int:
    """What Mixpanel exports for a local-time project: wall-clock time written as if UTC."""
    return int(wall.replace(tzinfo=dt.timezone.utc).timestamp())


def test_both_passes_of_the_repeated_hour_export_the_same_number_and_read_as_the_first():
    first = dt.datetime(2024, 11, 3, 1, 30, tzinfo=NEW_YORK, fold=0)  # 05:30 UTC, EDT
    second = dt.datetime(2024, 11, 3, 1, 30, tzinfo=NEW_YORK, fold=1)  # 06:30 UTC, EST
    assert first.astimezone(dt.timezone.utc) != second.astimezone(dt.timezone.utc)
    number = local_number(first.replace(tzinfo=None))
    assert number == local_number(second.replace(tzinfo=None)), "Mixpanel cannot tell them apart"
    assert event_time(number, in_ms=False, zone=NEW_YORK) == "2024-11-03T05:30:00+00:00"


def test_outside_the_repeated_hour_local_time_is_exact():
    wall = dt.datetime(2024, 11, 3, 3, 30)  # EST, unambiguous
    assert event_time(local_number(wall), in_ms=False, zone=NEW_YORK) == "2024-11-03T08:30:00+00:00"

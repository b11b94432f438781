"""From one line of Mixpanel's JSONL to one Singer record.

The event's ``properties`` object is carried through as the exact bytes Mixpanel sent
(``msgspec.Raw``): nested objects stay objects, unknown keys are kept, nothing is re-typed or
stringified, and the cost of parsing and re-writing a ~600-byte object disappears. Only the
keys the record's columns need are decoded.

Two exceptions, both rare and both decided per line after a cheap byte scan:

- An event without ``$insert_id`` gets a synthetic one (:func:`synthetic_insert_id`), so that
  the record key never merges two events and is the same each time the event is read again.
- With ``sanitize_text``, a line that holds an escaped NUL or invalid UTF-8 is cleaned
  (:func:`~tap_mixpanel_parallel.run.text.sanitize_line`): PostgreSQL stores neither in
  ``text`` or ``jsonb``, and one such event would otherwise fail the whole load on every rerun.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

from tap_mixpanel_parallel.http.errors import PartitionRejected, StreamCut
from tap_mixpanel_parallel.run.text import (
    TEXT_DECODE_ERRORS,
    is_utf8,
    replace_invalid_utf8,
    sanitize_line,
)

STREAM_NAME = "events"
TERMINATED_EARLY = b"terminated early"
UTC = dt.timezone.utc
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = dt.datetime(1970, 1, 1)


class OutOfRangeTime(PartitionRejected):
    """An event whose ``time`` no date-time can hold (1e20; milliseconds read as seconds).

    A client sent it and Mixpanel kept it; exporting again cannot change it. The worker skips
    such an event and reports it by line number, so one odd event never blocks a partition.
    """


class _Event(msgspec.Struct):
    event: Any = None
    properties: msgspec.Raw = msgspec.Raw(b"{}")


class _Keys(msgspec.Struct):
    time: int | float | None = None
    distinct_id: Any = None
    insert_id: Any = msgspec.field(name="$insert_id", default=None)
    device_id: Any = msgspec.field(name="$device_id", default=None)
    user_id: Any = msgspec.field(name="$user_id", default=None)


class _RawEvent(msgspec.Struct):
    event: msgspec.Raw = msgspec.Raw(b"null")
    properties: msgspec.Raw = msgspec.Raw(b"{}")


_event_decoder = msgspec.json.Decoder(_Event)
_raw_event_decoder = msgspec.json.Decoder(_RawEvent)
_keys_decoder = msgspec.json.Decoder(_Keys)
_encoder = msgspec.json.Encoder()

#: Marks a synthetic ``insert_id``; Mixpanel's own are letters, digits and dashes.
SYNTHETIC_PREFIX = "h:"


def synthetic_insert_id(event: bytes, properties: bytes, occurrence: int) -> str:
    """The key of an event that has no ``$insert_id``: unique per event, stable across reads.

    A hash of the event name and the ``properties`` object exactly as Mixpanel sent them (their
    JSON text), so two events that differ in anything get two keys and the same event read
    again (lookback, retry, resume, a later run) gets the same key. Byte-identical events
    (same name and properties, hence the same second and day) are told apart by
    ``occurrence``, their count so far within the partition: a partition always holds whole
    days, so the n-th copy is the n-th copy on every read.
    """
    digest = hashlib.blake2b(event + properties, digest_size=16).hexdigest()
    suffix = "" if occurrence == 1 else f":{occurrence}"
    return f"{SYNTHETIC_PREFIX}{digest}{suffix}"


def event_time(value: float, *, in_ms: bool, zone: ZoneInfo | None) -> str:
    """RFC 3339 UTC for Mixpanel's ``time``.

    Projects created before 2023 count ``time`` in their own timezone: the number is the local
    wall-clock time written as if it were UTC. ``zone`` is that timezone, or ``None`` for UTC
    projects, where the number is a true Unix time.
    """
    delta = dt.timedelta(milliseconds=value) if in_ms else dt.timedelta(seconds=value)
    if zone is None:
        moment = _EPOCH + delta
    else:
        moment = (_NAIVE_EPOCH + delta).replace(tzinfo=zone).astimezone(UTC)
    return moment.isoformat(timespec="milliseconds" if in_ms else "auto")


def _decode(line: bytes) -> tuple[_Event, _Keys]:
    try:
        event = _event_decoder.decode(line)
        return event, _keys_decoder.decode(event.properties)
    except TEXT_DECODE_ERRORS:
        if is_utf8(line):
            raise  # a cut or foreign line, not bad text
        # Invalid UTF-8 in a decoded field (sanitize_text off): the columns get U+FFFD, and
        # properties stay the bytes Mixpanel sent.
        event = _event_decoder.decode(replace_invalid_utf8(line))
        keys = _keys_decoder.decode(event.properties)
        event.properties = _raw_event_decoder.decode(line).properties
        return event, keys


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _optional_text(value: Any) -> str | None:
    """A column that is null when the event has no such property, as in Mixpanel's own
    warehouse export."""
    return None if value is None else _text(value)


class RecordEncoder:
    """Turns a raw line into the bytes the spool holds for it.

    ``as_messages`` writes whole Singer RECORD lines, ready to be copied to stdout; otherwise
    the record alone is written, for the main thread to hand to the SDK (stream maps,
    deselected fields).
    """

    def __init__(
        self,
        *,
        time_in_ms: bool,
        zone: ZoneInfo | None,
        as_messages: bool,
        sanitize: bool = False,
    ) -> None:
        self.time_in_ms = time_in_ms
        self.zone = zone
        self.as_messages = as_messages
        self.sanitize = sanitize

    def encode(
        self,
        line: bytes,
        line_no: int,
        time_extracted: str,
        occurrences: dict[str, int] | None = None,
    ) -> bytes:
        """One spool line (newline included); raises on a cut stream or a malformed event.

        ``occurrences`` counts the events without ``$insert_id`` seen so far in this attempt at
        the partition (one dict per attempt), to number byte-identical ones.
        """
        raw = line
        if self.sanitize:
            line = sanitize_line(line)
        try:
            event, keys = _decode(line)
        except msgspec.ValidationError as exc:
            # msgspec names the expected type and the path, never the value it found.
            if str(exc).startswith("Number out of range") and str(exc).endswith("`$.time`"):
                raise OutOfRangeTime(self._out_of_range(line_no)) from None
            msg = f"line {line_no} is not a Mixpanel event ({exc})"
            raise PartitionRejected(msg) from None
        except msgspec.DecodeError:
            # Never quote the line: a cut event is still event content.
            if TERMINATED_EARLY in line:
                msg = (
                    f"Mixpanel ended the stream early ('export terminated early') at line {line_no}"
                )
            else:
                msg = f"line {line_no} is not valid JSON (corrupt or cut stream)"
            raise StreamCut(msg) from None
        if keys.time is None or isinstance(keys.time, bool):
            msg = f"line {line_no}: event has no numeric properties.time"
            raise PartitionRejected(msg)
        try:
            when = event_time(keys.time, in_ms=self.time_in_ms, zone=self.zone)
        except (OverflowError, ValueError):
            raise OutOfRangeTime(self._out_of_range(line_no)) from None
        insert_id = _text(keys.insert_id)
        if not insert_id:
            sent = _raw_event_decoder.decode(raw)
            name, props = bytes(sent.event), bytes(sent.properties)
            seen = {} if occurrences is None else occurrences
            first = synthetic_insert_id(name, props, 1)
            count = seen[first] = seen.get(first, 0) + 1
            insert_id = first if count == 1 else synthetic_insert_id(name, props, count)
        record = {
            "event": _text(event.event),
            "time": when,
            "distinct_id": _text(keys.distinct_id),
            "device_id": _optional_text(keys.device_id),
            "user_id": _optional_text(keys.user_id),
            "insert_id": insert_id,
            "properties": event.properties,
        }
        if self.as_messages:
            message = {
                "type": "RECORD",
                "stream": STREAM_NAME,
                "record": record,
                "time_extracted": time_extracted,
            }
            return _encoder.encode(message) + b"\n"
        return _encoder.encode(record) + b"\n"

    def _out_of_range(self, line_no: int) -> str:
        unit = "milliseconds" if self.time_in_ms else "seconds"
        hint = "" if self.time_in_ms else "; milliseconds sent as seconds?"
        return (
            f"line {line_no}: properties.time is out of range as {unit} since 1970"
            f" (not between years 1 and 9999{hint})"
        )


def decode_record(line: bytes) -> dict[str, Any]:
    """A spooled record back as a dict, for the SDK's own record path."""
    record: dict[str, Any] = msgspec.json.decode(line)
    return record

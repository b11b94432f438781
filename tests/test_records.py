"""Line to record: properties unchanged, time in UTC, cut or bad lines never become records."""

from __future__ import annotations

import json
from zoneinfo import ZoneInfo

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tap_mixpanel_parallel.export.records import RecordEncoder, decode_record, event_time
from tap_mixpanel_parallel.http.errors import PartitionRejected, StreamCut

UTC_ENC = RecordEncoder(time_in_ms=False, zone=None, as_messages=False)


def test_properties_pass_through_unchanged():
    props = {
        "time": 1704067200,
        "distinct_id": "u-1",
        "$insert_id": "abc",
        "plan": {"tier": "pro", "seats": 3, "tags": ["a", "b"], "nested": {"x": None}},
        "note": "line one\nline two",
        "emoji": "héllo ☃",
        "price": 12.5,
        "big": 12345678901234567890,
        "flag": False,
    }
    line = json.dumps({"event": "Purchase", "properties": props}).encode()
    record = decode_record(UTC_ENC.encode(line, 1, "x"))
    assert record == {
        "event": "Purchase",
        "time": "2024-01-01T00:00:00+00:00",
        "distinct_id": "u-1",
        "insert_id": "abc",
        "properties": props,
    }


def test_message_lines_are_singer_records():
    enc = RecordEncoder(time_in_ms=False, zone=None, as_messages=True)
    line = b'{"event":"A","properties":{"time":1,"distinct_id":"d","$insert_id":"i"}}'
    out = enc.encode(line, 1, "2024-01-01T00:00:00+00:00")
    assert out.endswith(b"\n") and out.count(b"\n") == 1
    message = json.loads(out)
    assert message["type"] == "RECORD"
    assert message["stream"] == "events"
    assert message["time_extracted"] == "2024-01-01T00:00:00+00:00"
    assert message["record"]["time"] == "1970-01-01T00:00:01+00:00"


@given(
    st.dictionaries(
        st.text(max_size=10).filter(lambda k: k not in {"time", "distinct_id", "$insert_id"}),
        st.recursive(
            st.none()
            | st.booleans()
            | st.integers()
            | st.text()
            | st.floats(allow_nan=False, allow_infinity=False),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner),
            max_leaves=10,
        ),
        max_size=8,
    )
)
def test_any_json_properties_survive(extra):
    props = {"time": 1700000000, "distinct_id": "d", "$insert_id": "i", **extra}
    line = json.dumps({"event": "E", "properties": props}).encode()
    assert decode_record(UTC_ENC.encode(line, 1, "x"))["properties"] == props


def test_time_conversions():
    assert event_time(1704067200, in_ms=False, zone=None) == "2024-01-01T00:00:00+00:00"
    assert event_time(1704067200123, in_ms=True, zone=None) == "2024-01-01T00:00:00.123+00:00"
    # Pre-2023 projects: the number is local wall-clock time written as if it were UTC.
    la = ZoneInfo("America/Los_Angeles")
    assert event_time(1704067200, in_ms=False, zone=la) == "2024-01-01T08:00:00+00:00"
    assert event_time(1719792000, in_ms=False, zone=la) == "2024-07-01T07:00:00+00:00"


def test_missing_keys_become_empty_strings():
    line = b'{"event":"A","properties":{"time":5}}'
    record = decode_record(UTC_ENC.encode(line, 1, "x"))
    assert (record["distinct_id"], record["insert_id"]) == ("", "")


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (b"terminated early", StreamCut),
        (b"export terminated early", StreamCut),
        (b'{"event":"A","properties":{"time":1', StreamCut),
        (b'{"event":"A","properties":{"time":"soon"}}', PartitionRejected),
        (b'{"event":"A","properties":{"distinct_id":"d"}}', PartitionRejected),
        (b'{"event":"A","properties":{"time":true}}', PartitionRejected),
        (b'{"event":"A","properties":[1]}', PartitionRejected),
        (b"[1,2]", PartitionRejected),
    ],
)
def test_bad_lines_raise(line, error):
    with pytest.raises(error):
        UTC_ENC.encode(line, 7, "x")


def test_raw_properties_are_the_exact_bytes():
    line = b'{"event":"A","properties":{"time":1,"x":1.0,"y":"\\u00e9"}}'
    out = UTC_ENC.encode(line, 1, "x")
    assert b'"properties":{"time":1,"x":1.0,"y":"\\u00e9"}' in out
    assert msgspec.json.decode(out)["properties"]["y"] == "é"

"""Line to record: properties unchanged, time in UTC, cut or bad lines never become records."""

from __future__ import annotations

import json
from zoneinfo import ZoneInfo

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tap_mixpanel_parallel.export.records import (
    RecordEncoder,
    decode_record,
    event_time,
    synthetic_insert_id,
)
from tap_mixpanel_parallel.http.errors import PartitionRejected, StreamCut
from tap_mixpanel_parallel.run.text import REPLACEMENT, sanitize_line

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
        "device_id": None,
        "user_id": None,
        "insert_id": "abc",
        "properties": props,
    }


def test_device_id_and_user_id_are_columns_null_when_absent():
    props = {"time": 1, "distinct_id": "u-1", "$insert_id": "i", "$device_id": 77, "$user_id": "m"}
    line = json.dumps({"event": "A", "properties": props}).encode()
    record = decode_record(UTC_ENC.encode(line, 1, "x"))
    assert (record["device_id"], record["user_id"]) == ("77", "m")
    assert record["properties"] == props


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


def test_missing_keys_become_empty_strings_but_insert_id_is_synthetic():
    line = b'{"event":"A","properties":{"time":5}}'
    record = decode_record(UTC_ENC.encode(line, 1, "x"))
    assert record["distinct_id"] == ""
    assert record["insert_id"] == synthetic_insert_id(b'"A"', b'{"time":5}', 1)


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


# -- events without $insert_id -------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
events = st.builds(
    lambda name, props, second: {
        "event": name,
        "properties": {**props, "time": second, "distinct_id": "u"},
    },
    st.text(max_size=6),
    st.dictionaries(st.text(max_size=5).filter(lambda k: k != "$insert_id"), json_values),
    st.integers(1_700_000_000, 1_700_000_100),
)


def encode_all(lines: list[bytes]) -> list[str]:
    """insert_id of each line, encoded as one attempt at one partition does it."""
    seen: dict[str, int] = {}
    return [decode_record(UTC_ENC.encode(line, 1, "x", seen))["insert_id"] for line in lines]


@given(st.lists(events, max_size=12), st.randoms())
def test_synthetic_keys_are_unique_and_stable_across_reads(batch, rnd):
    lines = [json.dumps(e).encode() for e in batch]
    lines += [lines[i] for i in range(0, len(lines), 3)]  # byte-identical copies
    first_read = encode_all(lines)
    keys = [(json.loads(li)["event"], first_read[i]) for i, li in enumerate(lines)]
    assert len(set(keys)) == len(keys), "two events share a key"
    # A re-read (lookback, retry, resume) sees the day's events in any order: each distinct
    # line keeps its key, and its copies keep theirs as a set.
    order = list(range(len(lines)))
    rnd.shuffle(order)
    again = encode_all([lines[i] for i in order])
    by_line: dict[bytes, set[str]] = {}
    for i, key in zip(order, again, strict=True):
        by_line.setdefault(lines[i], set()).add(key)
    for i, line in enumerate(lines):
        assert first_read[i] in by_line[line]
    assert sorted(first_read) == sorted(again)


def test_synthetic_key_rule():
    one = synthetic_insert_id(b'"Signup"', b'{"time":1,"a":1}', 1)
    assert one.startswith("h:") and len(one) == 2 + 32
    assert synthetic_insert_id(b'"Signup"', b'{"time":1,"a":1}', 2) == one + ":2"
    assert synthetic_insert_id(b'"Signup"', b'{"time":1,"a":2}', 1) != one
    assert synthetic_insert_id(b'"Login"', b'{"time":1,"a":1}', 1) != one
    # Mixpanel's own $insert_id wins whenever it is there
    line = b'{"event":"A","properties":{"time":5,"$insert_id":"abc"}}'
    assert decode_record(UTC_ENC.encode(line, 1, "x"))["insert_id"] == "abc"


def test_a_retry_counts_copies_from_scratch():
    line = b'{"event":"A","properties":{"time":5}}'
    assert encode_all([line, line]) == encode_all([line, line])
    assert encode_all([line, line])[1].endswith(":2")


# -- NUL and invalid UTF-8 -----------------------------------------------------------------------

SANITIZING = RecordEncoder(time_in_ms=False, zone=None, as_messages=False, sanitize=True)
texts = st.lists(st.sampled_from(["a", "\x00", "é", "\\", '"', "u0000"]), max_size=6).map("".join)
nul_values = st.recursive(
    st.none() | st.integers() | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)


def strings_in(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *strings_in(v)]]
    if isinstance(value, list):
        return [s for v in value for s in strings_in(v)]
    return []


def replace_nul(value):
    if isinstance(value, str):
        return value.replace("\x00", REPLACEMENT)
    if isinstance(value, dict):
        return {replace_nul(k): replace_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [replace_nul(v) for v in value]
    return value


@given(texts, st.dictionaries(texts.filter(lambda k: k not in {"time"}), nul_values, max_size=4))
def test_sanitized_records_hold_no_nul_at_any_depth(name, props):
    line = json.dumps({"event": name, "properties": {**props, "time": 7}}).encode()
    record = decode_record(SANITIZING.encode(line, 1, "x"))
    assert not any("\x00" in s for s in strings_in(record))
    assert record["properties"] == replace_nul({**props, "time": 7})
    assert record["event"] == name.replace("\x00", REPLACEMENT)


@given(st.binary(max_size=40))
def test_sanitized_records_are_valid_utf8(junk):
    value = junk.replace(b'"', b"").replace(b"\\", b"")
    line = (
        b'{"event":"E","properties":{"time":7,"k":"' + value + b'","n":{"x":["' + value + b'"]}}}'
    )
    try:
        out = SANITIZING.encode(line, 1, "x")
    except StreamCut:  # control characters make the line invalid JSON either way
        return
    text = out.decode("utf-8")  # never raises
    assert json.loads(text)["properties"]["k"] == value.decode("utf-8", "replace")


def test_sanitize_is_off_by_default_and_leaves_clean_lines_alone():
    line = (
        b'{"event":"E\\u0000","properties":{"time":7,"a\\u0000":{"b":["\\u0000"]},'
        b'"bad":"\xff\xfe", "spaced" : 1.50}}'
    )
    record = UTC_ENC.encode(line, 1, "x")
    # off: properties are the bytes Mixpanel sent, NUL escapes and invalid bytes included
    assert (
        b'"properties":{"time":7,"a\\u0000":{"b":["\\u0000"]},"bad":"\xff\xfe", "spaced" : 1.50}'
        in record
    )
    clean = b'{"event":"E","properties":{"time":7,"note":"caf\xc3\xa9 \\\\u0000 is text"}}'
    assert sanitize_line(clean) == clean  # an escaped backslash before u0000 is no NUL
    fixed = decode_record(SANITIZING.encode(line, 1, "x"))
    assert fixed["event"] == "E" + REPLACEMENT
    assert fixed["properties"] == {
        "time": 7,
        "a" + REPLACEMENT: {"b": [REPLACEMENT]},
        "bad": REPLACEMENT * 2,
        "spaced": 1.5,
    }


def test_invalid_utf8_in_a_key_column_does_not_stop_the_export():
    line = b'{"event":"E\xff","properties":{"time":7,"distinct_id":"d\xfe"}}'
    record = UTC_ENC.encode(line, 1, "x")
    assert record.startswith(b'{"event":"E\xef\xbf\xbd","time"')
    assert b'"distinct_id":"d\xef\xbf\xbd"' in record
    assert record.endswith(b'"properties":{"time":7,"distinct_id":"d\xfe"}}\n')


@pytest.mark.parametrize("sanitize", [False, True])
@pytest.mark.parametrize(
    ("line", "columns"),
    [
        (
            b'{"event":"E\xff","properties":{"time":7,"distinct_id":"d","$insert_id":"i"}}',
            ("E" + REPLACEMENT, "d", "i"),
        ),
        (
            b'{"event":"E","properties":{"time":7,"distinct_id":"d\xfe","$insert_id":"i"}}',
            ("E", "d" + REPLACEMENT, "i"),
        ),
        (
            b'{"event":"E","properties":{"time":7,"distinct_id":"d","$insert_id":"i\xc3"}}',
            ("E", "d", "i" + REPLACEMENT),
        ),
    ],
)
def test_invalid_utf8_in_any_key_field_loads_whatever_msgspec_raises_for_it(
    line, columns, sanitize
):
    """msgspec up to 0.22 raises UnicodeDecodeError here, 0.23 a DecodeError: both load."""
    out = (SANITIZING if sanitize else UTC_ENC).encode(line, 1, "x")
    record = json.loads(out.decode("utf-8", "replace"))
    assert (record["event"], record["distinct_id"], record["insert_id"]) == columns
    sent = line.split(b'"properties":')[1][:-1]
    if sanitize:
        assert out.decode("utf-8")  # valid UTF-8 throughout
    else:
        assert out.endswith(b'"properties":' + sent + b"}\n")  # the bytes Mixpanel sent


def test_a_cut_line_with_invalid_utf8_is_still_a_cut_stream():
    with pytest.raises(StreamCut):
        UTC_ENC.encode(b'{"event":"E\xff","properties":{"time":7,"distinct_id":"d', 1, "x")

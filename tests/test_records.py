"""Line to record: properties unchanged, time in UTC, cut or bad lines never become records."""

from __future__ import annotations

import datetime as dt
import json
from zoneinfo import ZoneInfo

import msgspec
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tap_mixpanel_parallel.export.records import (
    OutOfRangeTime,
    RecordEncoder,
    event_time,
    synthetic_insert_id,
)
from tap_mixpanel_parallel.http.errors import PartitionRejected, StreamCut
from tap_mixpanel_parallel.run.text import (
    REPLACEMENT,
    decode_record,
    decode_text,
    is_utf8,
    sanitize_line,
)
from tests.helpers import machine_zone

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
    absent = {"time": 1, "distinct_id": "u-1", "$insert_id": "i"}
    line = json.dumps({"event": "A", "properties": absent}).encode()
    record = decode_record(UTC_ENC.encode(line, 1, "x"))
    assert (record["device_id"], record["user_id"]) == (None, None)


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


@pytest.mark.parametrize(
    ("line", "error", "message"),
    [
        (b"export terminated early", StreamCut, "Mixpanel ended the stream early"),
        (b'{"event":"A","properties":{"time":1', StreamCut, "line 7 is not valid JSON"),
        (b'{"event":"A","properties":{"time":"soon"}}', PartitionRejected, "line 7 is not a"),
        (b'{"event":"A","properties":{"time":[1]}}', PartitionRejected, "line 7 is not a"),
        (b'{"event":"A","properties":[1]}', PartitionRejected, "line 7 is not a Mixpanel"),
        (b'{"event":"A","properties":{}}', PartitionRejected, "line 7: event has no numeric"),
    ],
)
def test_a_bad_line_is_reported_by_its_number_and_a_wrong_time_is_never_skipped(
    line, error, message
):
    """Only a time no date-time can hold is skipped (OutOfRangeTime); a time of the wrong type
    rejects the partition, loudly, like any other malformed event."""
    with pytest.raises(error) as raised:
        UTC_ENC.encode(line, 7, "x")
    assert type(raised.value) is error
    assert str(raised.value).startswith(message)
    assert "line 7" in str(raised.value)


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


# The encoders below are built inside each test, not at import: a setting the constructor drops
# must fail a test (mutation testing swaps the constructor only once the tests are imported).

ZONES = [None, "Europe/Berlin", "America/Los_Angeles", "Asia/Kathmandu"]


@given(
    moment=st.datetimes(min_value=dt.datetime(1990, 1, 1), max_value=dt.datetime(2090, 1, 1)),
    in_ms=st.booleans(),
    zone_name=st.sampled_from(ZONES),
)
def test_the_record_time_follows_the_encoders_unit_and_project_zone(moment, in_ms, zone_name):
    """A UTC project sends Unix time; a local-time one sends its wall clock written as UTC."""
    zone = None if zone_name is None else ZoneInfo(zone_name)
    moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000 if in_ms else 0)
    as_if_utc = moment.replace(tzinfo=dt.timezone.utc)
    seconds = as_if_utc.timestamp()
    number = round(seconds * 1000) if in_ms else int(seconds)
    encoder = RecordEncoder(time_in_ms=in_ms, zone=zone, as_messages=False)
    line = json.dumps({"event": "E", "properties": {"time": number, "$insert_id": "i"}})
    with machine_zone("Asia/Kathmandu"):  # the machine's own zone must not leak in
        record = decode_record(encoder.encode(line.encode(), 1, "x"))
    expected = as_if_utc if zone is None else moment.replace(tzinfo=zone)
    assert dt.datetime.fromisoformat(record["time"]) == expected
    assert record["time"].endswith("+00:00")


def test_sanitizing_is_off_unless_asked_for_and_on_when_asked():
    line = b'{"event":"E\\u0000","properties":{"time":7,"k":"v\\u0000"}}'
    plain = RecordEncoder(time_in_ms=False, zone=None, as_messages=False)
    assert plain.encode(line, 1, "x").endswith(b'"properties":{"time":7,"k":"v\\u0000"}}\n')
    cleaning = RecordEncoder(time_in_ms=False, zone=None, as_messages=False, sanitize=True)
    record = decode_record(cleaning.encode(line, 1, "x"))
    assert (record["event"], record["properties"]["k"]) == ("E" + REPLACEMENT, "v" + REPLACEMENT)


@given(
    st.integers(-(10**15), 10**15)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.booleans()
    | st.text(max_size=8)
)
def test_key_columns_are_text_whatever_json_type_mixpanel_sent(value):
    keys = {"distinct_id": value, "$insert_id": value, "$device_id": value, "$user_id": value}
    line = json.dumps({"event": value, "properties": {"time": 7, **keys}})
    record = decode_record(UTC_ENC.encode(line.encode(), 1, "x"))
    for column in ("event", "distinct_id", "device_id", "user_id"):
        assert isinstance(record[column], str)
        assert record[column] == (value if isinstance(value, str) else str(value))
    assert isinstance(record["insert_id"], str)


@pytest.mark.parametrize("in_ms", [False, True])
@pytest.mark.parametrize("number", ["1e20", "-1e20", "100000000000000000000000000000", "1e999"])
def test_an_out_of_range_time_names_its_unit_and_the_likely_mix_up(in_ms, number):
    encoder = RecordEncoder(time_in_ms=in_ms, zone=None, as_messages=False)
    line = b'{"event":"E","properties":{"time":' + number.encode() + b"}}"
    with pytest.raises(OutOfRangeTime) as raised:
        encoder.encode(line, 12, "x")
    message = str(raised.value)
    unit = "milliseconds" if in_ms else "seconds"
    assert message.startswith(f"line 12: properties.time is out of range as {unit} since 1970")
    hint = "" if in_ms else "; milliseconds sent as seconds?"
    assert message.endswith(f"(not between years 1 and 9999{hint})")


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
        max_leaves=8,
    )
)
def test_a_line_with_nothing_to_clean_comes_back_as_the_same_object(value):
    """Nearly every line: no copy, whatever its characters (a NUL itself is what gets cleaned)."""
    text = json.dumps(value, ensure_ascii=False)
    if "\\u0000" in text or any("\ud800" <= c <= "\udfff" for c in text):
        return  # a NUL escape or a lone surrogate (invalid UTF-8): lines that get cleaned
    line = text.encode("utf-8")
    assert sanitize_line(line) is line


@given(st.binary(max_size=30))
@example(b"\xed\xa0\x80 a surrogate, \xc0\x80 an overlong NUL, \xef\xbf\xbd a real U+FFFD")
def test_decode_text_makes_invalid_utf8_in_a_string_u_fffd_from_any_buffer(junk):
    """Bytes msgspec refuses as text are decoded as Python's ``replace`` handler reads them."""
    value = bytes(b for b in junk if b >= 0x20 and b not in b'"\\')  # keep the JSON valid
    line = b'{"k":"' + value + b'"}'
    expected = {"k": value.decode("utf-8", "replace")}
    for data in (line, memoryview(line), bytearray(line)):
        assert decode_text(msgspec.json.decode, data) == expected
    assert is_utf8(line) == (expected["k"].encode() == value)


@pytest.mark.parametrize(
    "body", [b'{"k":"v', b'{"k":"\xff', b"<html>busy</html>", b'{"k":"\xff"}}', b""]
)
def test_decode_text_still_raises_for_a_cut_or_foreign_body(body):
    """Invalid UTF-8 in a body that is no JSON does not turn it into a value."""
    with pytest.raises(msgspec.DecodeError):
        decode_text(msgspec.json.decode, memoryview(body))

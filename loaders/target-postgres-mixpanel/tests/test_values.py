"""What COPY receives for one value: as target-postgres would send it, minus re-serialising JSON."""

from __future__ import annotations

from decimal import Decimal

import pytest

from target_postgres_mixpanel.target import copy_value, sanitize_like_target_postgres


def test_json_columns_pass_the_files_text_through():
    raw = b'{"a": [1, 2.50, {"b": null}], "c": "\\u00e9"}'
    assert copy_value(raw, json_column=True, sanitize=True) == raw.decode()


def test_json_null_and_sql_null():
    assert copy_value(b"null", json_column=True, sanitize=False) is None
    assert copy_value(b"null", json_column=False, sanitize=False) is None


def test_a_nul_in_a_json_objects_first_level_is_replaced_as_target_postgres_does():
    raw = b'{"a": "x\\u0000y", "deep": {"b": "p\\u0000q"}, "n": 1.5}'
    text = copy_value(raw, json_column=True, sanitize=True)
    assert "x\ufffdy" in text
    assert "p\\u0000q" in text  # deeper: kept, in target-postgres too
    assert '"n":1.5' in text  # the number as written, not a string
    assert copy_value(raw, json_column=True, sanitize=False) == raw.decode()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'"a\\u0000b"', "a\ufffdb"),
        (b'"tab\\there"', "tab\there"),
        (b"12.345678901234567890123", Decimal("12.345678901234567890123")),
        (b"7", 7),
        (b"true", True),
        (b'["x\\u0000", "y"]', ["x\ufffd", "y"]),
    ],
)
def test_other_columns_get_the_decoded_value_sanitized(raw, expected):
    assert copy_value(raw, json_column=False, sanitize=True) == expected


def test_without_sanitize_a_nul_stays():
    assert copy_value(b'"a\\u0000b"', json_column=False, sanitize=False) == "a\x00b"


def test_sanitize_like_target_postgres_touches_one_level_only():
    assert sanitize_like_target_postgres({"a": "\x00", "b": {"c": "\x00"}, "n": 1}) == {
        "a": "\ufffd",
        "b": {"c": "\x00"},
        "n": 1,
    }
    assert sanitize_like_target_postgres(["\x00", ["\x00"]]) == ["\ufffd", ["\x00"]]
    assert sanitize_like_target_postgres(5) == 5

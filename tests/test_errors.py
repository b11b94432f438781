"""HTTP statuses become errors that say what to check."""

from __future__ import annotations

import pytest

from tap_mixpanel_parallel.http.errors import (
    PartitionRejected,
    RateLimited,
    RunFatal,
    TransientError,
    error_for_status,
    parse_retry_after,
    preview,
    redact,
)


@pytest.mark.parametrize(
    ("status", "body", "kind", "words"),
    [
        (401, "Unauthorized", RunFatal, "service_account_secret"),
        (402, "", RunFatal, "plan"),
        (403, "nope", RunFatal, "project_id 7"),
        (429, "slow down", RateLimited, "429"),
        (500, "oops", TransientError, "500"),
        (503, "", TransientError, "503"),
        (400, "to_date cannot be later than today", PartitionRejected, "project_timezone"),
        (400, "bad where", PartitionRejected, "where"),
        (404, "", PartitionRejected, "404"),
    ],
)
def test_status_mapping(status, body, kind, words):
    error = error_for_status(status, body, None, 7)
    assert type(error) is kind
    assert words in error.message
    assert error.fatal == (kind is RunFatal)
    assert error.retryable == issubclass(kind, TransientError)


def test_bodies_are_shown_short_and_on_one_line():
    error = error_for_status(500, "line1\nline2 " + "x" * 1000, None, 1)
    assert "line1 line2" in error.message
    assert "\n" not in error.message
    assert len(preview("y" * 1000)) < 310


def test_retry_after():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None
    assert parse_retry_after("-2") == 0.0
    assert error_for_status(429, "", 4.0, 1).retry_after == 4.0


def test_redact():
    assert redact("key=abc123 and abc123", ["abc123", ""]) == "key=*** and ***"

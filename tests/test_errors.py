"""HTTP statuses become errors that say what to check."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tap_mixpanel_parallel.http.errors import (
    PartitionRejected,
    RateLimited,
    RunFatal,
    TransientError,
    error_for_status,
    mixpanel_message,
    parse_retry_after,
    preview,
    redact,
    redact_prefix,
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


# -- Mixpanel's error JSON, credential 400s, redaction before the cut ----------------------------

ECHOED = "/api/2.0/export?from_date=2024-01-01&to_date=2024-01-07&project_id=1"


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (json.dumps({"request": ECHOED, "error": "Timeout Error."}), "Timeout Error."),
        ('{"request": "' + ECHOED + '", "error": "cut here', '{"request": "'),
        (
            '{"request": "x", "error": "to_date cannot be \\"later\\""} ',
            'to_date cannot be "later"',
        ),
        ("plain text from a proxy", "plain text from a proxy"),
        (json.dumps(["not", "an", "object"]), '["not", "an", "object"]'),
    ],
)
def test_mixpanel_message_is_the_error_field_when_there_is_one(body, said):
    assert mixpanel_message(body).startswith(said)


@pytest.mark.parametrize("message", ["Timeout Error.", "Unable to authenticate request", "nope"])
def test_the_echoed_request_never_earns_the_timezone_hint(message):
    body = json.dumps({"request": ECHOED, "error": message})
    error = error_for_status(400, body, None, 1)
    assert "project_timezone" not in error.message
    assert ECHOED not in error.message
    assert f"Mixpanel said: {message}" in error.message


def test_a_date_message_earns_the_timezone_hint():
    body = json.dumps({"request": ECHOED, "error": "to_date cannot be later than today"})
    assert "project_timezone" in error_for_status(400, body, None, 1).message


@pytest.mark.parametrize(
    "message", ["Unable to authenticate request", "unable to authenticate request: expired"]
)
def test_a_credential_400_is_fatal_and_says_what_to_check(message):
    error = error_for_status(400, json.dumps({"request": ECHOED, "error": message}), None, 1)
    assert type(error) is RunFatal
    assert "check service_account_username, service_account_secret" in error.message


def test_a_secret_spelled_with_json_escapes_is_still_redacted():
    body = '{"error": "bad token \\u0073ecret-42"}'
    error = error_for_status(401, body, None, 1, ("secret-42",))
    assert "secret-42" not in error.message


SECRET_ALPHABET = "QXZJKW"


@given(
    secret=st.text(SECRET_ALPHABET, min_size=6, max_size=40),
    limit=st.integers(1, 120),
    shift=st.integers(-45, 45),
    filler=st.text("ab \n", max_size=200),
)
def test_redact_prefix_never_leaves_part_of_a_secret(secret, limit, shift, filler):
    start = max(0, limit + shift)
    text = (filler * 3)[:start].ljust(start, "a") + secret + filler
    raw = text.encode()[: limit + len(secret)]  # what the client reads: the cut plus a margin
    shown = redact_prefix(raw, [secret, "Basic " + secret], limit)
    assert len(shown) <= limit + 3
    for size in range(4, len(secret) + 1):
        assert secret[:size].encode() not in shown

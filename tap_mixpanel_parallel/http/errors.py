"""What can go wrong talking to Mixpanel, sorted by what the runner should do about it.

Retryable errors are retried with backoff; a rejected partition fails without retries (it
would fail the same way again); a fatal error stops the whole run, because no partition can
succeed with those credentials or that plan.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

BODY_PREVIEW_CHARS = 300
CHECK_CREDENTIALS = (
    "check service_account_username, service_account_secret and project_id (or api_secret)"
)
# Mixpanel's error JSON echoes the request ({"request": "/api/2.0/export?...&to_date=...",
# "error": "..."}); only its "error" text says what went wrong. A body cut at the read limit is
# no longer JSON, but its "error" field can still be found.
_ERROR_FIELD = re.compile(r'"error"\s*:\s*"((?:[^"\\]|\\.)*)"')
_DATE_WORDS = re.compile(r"\b(?:to_date|from_date|today)\b", re.IGNORECASE)
_CREDENTIAL_WORDS = re.compile(
    r"unable to authenticate|invalid (?:api )?(?:secret|credentials)", re.IGNORECASE
)


class ExportError(Exception):
    """Base of every error the tap reports about an export request."""

    retryable = False
    fatal = False
    #: The range may be too large for Mixpanel to serve whole: ask again for its halves.
    splittable = False

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class TransientError(ExportError):
    """Worth another try: 5xx, 429, resets, timeouts, a cut or corrupt stream."""

    retryable = True


class RateLimited(TransientError):
    """Mixpanel's 429: every worker should slow down, not just the one that got it."""


class StreamCut(TransientError):
    """The body ended before the partition was complete; none of it may be emitted."""

    splittable = True


class TimedOut(TransientError):
    """``request_timeout`` passed: a range this large may be more than Mixpanel serves in time."""

    splittable = True


class PartitionRejected(ExportError):
    """Mixpanel (or the data) says no for this partition; retrying cannot help."""


class RunFatal(ExportError):
    """No partition can succeed (credentials, plan, permission): stop the run."""

    fatal = True


def preview(body: str) -> str:
    """One line of an error body, short enough for a log line or the state."""
    text = " ".join(body.split())
    if len(text) > BODY_PREVIEW_CHARS:
        return text[:BODY_PREVIEW_CHARS] + "..."
    return text


def mixpanel_message(body: str) -> str:
    """What Mixpanel said: the ``error`` field of its JSON error body, else the body itself."""
    try:
        parsed = json.loads(body)
    except ValueError:
        match = _ERROR_FIELD.search(body)
        if match is None:
            return body
        try:
            text = json.loads(f'"{match[1]}"')
        except ValueError:
            return match[1]
        return text if isinstance(text, str) else body
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
        return str(parsed["error"])
    return body


def error_for_status(
    status: int,
    body: str,
    retry_after: float | None,
    project_id: int | None,
    secrets: Iterable[str] = (),
    *,
    api: str = "export",
) -> ExportError:
    """Map a non-200 answer of ``api`` (export, Query, App) to an error that says what to check.

    Only Mixpanel's own message is judged and quoted, never the request it echoes. ``body``
    should come redacted (see :func:`redact_prefix`); the message is redacted once more, as
    JSON escapes may have spelled a secret differently.
    """
    message = redact(mixpanel_message(body), secrets)
    said = f" Mixpanel said: {preview(message)}" if message.strip() else ""
    if status == 401:
        return RunFatal(f"HTTP 401 Unauthorized: {CHECK_CREDENTIALS}.{said}")
    if status == 400 and _CREDENTIAL_WORDS.search(message):
        # Expired or wrong credentials come back as a 400 too; no partition can succeed.
        return RunFatal(f"HTTP 400 (credentials rejected): {CHECK_CREDENTIALS}.{said}")
    if status == 402:
        return RunFatal(
            f"HTTP 402 Payment Required: this Mixpanel plan does not include the {api} API.{said}"
        )
    if status == 403:
        return RunFatal(
            f"HTTP 403 Forbidden: the credentials may not use the {api} API of project_id"
            f" {project_id};"
            f" give the service account access to that project.{said}"
        )
    if status == 429:
        return RateLimited(f"HTTP 429 Too Many Requests.{said}", retry_after=retry_after)
    if status == 400:
        hint = (
            " to_date is judged in the project's timezone: check project_timezone and end_date."
            if _DATE_WORDS.search(message)
            else " Check event_names and where."
            if api == "export"
            else ""
        )
        return PartitionRejected(f"HTTP 400 Bad Request:{hint}{said}")
    if status >= 500:
        return TransientError(f"HTTP {status} from Mixpanel.{said}")
    return PartitionRejected(f"HTTP {status} from Mixpanel.{said}")


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header; HTTP dates are rare here and read as absent."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(0.0, seconds)


def redact(text: str, secrets: Iterable[str]) -> str:
    """Blank out every secret, so no log line, state entry or traceback can carry one."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def redact_prefix(raw: bytes, secrets: Iterable[str], limit: int) -> bytes:
    """The first ``limit`` bytes of ``raw`` with every secret in them blanked out.

    A secret that starts before the cut is blanked whole, even where it runs past it, so no
    half of one survives the cut. ``raw`` should therefore hold ``limit`` plus the longest
    secret's length, when the body is that long.
    """
    spans: list[tuple[int, int]] = []
    for secret in secrets:
        needle = secret.encode()
        if not needle:
            continue
        start = raw.find(needle)
        while 0 <= start < limit:
            spans.append((start, start + len(needle)))
            start = raw.find(needle, start + 1)
    out = bytearray()
    position = 0
    for start, end in sorted(spans):
        if start >= position:
            out += raw[position:start] + b"***"
        position = max(position, end)
    if position < limit:
        out += raw[position:limit]
    return bytes(out)

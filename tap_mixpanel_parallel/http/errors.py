"""What can go wrong talking to Mixpanel, sorted by what the runner should do about it.

Retryable errors are retried with backoff; a rejected partition fails without retries (it
would fail the same way again); a fatal error stops the whole run, because no partition can
succeed with those credentials or that plan.
"""

from __future__ import annotations

from collections.abc import Iterable

BODY_PREVIEW_CHARS = 300


class ExportError(Exception):
    """Base of every error the tap reports about an export request."""

    retryable = False
    fatal = False

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


def error_for_status(
    status: int, body: str, retry_after: float | None, project_id: int | None
) -> ExportError:
    """Map a non-200 export answer to an error that says what to check."""
    said = f" Mixpanel said: {preview(body)}" if body.strip() else ""
    if status == 401:
        return RunFatal(
            "HTTP 401 Unauthorized: check service_account_username, service_account_secret"
            f" and project_id (or api_secret).{said}"
        )
    if status == 402:
        return RunFatal(
            f"HTTP 402 Payment Required: this Mixpanel plan does not include the export API.{said}"
        )
    if status == 403:
        return RunFatal(
            f"HTTP 403 Forbidden: the credentials may not export project_id {project_id};"
            f" give the service account access to that project.{said}"
        )
    if status == 429:
        return RateLimited(f"HTTP 429 Too Many Requests.{said}", retry_after=retry_after)
    if status == 400:
        hint = (
            " to_date is judged in the project's timezone: check project_timezone and end_date."
            if "to_date" in body
            else " Check event_names and where."
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

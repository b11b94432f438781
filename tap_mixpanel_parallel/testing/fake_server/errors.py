"""Error responses as Mixpanel words them, shared by every endpoint."""

from __future__ import annotations

import base64
import binascii
import json
from http import HTTPStatus

from .faults import Faults
from .wire import Wire

UNAUTHORIZED = "Unauthorized, invalid username or secret"
STATUS_TEXT = {
    400: "Bad request",
    401: UNAUTHORIZED,
    402: "Payment required: your plan does not include API access",
    403: "Forbidden: you do not have permission to export this project's data",
    404: "Not found",
    429: "Query rate limit exceeded, please retry later",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service temporarily unavailable",
}


class HttpError(Exception):
    """A request refused before any byte of the response: its status and plain-text body."""

    def __init__(self, status: int, message: str, json_body: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        #: Sent as Mixpanel's JSON error body (``{"error": ..., "status": "error"}``).
        self.json_body = json_body


def format_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def echo(authorization: str | None, padding: int = 0) -> str:
    """What a careless gateway puts in a 401 body: the credentials it received, every form.

    ``padding`` spaces go first, so a test can place the credentials where a client cuts.
    """
    header = authorization or ""
    token = header[6:].strip() if header.startswith("Basic ") else header
    try:
        decoded = base64.b64decode(token, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        decoded = ""
    pad = " " * padding
    return f"{pad} (received Authorization: {header}; token {token}; credentials {decoded})"


def send_error(wire: Wire, status: int, faults: Faults, request_path: str = "") -> None:
    """An injected error status, with the body Mixpanel sends for it.

    With ``faults.error_message`` the body is Mixpanel's error JSON, which echoes the request
    (its dates included) beside the message.
    """
    headers = {}
    if status == 429 and faults.retry_after is not None:
        headers["Retry-After"] = format_seconds(faults.retry_after)
    if faults.error_message is not None:
        body = json.dumps({"request": request_path, "error": faults.error_message})
        wire.simple(status, body, content_type="application/json", headers=headers)
        return
    try:
        text = STATUS_TEXT.get(status) or HTTPStatus(status).phrase
    except ValueError:
        text = f"HTTP {status}"
    if status != 429:
        wire.simple(status, text)
        return
    # Rate-limit errors come as JSON, the rest as plain text: a tap must cope with both.
    body = json.dumps({"error": text, "status": "error"})
    wire.simple(429, body, content_type="application/json", headers=headers)

"""One request as an endpoint sees it, what the server logs of it, and parameter parsing."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from .errors import HttpError
from .faults import Faults
from .wire import Handler, Wire

_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class RequestRecord:
    """What a test needs to assert on the client's behaviour, not just its output.

    ``from_date``/``to_date`` are the raw parameters (``None`` if absent), ``bytes_sent`` counts
    body bytes as they went on the wire (compressed if gzip, without chunk framing), ``started``
    and ``ended`` are ``time.monotonic()`` values, and ``fault`` names the injected fault, or
    ``"client_disconnected"`` when the client hung up on a healthy response.
    """

    path: str
    params: dict[str, str]
    from_date: str | None
    to_date: str | None
    status: int
    started: float
    ended: float
    fault: str | None
    bytes_sent: int
    headers: dict[str, str]


@dataclass
class Outcome:
    """Filled in as the request progresses so the log is right even when the client vanishes."""

    fault: str | None = None
    from_date: str | None = None
    to_date: str | None = None


@dataclass
class Request:
    """``faults`` is the server's ``Faults`` when the request arrived: one request, one set."""

    handler: Handler
    path: str
    params: dict[str, str]
    wire: Wire
    faults: Faults
    in_flight: int
    outcome: Outcome

    def header(self, name: str) -> str | None:
        return self.handler.headers.get(name)

    @property
    def accepts_gzip(self) -> bool:
        return "gzip" in (self.header("Accept-Encoding") or "").lower()


def parse_date(params: dict[str, str], name: str) -> date:
    """A required ``YYYY-MM-DD`` parameter, refused with Mixpanel's 400 otherwise."""
    text = params.get(name)
    if text is None:
        raise HttpError(400, f"{name} is a required parameter")
    try:
        if not _DATE_RE.fullmatch(text):
            raise ValueError(text)
        return date.fromisoformat(text)
    except ValueError:
        raise HttpError(400, f"{name} must be a date formatted YYYY-MM-DD") from None

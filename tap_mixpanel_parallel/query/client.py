"""Requests to the Query, App and legacy ``/api/2.0`` APIs, each answered in one JSON body
(worker threads).

Bodies are small by construction (one engage page, one list, one funnel window), so each is
read whole, with the same wall-clock deadline (:class:`Watchdog`), stop check and error mapping
as the export: a server that trickles bytes cannot hold a worker past ``request_timeout``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

import requests
import urllib3

from tap_mixpanel_parallel.http.errors import ExportError, PartitionRejected, TransientError
from tap_mixpanel_parallel.http.session import (
    CONNECT_TIMEOUT_SECONDS,
    Watchdog,
    status_error,
    timed_out,
    transport_error,
)
from tap_mixpanel_parallel.settings import Settings

CHUNK_BYTES = 256 * 1024
#: What the Query and App APIs answer with.
QUERY_ACCEPT = "application/json"
#: Mixpanel's answer when the project's plan does not include an API.
PLAN_LACKS_API = 402
#: Statuses with which Mixpanel is taken to say a paging session is gone (undocumented).
SESSION_GONE_STATUSES = (400, 404, 410)


class SessionExpired(ExportError):
    """A later page of an engage session was refused because the session is gone.

    Not retryable as a page: the whole query restarts with a new session.
    """


def query_url(settings: Settings, path: str) -> str:
    """A Query API endpoint, e.g. ``engage`` or ``cohorts/list``."""
    return f"{settings.query_host}/api/query/{path}"


def app_url(settings: Settings, path: str) -> str:
    """An App API endpoint (service accounts only)."""
    return f"{settings.query_host}/api/app/{path}"


def legacy_url(settings: Settings, path: str) -> str:
    """A legacy ``/api/2.0`` endpoint, for what the project secret still reaches."""
    return f"{settings.query_host}/api/2.0/{path}"


def project_params(settings: Settings) -> dict[str, str]:
    """``project_id`` in the query string, which the Query API wants with a service account."""
    return {} if settings.project_id is None else {"project_id": str(settings.project_id)}


def fetch_body(
    session: requests.Session,
    settings: Settings,
    url: str,
    stop: threading.Event,
    *,
    form: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
    api: str = "Query",
    in_session: bool = False,
) -> bytes:
    """The whole body of a GET (no ``form``) or a form-encoded POST.

    ``in_session`` marks a later page of an engage session: a refusal that speaks of the
    session raises :class:`SessionExpired` instead of failing the page.
    """
    timeout = settings.request_timeout
    query = {**project_params(settings), **(params or {})}
    with Watchdog(timeout) as watchdog:
        try:
            response = session.request(
                "GET" if form is None else "POST",
                url,
                params=query,
                data=None if form is None else dict(form),
                stream=True,
                timeout=(min(CONNECT_TIMEOUT_SECONDS, timeout), timeout),
            )
        except requests.RequestException as exc:
            if watchdog.fired.is_set():
                raise timed_out(timeout) from None
            raise transport_error(exc, settings.secrets) from None
        with response:
            if response.status_code != 200:
                error = status_error(response, settings.secrets, settings.project_id, api=api)
                if watchdog.fired.is_set():
                    raise timed_out(timeout)
                if (
                    in_session
                    and not error.fatal
                    and response.status_code in SESSION_GONE_STATUSES
                    and "session" in error.message.lower()
                ):
                    raise SessionExpired(error.message)
                if response.status_code == PLAN_LACKS_API:
                    # A plan may include the export but not this API: fail this stream only.
                    raise PartitionRejected(error.message)
                raise error
            chunks: list[bytes] = []
            try:
                for chunk in response.iter_content(chunk_size=CHUNK_BYTES):
                    if stop.is_set():
                        msg = "stopping: request abandoned"
                        raise TransientError(msg)
                    chunks.append(chunk)
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                if watchdog.fired.is_set():
                    raise timed_out(timeout) from None
                raise transport_error(exc, settings.secrets) from None
            if watchdog.fired.is_set():
                raise timed_out(timeout)
    return b"".join(chunks)

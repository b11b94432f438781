"""One ``requests.Session`` per worker thread, and the errors a request can end in.

Sessions are not safe to share between threads, so each worker gets its own from a
:class:`SessionPool`. Credentials travel only in the ``Authorization`` header, never in the
URL, so no URL in a log line or an exception can leak them; every error text made here is
redacted before anyone sees it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import requests

from tap_mixpanel_parallel.http.errors import (
    ExportError,
    TransientError,
    error_for_status,
    parse_retry_after,
    redact,
)

ERROR_BODY_BYTES = 4096
CONNECT_TIMEOUT_SECONDS = 30.0


def new_session(authorization: str, user_agent: str, accept: str) -> requests.Session:
    """A session that sends the credentials and asks for gzip."""
    session = requests.Session()
    session.headers.update(
        {
            "Authorization": authorization,
            "Accept": accept,
            "Accept-Encoding": "gzip",
            "User-Agent": user_agent,
        }
    )
    return session


def status_error(
    response: requests.Response, secrets: Sequence[str], project_id: int | None
) -> ExportError:
    """The error for a non-200 answer, quoting (redacted) what Mixpanel said."""
    try:
        body = response.raw.read(ERROR_BODY_BYTES, decode_content=True) or b""
    except Exception:
        body = b""
    text = redact(body.decode("utf-8", "replace"), secrets)
    return error_for_status(
        response.status_code,
        text,
        parse_retry_after(response.headers.get("Retry-After")),
        project_id,
    )


def transport_error(exc: requests.RequestException, secrets: Sequence[str]) -> TransientError:
    """A reset, timeout or broken body: worth another try."""
    kind = type(exc).__name__
    detail = redact(str(exc), secrets)
    return TransientError(f"{kind}: {detail}")


class SessionPool:
    """Hands each worker thread a session of its own; closes them all at the end."""

    def __init__(self, authorization: str, user_agent: str, accept: str) -> None:
        self._args = (authorization, user_agent, accept)
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

    def get(self) -> requests.Session:
        """This thread's session."""
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = new_session(*self._args)
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        """Release pooled connections."""
        with self._lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()

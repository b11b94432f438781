"""One ``requests.Session`` per worker thread, and the errors a request can end in.

Sessions are not safe to share between threads, so each worker gets its own from a
:class:`SessionPool`. Credentials travel only in the ``Authorization`` header, never in the
URL, so no URL in a log line or an exception can leak them; every error text made here is
redacted before anyone sees it.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections.abc import Sequence

import requests

from tap_mixpanel_parallel.http.errors import (
    ExportError,
    TransientError,
    error_for_status,
    parse_retry_after,
    preview,
    redact,
    redact_prefix,
)

ERROR_BODY_BYTES = 4096
CONNECT_TIMEOUT_SECONDS = 30.0
# Transport errors may quote what they read (urllib3's InvalidChunkLength shows the bytes it
# got instead of a chunk size): those bytes can be event content, so they are never shown.
_BYTES_LITERAL = re.compile(r"(?<!\w)b'(?:[^'\\]|\\.)*'" + r'|(?<!\w)b"(?:[^"\\]|\\.)*"')


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
    # Read past the part that may be shown by the longest secret, so a secret straddling the
    # cut is still seen whole by the redaction, which runs before anything is cut.
    margin = max((len(secret.encode()) for secret in secrets), default=0)
    try:
        body = response.raw.read(ERROR_BODY_BYTES + margin, decode_content=True) or b""
    except Exception:
        body = b""
    shown = redact_prefix(body, secrets, ERROR_BODY_BYTES).decode("utf-8", "replace")
    return error_for_status(
        response.status_code,
        redact(shown, secrets),
        parse_retry_after(response.headers.get("Retry-After")),
        project_id,
        secrets,
    )


def transport_error(exc: BaseException, secrets: Sequence[str]) -> TransientError:
    """A reset, timeout or broken body: worth another try."""
    kind = type(exc).__name__
    detail = _BYTES_LITERAL.sub("b'...'", redact(str(exc), secrets))
    return TransientError(f"{kind}: {preview(detail)}")


class Watchdog:
    """Holds a request to a wall-clock deadline that no trickle of bytes can push back.

    Socket timeouts only bound the wait for the next byte, so a server sending one byte a
    second keeps a request alive for ever. At the deadline a timer thread shuts the response's
    socket down: the blocked read returns at once and the reader, seeing :attr:`fired`, reports
    a timeout. The timer runs from before the request is sent until the body is read; until
    the response headers arrive there is no socket to shut down, and that wait is bounded by
    the read timeout (``request_timeout`` too) instead.
    """

    def __init__(self, seconds: float) -> None:
        self.fired = threading.Event()
        self._lock = threading.Lock()
        self._response: requests.Response | None = None
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def __enter__(self) -> Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()

    def watch(self, response: requests.Response) -> None:
        """From now on the deadline closes this response's connection."""
        with self._lock:
            self._response = response
        if self.fired.is_set():
            _shut_down(response)

    def _fire(self) -> None:
        self.fired.set()
        with self._lock:
            response = self._response
        if response is not None:
            _shut_down(response)


def _shut_down(response: requests.Response) -> None:
    """Wake any thread blocked reading this response: its socket reads end of stream."""
    sock = getattr(getattr(response.raw, "connection", None), "sock", None)
    if isinstance(sock, socket.socket):
        # The plain socket's shutdown, also for TLS: SSLSocket.shutdown would drop the TLS
        # state under the reading thread's feet; this only ends the stream beneath it.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


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

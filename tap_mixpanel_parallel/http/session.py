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
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from tap_mixpanel_parallel.compat import override
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
    adapter = _WatchedAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def status_error(
    response: requests.Response,
    secrets: Sequence[str],
    project_id: int | None,
    *,
    api: str = "export",
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
        api=api,
    )


def timed_out(timeout: float) -> TransientError:
    """The error of a request its :class:`Watchdog` ended."""
    return TransientError(f"request_timeout of {timeout:g}s passed (read timed out)")


def transport_error(exc: BaseException, secrets: Sequence[str]) -> TransientError:
    """A reset, timeout or broken body: worth another try."""
    kind = type(exc).__name__
    detail = _BYTES_LITERAL.sub("b'...'", redact(str(exc), secrets))
    return TransientError(f"{kind}: {preview(detail)}")


class Watchdog:
    """Holds a request to a wall-clock deadline that no trickle of bytes can push back.

    Socket timeouts only bound the wait for the next byte, so a server sending one byte a
    second (of its headers or of its body) keeps a request alive for ever. While a watchdog is
    entered, the sessions of :func:`new_session` hand it the socket of each request this thread
    sends; at the deadline a timer thread shuts that socket down: the blocked read returns at
    once and the reader, seeing :attr:`fired`, reports a timeout.
    """

    def __init__(self, seconds: float) -> None:
        self.fired = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def __enter__(self) -> Watchdog:
        _watching.dog = self
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()
        _watching.dog = None

    def watch(self, sock: socket.socket | None) -> None:
        """From now on the deadline ends reads on ``sock``."""
        if not isinstance(sock, socket.socket):
            return
        with self._lock:
            self._sockets.append(sock)
        if self.fired.is_set():
            _shut_down(sock)

    def _fire(self) -> None:
        self.fired.set()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            _shut_down(sock)


#: The watchdog of the request this thread has in flight, if any.
_watching = threading.local()


def _shut_down(sock: socket.socket) -> None:
    """Wake any thread blocked reading ``sock``: its reads end of stream."""
    # The plain socket's shutdown, also for TLS: SSLSocket.shutdown would drop the TLS state
    # under the reading thread's feet; this only ends the stream beneath it.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _hand_to_watchdog(connection: HTTPConnection) -> None:
    dog: Watchdog | None = getattr(_watching, "dog", None)
    if dog is not None:
        dog.watch(connection.sock)


class _WatchedHTTPConnection(HTTPConnection):
    """Hands its socket to this thread's watchdog once the request is sent (headers unread)."""

    @override
    def request(self, *args: Any, **kwargs: Any) -> None:
        super().request(*args, **kwargs)
        _hand_to_watchdog(self)


class _WatchedHTTPSConnection(HTTPSConnection):
    """The same for HTTPS."""

    @override
    def request(self, *args: Any, **kwargs: Any) -> None:
        super().request(*args, **kwargs)
        _hand_to_watchdog(self)


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _WatchedAdapter(HTTPAdapter):
    """requests' adapter, its connections known to the watchdog (urllib3's own extension point:
    a pool manager's ``pool_classes_by_scheme``)."""

    @override
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _WatchedHTTPPool,
            "https": _WatchedHTTPSPool,
        }


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

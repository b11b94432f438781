"""``FakeMixpanel``: lifecycle, dataset state, authentication, and routing to the endpoints.

Adding an endpoint: a module with ``handle(app, request)`` (see ``export.handle``: latency,
``overridden``, ``authorize``, ``faults.decide``, then the body on ``request.wire``) and one line
in ``ROUTES``. Raising ``HttpError`` before the first byte answers with that status.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import date, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from . import export, query
from .config import ServerConfig
from .data import EventData, Query, Snapshot
from .errors import STATUS_TEXT, UNAUTHORIZED, HttpError, echo, send_error
from .faults import Faults
from .request import Outcome, Request, RequestRecord
from .wire import BodyCache, Handler, Server, Wire, stall

Endpoint = Callable[["FakeMixpanel", Request], None]

# Path -> endpoint. Requests to these count in ``in_flight``; any other path gets a plain 404.
ROUTES: dict[str, Endpoint] = {
    export.EXPORT_PATH: export.handle,
    **dict.fromkeys(query.PATHS, query.handle),
}
_OPTION_NAMES = frozenset(f.name for f in dataclasses.fields(ServerConfig))


class FakeMixpanel:
    """Serves ``GET /api/2.0/export`` over a deterministic synthetic dataset, and the Query/App
    API endpoints over synthetic profiles, cohorts, annotations and funnels (``query.py``).

    Dataset: ``events_per_day`` events for each of ``days`` days from ``start``. Every event is a
    pure function of (day, index), and each day's events come out in a fixed shuffled order, so a
    clean export of a range always returns exactly ``events(range)``.

    Built from a ``ServerConfig`` or from its fields as keywords (``FakeMixpanel(start=...,
    days=..., faults=Faults(...))``); the fields' help texts document every option. Its options
    read as attributes (``server.timezone``); ``faults`` and ``latency`` may be reassigned and
    apply to the next request.
    """

    def __init__(self, config: ServerConfig | None = None, /, **options: Any) -> None:
        if config is None:
            config = ServerConfig(**options)
        elif options:
            config = dataclasses.replace(config, **options)
        self.config = config
        self.start_date = config.start
        self.days = config.days
        self.today = (
            config.today
            if config.today is not None
            else config.start + timedelta(days=config.days - 1)
        )
        self.data = EventData(
            events_per_day=config.events_per_day,
            timezone=config.timezone,
            event_bytes=config.event_bytes,
            late_fraction=config.late_fraction,
            late_days=config.late_days,
            duplicate_rate=config.duplicate_rate,
            awkward_events=config.awkward_events,
        )
        self.routes: dict[str, Endpoint] = dict(ROUTES)
        self.routes[query.app_annotations_path(config.project_id)] = query.handle
        self.query = query.QueryState(config, self.today)
        self.cache = BodyCache()
        self.stopping = threading.Event()
        self.requests_log: list[RequestRecord] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._attempts: dict[tuple[str, ...], int] = {}
        self._version = 0
        self._lock = threading.Lock()
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    if not TYPE_CHECKING:  # hidden from mypy, which would otherwise accept any attribute

        def __getattr__(self, name: str) -> Any:
            """The options (``server.project_id``...) read through to the config."""
            if name != "config" and name in _OPTION_NAMES:
                return getattr(self.config, name)
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def faults(self) -> Faults:
        return self.config.faults

    @faults.setter
    def faults(self, value: Faults) -> None:
        self.config.faults = value

    @property
    def latency(self) -> float:
        return self.config.latency

    @latency.setter
    def latency(self, value: float) -> None:
        self.config.latency = value

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeMixpanel is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def start(self) -> FakeMixpanel:
        if self._server is not None:
            return self
        self.stopping.clear()
        self._server = Server((self.config.host, self.config.port), self._serve)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-mixpanel",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Return promptly even with stalled or throttled handlers: they are woken and cut off."""
        server, self._server = self._server, None
        if server is None:
            return
        self.stopping.set()
        server.shutdown()
        server.server_close()
        server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeMixpanel:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- test helpers ----------------------------------------------------------------------------

    def events(
        self,
        from_date: date,
        to_date: date,
        *,
        event_names: Iterable[str] | None = None,
        time_in_ms: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """Exactly what a clean export of the range returns, in server order."""
        query = Query(
            from_date=from_date,
            to_date=to_date,
            event_names=frozenset(event_names) if event_names is not None else None,
            where=None,
            limit=None,
            time_in_ms=time_in_ms,
        )
        for line in self.data.lines(query, self.snapshot()):
            yield json.loads(line.decode("utf-8", "replace"))

    def add_days(self, n: int) -> None:
        """More days arrive: the dataset and ``today`` move forward together."""
        if n < 0:
            raise ValueError("n must be >= 0")
        with self._lock:
            self.days += n
            self.today += timedelta(days=n)
            self.query.data.today = self.today
            self._version += 1
            self.cache.reset(self._version)

    def reset_stats(self) -> None:
        """Also restarts fault attempt counters, so the same seed replays the same faults."""
        with self._lock:
            self.requests_log.clear()
            self.max_in_flight = self._in_flight
            self._attempts.clear()

    # -- for endpoints ---------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(
                start=self.start_date,
                last=self.start_date + timedelta(days=self.days - 1),
                today=self.today,
                version=self._version,
            )

    def next_attempt(self, key: tuple[str, ...]) -> int:
        """How many earlier attempts ``key`` had: it seeds the fault draws of this one."""
        with self._lock:
            attempt = self._attempts.get(key, 0)
            self._attempts[key] = attempt + 1
        return attempt

    def wait_latency(self) -> None:
        if self.latency > 0:
            stall(self.stopping, self.latency)

    def overridden(self, request: Request) -> bool:
        """Answer with ``Faults.status_override`` if set; True when it did."""
        faults = request.faults
        if faults.status_override is None:
            return False
        request.outcome.fault = "status_override"
        if faults.status_override == 401 and faults.echo_credentials:
            authorization = request.header("Authorization")
            request.wire.simple(401, UNAUTHORIZED + echo(authorization, faults.echo_padding))
        else:
            send_error(request.wire, faults.status_override, faults, request.handler.path)
        return True

    def send_error(self, request: Request, status: int) -> None:
        send_error(request.wire, status, request.faults)

    def authorize(self, request: Request) -> str:
        """The auth mode (``service_account`` or ``api_secret``); a service account must also
        name its project. Never echoes credentials (unless ``Faults.echo_credentials``)."""
        mode = self._authenticate(request.header("Authorization"))
        if mode == "service_account":
            project = request.params.get("project_id", "")
            if not project:
                raise HttpError(400, "project_id is required when using a service account")
            if not project.isdigit():
                raise HttpError(400, "project_id must be an integer")
            if int(project) != self.config.project_id:
                raise HttpError(403, f"service account is not a member of project {project}")
        return mode

    def authorize_query(self, request: Request) -> str:
        """As :meth:`authorize`, for the Query/App APIs: the App API names its project in the
        path (its route exists for the server's project only)."""
        if request.path.startswith("/api/app/"):
            return self._authenticate(request.header("Authorization"))
        return self.authorize(request)

    def _authenticate(self, header: str | None) -> str:
        unauthorized = HttpError(401, UNAUTHORIZED)
        if not header or not header.startswith("Basic "):
            raise unauthorized
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise unauthorized from None
        user, _, password = decoded.partition(":")

        def same(a: str, b: str) -> bool:
            return hmac.compare_digest(a.encode(), b.encode())

        account = self.config.service_account
        if account is not None and same(user, account[0]) and same(password, account[1]):
            return "service_account"
        secret = self.config.api_secret
        if secret is not None and same(user, secret) and password == "":
            return "api_secret"
        raise unauthorized

    # -- request handling ------------------------------------------------------------------------

    def _serve(self, handler: Handler) -> None:
        started = time.monotonic()
        parts = urlsplit(handler.path)
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        if handler.command == "POST":
            length = int(handler.headers.get("Content-Length") or 0)
            form = handler.rfile.read(length).decode("utf-8", "replace")
            params.update(parse_qsl(form, keep_blank_values=True))
        headers = {k: v for k, v in handler.headers.items() if k.lower() != "authorization"}
        wire = Wire(
            handler, self.stopping, self.config.bytes_per_second, self.config.throttle_payload
        )
        outcome = Outcome(from_date=params.get("from_date"), to_date=params.get("to_date"))
        endpoint = self.routes.get(parts.path)
        in_flight = 0
        if endpoint is not None:
            with self._lock:
                self._in_flight += 1
                in_flight = self._in_flight
                self.max_in_flight = max(self.max_in_flight, in_flight)
        request = Request(handler, parts.path, params, wire, self.faults, in_flight, outcome)
        try:
            if endpoint is None:
                wire.simple(404, STATUS_TEXT[404])
            else:
                self._call(endpoint, request)
        except OSError:
            handler.close_connection = True
            outcome.fault = outcome.fault or "client_disconnected"
        finally:
            record = RequestRecord(
                path=parts.path,
                params=params,
                from_date=outcome.from_date,
                to_date=outcome.to_date,
                status=wire.status,
                started=started,
                ended=time.monotonic(),
                fault=outcome.fault,
                bytes_sent=wire.bytes_sent,
                headers=headers,
            )
            with self._lock:
                if endpoint is not None:
                    self._in_flight -= 1
                self.requests_log.append(record)

    def _call(self, endpoint: Endpoint, request: Request) -> None:
        try:
            endpoint(self, request)
        except HttpError as err:
            message = err.message
            if err.status == 401 and request.faults.echo_credentials:
                message += echo(request.header("Authorization"), request.faults.echo_padding)
            if err.json_body:
                body = json.dumps({"error": message, "status": "error"})
                request.wire.simple(err.status, body, content_type="application/json")
                return
            request.wire.simple(err.status, message)

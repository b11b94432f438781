"""A fake Mixpanel raw-export server that misbehaves the way the real one does.

Real exports are slow, rate limited, streamed for minutes, sometimes cut mid-body and never sorted
(see ``mixpanel-export-api.md``). A tap only ever run against a polite mock hides exactly the bugs
users of other extractors met, so this server reproduces those behaviours on loopback, and does so
deterministically from a seed: tests can assert exact outputs, benchmarks can measure parallelism
without the network. It is pure stdlib on purpose, so the test double never shares a bug with the
code under test.

Run as a module it serves until SIGTERM/SIGINT and prints ``FAKE_MIXPANEL_URL=...`` once, for
benchmarks and demos that drive the tap as a subprocess.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import random
import re
import signal
import socket
import socketserver
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from zoneinfo import ZoneInfo

__all__ = [
    "EVENT_NAMES",
    "EXPORT_PATH",
    "TERMINATED_EARLY_LINE",
    "FakeMixpanel",
    "Faults",
    "RequestRecord",
    "main",
]

EXPORT_PATH = "/api/2.0/export"
# Mixpanel's own words when it gives up on a stream (mixpanel/mixpanel-utils#5: the body was
# "export terminated early"); a tap should look for "terminated early" in a non-JSON last line.
TERMINATED_EARLY_LINE = "export terminated early"
EVENT_NAMES = (
    "Page View",
    "Sign Up",
    "Login",
    "Add to Cart",
    "Purchase",
    "Search",
    "Share",
    "Logout",
)
GZIP_MIN_BYTES = 1400
MAX_LIMIT = 100_000

_EPOCH = date(1970, 1, 1)
_ONE_DAY = timedelta(days=1)
# Big chunks keep syscalls and chunk framing out of the profile; pacing needs finer pieces so a
# throttled connection does not burst 64 KiB and then sleep for seconds.
_CHUNK = 64 * 1024
_THROTTLE_PIECE = 16 * 1024
# Level 1: the fake must never be the bottleneck of a benchmark; ratio does not matter here.
_GZIP_LEVEL = 1
_FRAGMENTS = 64
_TIERS = ("free", "starter", "growth", "enterprise")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_WHERE_RE = re.compile(r'\s*properties\[\s*("(?:[^"\\]|\\.)*")\s*\]\s*==\s*("(?:[^"\\]|\\.)*")\s*')
_TYPICAL_HEAD = (
    '{"event":"Add to Cart","properties":{"time":1704067200,"distinct_id":"user-01234",'
    '"$insert_id":"00000000000000000000000000000000","mp_processing_time_ms":1704067200123,'
    '"plan":{"tier":"starter","seats":100},"price":499.99,'
)
_UNAUTHORIZED = "Unauthorized, invalid username or secret"
_STATUS_TEXT = {
    400: "Bad request",
    401: _UNAUTHORIZED,
    402: "Payment required: your plan does not include API access",
    403: "Forbidden: you do not have permission to export this project's data",
    404: "Not found",
    429: "Query rate limit exceeded, please retry later",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service temporarily unavailable",
}


@dataclass
class Faults:
    """Failure knobs; every random decision derives from ``seed`` so a failing test replays.

    Rates are probabilities per export request. The random faults are drawn independently in
    the order 429, 5xx, stall, cut, terminated early, invalid JSON and the first one that fires
    wins; deterministic ones (``status_override``, ``fail_ranges``, ``fail_dates``,
    ``max_concurrent``) are checked before them. The draws hash (seed, from_date, to_date,
    attempt), where attempt counts the earlier well-formed, authenticated requests for that
    range that were not turned away by ``max_concurrent``, so neither thread interleaving nor
    how many requests happened to overlap changes the sequence.
    Mutating a ``Faults`` in place or swapping ``FakeMixpanel.faults`` applies to the next request.

    ``echo_credentials`` makes every 401 body repeat the ``Authorization`` header it received,
    its base64 token and the decoded ``user:secret``, as careless proxies and gateways do: a
    tap must redact whatever an error body carries before logging it.
    """

    seed: int = 0
    cut_rate: float = 0.0
    terminated_early_rate: float = 0.0
    invalid_json_rate: float = 0.0
    rate_429: float = 0.0
    retry_after: float | None = None
    rate_5xx: float = 0.0
    stall_rate: float = 0.0
    stall_seconds: float = 0.0
    max_concurrent: int | None = None
    fail_ranges: dict[tuple[str, str], int] = field(default_factory=dict)
    fail_dates: set[str] = field(default_factory=set)
    status_override: int | None = None
    echo_credentials: bool = False


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


@dataclass(frozen=True)
class _Query:
    from_date: date
    to_date: date
    event_names: frozenset[str] | None
    where: tuple[str, str] | None
    limit: int | None
    time_in_ms: bool


@dataclass(frozen=True)
class _Snapshot:
    """The dataset as of the request's start, so ``add_days`` cannot change a response midway."""

    start: date
    last: date
    today: date
    version: int


@dataclass
class _Plan:
    """Positions are fractions of the expected body, resolved once its size is known."""

    fault: str | None = None
    status: int | None = None
    stall_before: bool = False
    stall_at: float | None = None
    cut_at: float | None = None
    cut_in_line: float = 0.0
    terminate_at: float | None = None
    invalid_at: float | None = None


@dataclass
class _Outcome:
    """Filled in as the request progresses so the log is right even when the client vanishes."""

    fault: str | None = None
    from_date: str | None = None
    to_date: str | None = None


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _hit(target: int | None, index: int, last: bool) -> bool:
    """Fire at ``target`` or, if the body turned out shorter than estimated, at its last line."""
    return target is not None and (index == target or (last and index < target))


def _format_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _echo(authorization: str | None) -> str:
    """What a careless gateway puts in a 401 body: the credentials it received, every form."""
    header = authorization or ""
    token = header[6:].strip() if header.startswith("Basic ") else header
    try:
        decoded = base64.b64decode(token, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        decoded = ""
    return f" (received Authorization: {header}; token {token}; credentials {decoded})"


def _corrupt(line: bytes) -> bytes:
    """Keep a real-looking prefix so the client fails on JSON, not on a blank line."""
    text = line.decode("utf-8")
    return (text[: max(1, len(text) // 2)] + '"<<invalid>>\n').encode("utf-8")


def _build_fragments(event_bytes: int) -> list[str]:
    """Pre-serialise the bulky, low-variety part of events so per-event work stays tiny.

    Fragments carry the awkward JSON a tap must not mangle: nested arrays, null, bools, floats,
    non-ASCII (including a non-BMP emoji) and a string with an escaped newline. Each gets its own
    padding so lines average ``event_bytes`` (newline included).
    """
    cities = (
        ("Zürich", "Zurich", "CH"),
        ("São Paulo", "São Paulo", "BR"),
        ("東京", "Tokyo", "JP"),
        ("Kraków", "Lesser Poland", "PL"),
        ("New York", "New York", "US"),
        ("Reykjavík", "Capital Region", "IS"),
        ("Montréal", "Quebec", "CA"),
        ("Bengaluru", "Karnataka", "IN"),
    )
    browsers = ("Chrome", "Firefox", "Safari", "Edge", "Mobile Safari")
    systems = ("Mac OS X", "Windows", "Linux", "iOS", "Android")
    sources = ("google", "newsletter", "twitter", None)
    tag_pool = ("beta", "mobile", "returning", "promo", "vip", "ab:test-b")
    rng = random.Random(20240101)
    filler = "lorem ipsum dolor sit amet consectetur adipiscing elit " * 200
    fragments = []
    for k in range(_FRAGMENTS):
        city, region, country = cities[k % len(cities)]
        props: dict[str, Any] = {
            "$browser": browsers[k % len(browsers)],
            "$browser_version": float(100 + rng.randrange(30)),
            "$city": city,
            "$region": region,
            "mp_country_code": country,
            "$os": systems[rng.randrange(len(systems))],
            "$screen_width": rng.choice((375, 390, 1280, 1440, 1920)),
            "$device_id": f"{rng.getrandbits(48):012x}",
            "mp_lib": "web",
            "utm_source": sources[k % len(sources)],
            "tags": rng.sample(tag_pool, k % 4),
            "is_trial": k % 3 == 0,
            "coupon": None,
            "ratio": round(rng.random(), 6),
            "note": 'line one\nline "two"',
            "greeting": "Grüße 東京 👋",
        }
        body = json.dumps(props, ensure_ascii=False, separators=(",", ":"))[1:-1]
        # A typical head as rendered by FakeMixpanel._day_lines, plus the closing "}}\n".
        size = len(_TYPICAL_HEAD) + len(body.encode()) + len(',"description":""') + 3
        pad = max(0, event_bytes - size)
        fragments.append(body + ',"description":' + json.dumps(filler[:pad]))
    return fragments


class _Wire:
    """One response on the socket: chunk framing, optional gzip, pacing and the abrupt cut."""

    def __init__(
        self,
        handler: _Handler,
        stopping: threading.Event,
        bytes_per_second: float | None,
        throttle_payload: bool = False,
    ) -> None:
        self._handler = handler
        self._stopping = stopping
        self._bps = bytes_per_second
        self._throttle_payload = throttle_payload
        self._compressor: zlib._Compress | None = None
        self._t0 = 0.0
        # Bytes counted against the throttle: wire bytes, or payload bytes (before gzip) when
        # ``throttle_payload`` is on, so a compressible body is not sent faster than its size.
        self._paced = 0.0
        self.started = False
        self.status = 0
        self.bytes_sent = 0

    def simple(
        self,
        status: int,
        body: str,
        *,
        content_type: str = "text/plain; charset=utf-8",
        headers: dict[str, str] | None = None,
    ) -> None:
        data = body.encode()
        self.status = status
        self.started = True
        h = self._handler
        h.send_response(status)
        for name, value in (headers or {}).items():
            h.send_header(name, value)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)
        self.bytes_sent += len(data)

    def begin(self, *, gzip: bool, compress: bool = True) -> None:
        """Start a chunked 200; ``compress=False`` when the body is already gzipped (cache)."""
        self.status = 200
        self.started = True
        h = self._handler
        h.send_response(200)
        h.send_header("Content-Type", "text/plain; charset=utf-8")
        h.send_header("Transfer-Encoding", "chunked")
        if gzip:
            h.send_header("Content-Encoding", "gzip")
            if compress:
                self._compressor = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, 31)
        h.end_headers()
        self._t0 = time.monotonic()

    def send(self, data: bytes) -> None:
        if self._compressor is None:
            self.send_raw(data)
        elif self._bps and self._throttle_payload:
            for offset in range(0, len(data), _THROTTLE_PIECE):
                piece = data[offset : offset + _THROTTLE_PIECE]
                self.send_raw(self._compressor.compress(piece), payload=len(piece))
        else:
            self.send_raw(self._compressor.compress(data))

    def send_raw(self, data: bytes, payload: float | None = None) -> None:
        """Write ``data``; ``payload`` is what it counts against a payload throttle."""
        per_byte = 1.0
        if self._throttle_payload and payload is not None and data:
            per_byte = payload / len(data)
        # An empty chunk would be the terminator, so nothing is written for empty input.
        step = _THROTTLE_PIECE if self._bps else max(len(data), 1)
        for offset in range(0, len(data), step):
            piece = data[offset : offset + step]
            self._handler.wfile.write(b"%x\r\n%b\r\n" % (len(piece), piece))
            self.bytes_sent += len(piece)
            self._pace(len(piece) * per_byte)
        if not data and payload and self._throttle_payload:
            self._pace(payload)  # gzip buffered this input: its time is still owed

    def _pace(self, amount: float) -> None:
        if not self._bps:
            return
        self._paced += amount
        delay = self._t0 + self._paced / self._bps - time.monotonic()
        if delay > 0 and self._stopping.wait(delay):
            raise ConnectionAbortedError("fake server stopping")

    def end(self) -> None:
        if self._compressor is not None:
            self.send_raw(self._compressor.flush(), payload=0)
        self._handler.wfile.write(b"0\r\n\r\n")

    def abort(self) -> None:
        """Close without the terminating chunk: the client sees an incomplete chunked body."""
        self._handler.close_connection = True
        with contextlib.suppress(OSError):
            self._handler.connection.shutdown(socket.SHUT_RDWR)


class _Body:
    """Buffers a streamed body because gzip only pays off past 1400 bytes, unknown until then.

    The encoding is decided at the first flush: on a full buffer, at the end, or at a stall that
    flushes early (then a small prefix may go uncompressed although the whole body is larger).
    """

    def __init__(self, wire: _Wire, accept_gzip: bool) -> None:
        self._wire = wire
        self._accept_gzip = accept_gzip
        self._buf = bytearray()

    def write(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) >= _CHUNK:
            self.flush()

    def flush(self) -> None:
        if not self._wire.started:
            self._wire.begin(gzip=self._accept_gzip and len(self._buf) > GZIP_MIN_BYTES)
        if self._buf:
            self._wire.send(bytes(self._buf))
            self._buf.clear()

    def finish(self) -> None:
        self.flush()
        self._wire.end()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.untrack(self.connection)

    def do_GET(self) -> None:
        self.server.app._serve(self)

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: thousands of requests in a test run would drown pytest's output."""


class _Server(ThreadingHTTPServer):
    # Daemon threads and no join on close: a stalled handler must never block stop().
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], app: FakeMixpanel) -> None:
        self.app = app
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn) that can take seconds.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def track(self, conn: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(conn)

    def untrack(self, conn: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(conn)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # clients hanging up are routine here (cuts, timeouts, stop())
        super().handle_error(request, client_address)


class FakeMixpanel:
    """Serves ``GET /api/2.0/export`` over a deterministic synthetic dataset.

    Dataset: ``events_per_day`` events for each of ``days`` days from ``start``. Every event is a
    pure function of (day, index), and each day's events come out in a fixed shuffled order, so a
    clean export of a range always returns exactly ``events(range)``.

    ``timezone`` mimics pre-2023 projects: for a non-UTC project ``time`` is "local epoch"
    seconds (``datetime.utcfromtimestamp(time)`` is the local wall clock), while
    ``mp_processing_time_ms`` stays true UTC milliseconds. ``latency`` is waited before the
    response headers of every export request (errors included).

    Extensions beyond Mixpanel's documented surface, all off by default: ``late_fraction`` of
    events arrive 1..``late_days`` days late and stay invisible until ``today`` reaches their
    arrival day (so ``add_days`` makes them appear in past days, as mobile SDKs do), and
    ``duplicate_rate`` re-sends that fraction of each day's events with the same
    ``$insert_id`` (raw export is not deduplicated). ``bytes_per_second`` paces each response
    by its bytes on the wire (gzip-compressed when the client accepts gzip); with
    ``throttle_payload`` it paces by payload bytes before compression instead, so a body takes
    ``len(payload) / bytes_per_second`` whatever gzip saves (the benchmarks' latency-bound runs).
    """

    def __init__(
        self,
        *,
        start: date,
        days: int,
        events_per_day: int | Callable[[date], int] = 100,
        today: date | None = None,
        timezone: str = "UTC",
        service_account: tuple[str, str] | None = ("svc-user", "svc-secret"),
        project_id: int = 12345,
        api_secret: str | None = None,
        faults: Faults | None = None,
        latency: float = 0.0,
        bytes_per_second: float | None = None,
        throttle_payload: bool = False,
        event_bytes: int = 590,
        cache_bodies: bool = False,
        late_fraction: float = 0.0,
        late_days: int = 3,
        duplicate_rate: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if days < 0:
            raise ValueError("days must be >= 0")
        self.start_date = start
        self.days = days
        self.events_per_day = events_per_day
        self.today = today if today is not None else start + timedelta(days=days - 1)
        self.timezone = timezone
        self._tz = None if timezone.upper() == "UTC" else ZoneInfo(timezone)
        self.service_account = service_account
        self.project_id = project_id
        self.api_secret = api_secret
        self.faults = faults if faults is not None else Faults()
        self.latency = latency
        self.bytes_per_second = bytes_per_second
        self.throttle_payload = throttle_payload
        self.event_bytes = event_bytes
        self.cache_bodies = cache_bodies
        self.late_fraction = late_fraction
        self.late_days = max(1, late_days)
        self.duplicate_rate = duplicate_rate
        self.host = host
        self.port = port
        self.requests_log: list[RequestRecord] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._attempts: dict[tuple[str, str], int] = {}
        self._version = 0
        self._lock = threading.Lock()
        self._cache: dict[tuple[Any, ...], tuple[bytes, bool, int]] = {}
        self._cache_locks: dict[tuple[Any, ...], threading.Lock] = {}
        self._fragments = _build_fragments(event_bytes)
        self._names_json = [json.dumps(name) for name in EVENT_NAMES]
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

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
        self._stopping.clear()
        self._server = _Server((self.host, self.port), self)
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
        self._stopping.set()
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
        query = _Query(
            from_date=from_date,
            to_date=to_date,
            event_names=frozenset(event_names) if event_names is not None else None,
            where=None,
            limit=None,
            time_in_ms=time_in_ms,
        )
        for line in self._lines(query, self._snapshot()):
            yield json.loads(line)

    def add_days(self, n: int) -> None:
        """More days arrive: the dataset and ``today`` move forward together."""
        if n < 0:
            raise ValueError("n must be >= 0")
        with self._lock:
            self.days += n
            self.today += timedelta(days=n)
            self._version += 1
            self._cache.clear()
            self._cache_locks.clear()

    def reset_stats(self) -> None:
        """Also restarts fault attempt counters, so the same seed replays the same faults."""
        with self._lock:
            self.requests_log.clear()
            self.max_in_flight = self._in_flight
            self._attempts.clear()

    # -- dataset ---------------------------------------------------------------------------------

    def _snapshot(self) -> _Snapshot:
        with self._lock:
            return _Snapshot(
                start=self.start_date,
                last=self.start_date + timedelta(days=self.days - 1),
                today=self.today,
                version=self._version,
            )

    def _count(self, day: date) -> int:
        per_day = self.events_per_day
        return max(0, per_day(day) if callable(per_day) else per_day)

    def _estimate_lines(self, query: _Query, snap: _Snapshot) -> int:
        """An upper-bound-ish line count, used to place faults at a random point of the body."""
        total = 0
        day = max(query.from_date, snap.start)
        while day <= min(query.to_date, snap.last):
            total += self._count(day) + int(self._count(day) * self.duplicate_rate)
            day += _ONE_DAY
        if query.event_names is not None:
            matching = len(query.event_names & set(EVENT_NAMES))
            total = total * matching // len(EVENT_NAMES)
        if query.limit is not None:
            total = min(total, query.limit)
        return max(total, 1)

    def _lines(self, query: _Query, snap: _Snapshot) -> Iterator[bytes]:
        remaining = query.limit
        day = max(query.from_date, snap.start)
        last = min(query.to_date, snap.last)
        while day <= last:
            for line in self._day_lines(day, query, snap.today):
                if query.where is not None:
                    key, value = query.where
                    if json.loads(line)["properties"].get(key) != value:
                        continue
                yield line
                if remaining is not None:
                    remaining -= 1
                    if remaining <= 0:
                        return
            day += _ONE_DAY

    def _utc_offset(self, day: date, second: int) -> int:
        if self._tz is None:
            return 0
        local = datetime(day.year, day.month, day.day, tzinfo=self._tz) + timedelta(seconds=second)
        offset = local.utcoffset()
        return int(offset.total_seconds()) if offset is not None else 0

    def _day_lines(self, day: date, query: _Query, today: date) -> Iterator[bytes]:
        """The hot loop: one random draw per event, one f-string, no dicts, no json.dumps.

        Event ``i`` of a day is built from the day RNG's ``i``-th 128-bit draw, so it depends on
        (day, index) only, not on how many events the day has.
        """
        n = self._count(day)
        if n == 0:
            return
        n_dup = int(n * self.duplicate_rate)
        day_seed = int.from_bytes(hashlib.sha256(day.isoformat().encode()).digest()[:8], "big")
        values = random.Random(day_seed)
        bits = values.getrandbits
        draws = [bits(128) for _ in range(n)]
        duplicated = [values.randrange(n) for _ in range(n_dup)]
        # Sorting on random keys is a shuffle at C speed (random.shuffle is pure Python).
        order_bits = random.Random(day_seed + 1).getrandbits
        order_keys = [order_bits(64) for _ in range(n + n_dup)]
        order = sorted(range(n + n_dup), key=order_keys.__getitem__)
        base = (day - _EPOCH).days * 86400
        # One offset for the whole day unless it contains a DST switch.
        first_offset, last_offset = self._utc_offset(day, 0), self._utc_offset(day, 86399)
        constant_offset = first_offset if first_offset == last_offset else None
        names = self._names_json
        allowed = (
            {i for i, name in enumerate(EVENT_NAMES) if name in query.event_names}
            if query.event_names is not None
            else None
        )
        late_threshold = int(self.late_fraction * 65536)
        late_days = self.late_days
        days_visible = (today - day).days
        in_ms = query.time_in_ms
        fragments = self._fragments
        tiers = _TIERS
        for slot in order:
            if slot < n:
                h, dup = draws[slot], 0
            else:
                h, dup = draws[duplicated[slot - n]], slot - n + 1
            name = h & 7
            if allowed is not None and name not in allowed:
                continue
            lag = 0
            if late_threshold and (h >> 90) & 0xFFFF < late_threshold:
                lag = 1 + (h >> 106) % late_days
                if lag > days_visible:
                    continue
            second = (h >> 3) % 86400
            local = base + second
            offset = constant_offset
            if offset is None:
                offset = self._utc_offset(day, second)
            processing = (local - offset + lag * 86400 + 1 + (h >> 78) % 900 + 61 * dup) * 1000 + (
                h >> 68
            ) % 1000
            cents = (h >> 61) % 100000
            fragment = fragments[(h >> 45) % _FRAGMENTS]
            yield (
                f'{{"event":{names[name]},"properties":{{'
                f'"time":{local * 1000 + (h >> 20) % 1000 if in_ms else local},'
                f'"distinct_id":"user-{(h >> 30) % 20000:05d}","$insert_id":"{h:032x}",'
                f'"mp_processing_time_ms":{processing},'
                f'"plan":{{"tier":"{tiers[(h >> 40) & 3]}","seats":{(h >> 52) % 500 + 1}}},'
                f'"price":{cents // 100}.{cents % 100:02d},{fragment}}}}}\n'
            ).encode()

    # -- request handling ------------------------------------------------------------------------

    def _serve(self, handler: _Handler) -> None:
        started = time.monotonic()
        parts = urlsplit(handler.path)
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        headers = {k: v for k, v in handler.headers.items() if k.lower() != "authorization"}
        wire = _Wire(handler, self._stopping, self.bytes_per_second, self.throttle_payload)
        outcome = _Outcome(from_date=params.get("from_date"), to_date=params.get("to_date"))
        export = parts.path == EXPORT_PATH
        in_flight = 0
        if export:
            with self._lock:
                self._in_flight += 1
                in_flight = self._in_flight
                self.max_in_flight = max(self.max_in_flight, in_flight)
        try:
            if export:
                self._export(handler, wire, params, in_flight, outcome)
            else:
                wire.simple(404, _STATUS_TEXT[404])
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
                if export:
                    self._in_flight -= 1
                self.requests_log.append(record)

    def _export(
        self,
        handler: _Handler,
        wire: _Wire,
        params: dict[str, str],
        in_flight: int,
        outcome: _Outcome,
    ) -> None:
        faults = self.faults
        if self.latency > 0 and self._stopping.wait(self.latency):
            raise ConnectionAbortedError("fake server stopping")
        authorization = handler.headers.get("Authorization")
        if faults.status_override is not None:
            outcome.fault = "status_override"
            if faults.status_override == 401 and faults.echo_credentials:
                wire.simple(401, _UNAUTHORIZED + _echo(authorization))
                return
            self._send_error(wire, faults.status_override, faults)
            return
        snap = self._snapshot()
        try:
            mode = self._authenticate(authorization)
            query = self._parse(params, mode, snap)
        except _HttpError as err:
            message = err.message
            if err.status == 401 and faults.echo_credentials:
                message += _echo(authorization)
            wire.simple(err.status, message)
            return
        plan = self._decide(faults, query, in_flight)
        outcome.fault = plan.fault
        if plan.status is not None:
            self._send_error(wire, plan.status, faults)
            return
        if plan.stall_before:
            self._stall(faults)
        accept_gzip = "gzip" in (handler.headers.get("Accept-Encoding") or "").lower()
        if self.cache_bodies and plan.fault not in ("terminated_early", "invalid_json"):
            self._send_cached(wire, query, snap, plan, faults, accept_gzip)
        else:
            self._send_streamed(wire, query, snap, plan, faults, accept_gzip)

    def _authenticate(self, header: str | None) -> str:
        """Never echo credentials (unless ``Faults.echo_credentials``): one fixed text."""
        unauthorized = _HttpError(401, _UNAUTHORIZED)
        if not header or not header.startswith("Basic "):
            raise unauthorized
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise unauthorized from None
        user, _, password = decoded.partition(":")

        def same(a: str, b: str) -> bool:
            return hmac.compare_digest(a.encode(), b.encode())

        account = self.service_account
        if account is not None and same(user, account[0]) and same(password, account[1]):
            return "service_account"
        if self.api_secret is not None and same(user, self.api_secret) and password == "":
            return "api_secret"
        raise unauthorized

    def _parse(self, params: dict[str, str], mode: str, snap: _Snapshot) -> _Query:
        if mode == "service_account":
            project = params.get("project_id", "")
            if not project:
                raise _HttpError(400, "project_id is required when using a service account")
            if not project.isdigit():
                raise _HttpError(400, "project_id must be an integer")
            if int(project) != self.project_id:
                raise _HttpError(403, f"service account is not a member of project {project}")
        from_date = self._parse_date(params, "from_date")
        to_date = self._parse_date(params, "to_date")
        if from_date > to_date:
            raise _HttpError(400, "from_date cannot be later than to_date")
        if to_date > snap.today:
            raise _HttpError(400, "to_date cannot be later than today")
        event_names = None
        if params.get("event"):
            try:
                names = json.loads(params["event"])
            except ValueError:
                names = None
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise _HttpError(400, "event must be a JSON array of event names")
            event_names = frozenset(names) if names else None
        where = None
        if params.get("where"):
            match = _WHERE_RE.fullmatch(params["where"])
            try:
                if match is None:
                    raise ValueError(params["where"])
                where = (json.loads(match[1]), json.loads(match[2]))
            except ValueError:
                raise _HttpError(400, "unsupported where expression") from None
        limit = None
        if "limit" in params:
            text = params["limit"]
            if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
                raise _HttpError(400, f"limit must be an integer between 1 and {MAX_LIMIT}")
            limit = int(text)
        return _Query(
            from_date=from_date,
            to_date=to_date,
            event_names=event_names,
            where=where,
            limit=limit,
            time_in_ms=params.get("time_in_ms", "").lower() in ("true", "1"),
        )

    @staticmethod
    def _parse_date(params: dict[str, str], name: str) -> date:
        text = params.get(name)
        if text is None:
            raise _HttpError(400, f"{name} is a required parameter")
        try:
            if not _DATE_RE.fullmatch(text):
                raise ValueError(text)
            return date.fromisoformat(text)
        except ValueError:
            raise _HttpError(400, f"{name} must be a date formatted YYYY-MM-DD") from None

    def _decide(self, faults: Faults, query: _Query, in_flight: int) -> _Plan:
        """Same seed, same sequence per range, whatever the thread interleaving."""
        key = (query.from_date.isoformat(), query.to_date.isoformat())
        status = faults.fail_ranges.get(key)
        if status is not None:
            return _Plan(fault="fail_range", status=status)
        if any(key[0] <= day <= key[1] for day in faults.fail_dates):
            return _Plan(fault="fail_date", status=500)
        if faults.max_concurrent is not None and in_flight > faults.max_concurrent:
            # Not an attempt: how many requests overlap depends on timing, and counting them
            # would make the random faults below depend on it too.
            return _Plan(fault="concurrency", status=429)
        with self._lock:
            attempt = self._attempts.get(key, 0)
            self._attempts[key] = attempt + 1
        seed = hashlib.sha256(f"{faults.seed}|{key[0]}|{key[1]}|{attempt}".encode()).digest()
        rng = random.Random(int.from_bytes(seed, "big"))
        # Always draw everything, so enabling one fault never reshuffles the others.
        (
            r429,
            r5xx,
            code,
            rstall,
            where_stall,
            rcut,
            cut_at,
            cut_in,
            rterm,
            term_at,
            rbad,
            bad_at,
        ) = (rng.random() for _ in range(12))
        if r429 < faults.rate_429:
            return _Plan(fault="429", status=429)
        if r5xx < faults.rate_5xx:
            return _Plan(fault="5xx", status=(500, 502, 503)[min(int(code * 3), 2)])
        if rstall < faults.stall_rate:
            before = where_stall < 0.5
            return _Plan(
                fault="stall",
                stall_before=before,
                stall_at=None if before else (where_stall - 0.5) * 2,
            )
        if rcut < faults.cut_rate:
            return _Plan(fault="cut", cut_at=cut_at, cut_in_line=cut_in)
        if rterm < faults.terminated_early_rate:
            return _Plan(fault="terminated_early", terminate_at=term_at)
        if rbad < faults.invalid_json_rate:
            return _Plan(fault="invalid_json", invalid_at=bad_at)
        return _Plan()

    def _send_error(self, wire: _Wire, status: int, faults: Faults) -> None:
        try:
            text = _STATUS_TEXT.get(status) or HTTPStatus(status).phrase
        except ValueError:
            text = f"HTTP {status}"
        if status != 429:
            wire.simple(status, text)
            return
        # Rate-limit errors come as JSON, the rest as plain text: a tap must cope with both.
        headers = {}
        if faults.retry_after is not None:
            headers["Retry-After"] = _format_seconds(faults.retry_after)
        body = json.dumps({"error": text, "status": "error"})
        wire.simple(429, body, content_type="application/json", headers=headers)

    def _stall(self, faults: Faults) -> None:
        if self._stopping.wait(faults.stall_seconds):
            raise ConnectionAbortedError("fake server stopping")

    def _send_streamed(
        self,
        wire: _Wire,
        query: _Query,
        snap: _Snapshot,
        plan: _Plan,
        faults: Faults,
        accept_gzip: bool,
    ) -> None:
        body = _Body(wire, accept_gzip)
        estimate = self._estimate_lines(query, snap)

        def at(fraction: float | None) -> int | None:
            return None if fraction is None else int(fraction * estimate)

        stall_at, cut_at = at(plan.stall_at), at(plan.cut_at)
        term_at, bad_at = at(plan.terminate_at), at(plan.invalid_at)
        terminated = (TERMINATED_EARLY_LINE + "\n").encode()
        lines = self._lines(query, snap)
        current = next(lines, None)
        if current is None:  # empty range: faults that need a position happen at the start
            if term_at is not None:
                body.write(terminated)
            if stall_at is not None:
                body.flush()
                self._stall(faults)
            if cut_at is not None:
                body.flush()
                wire.abort()
                return
        index = 0
        while current is not None:
            following = next(lines, None)
            last = following is None
            if _hit(stall_at, index, last):
                body.flush()
                self._stall(faults)
                stall_at = None
            if _hit(term_at, index, last):
                body.write(terminated)
                break
            if _hit(cut_at, index, last):
                body.write(current[: int(plan.cut_in_line * len(current))])
                body.flush()
                wire.abort()
                return
            body.write(_corrupt(current) if _hit(bad_at, index, last) else current)
            current = following
            index += 1
        body.finish()

    def _send_cached(
        self,
        wire: _Wire,
        query: _Query,
        snap: _Snapshot,
        plan: _Plan,
        faults: Faults,
        accept_gzip: bool,
    ) -> None:
        data, gzipped, raw_size = self._cached_body(query, snap, accept_gzip)
        wire.begin(gzip=gzipped, compress=False)
        # Under a payload throttle each wire byte stands for its share of the payload.
        ratio = raw_size / len(data) if data else 1.0
        position = 0
        if plan.stall_at is not None:
            position = int(plan.stall_at * len(data))
            wire.send_raw(data[:position], payload=position * ratio)
            self._stall(faults)
        if plan.cut_at is not None:
            cut = int(plan.cut_at * len(data))
            wire.send_raw(data[:cut], payload=cut * ratio)
            wire.abort()
            return
        wire.send_raw(data[position:], payload=(len(data) - position) * ratio)
        wire.end()

    def _cached_body(
        self, query: _Query, snap: _Snapshot, accept_gzip: bool
    ) -> tuple[bytes, bool, int]:
        """Generate once per distinct request so benchmarks measure the client, not the fake.

        Returns the body as sent, whether it is gzipped and the payload's size before gzip.
        """
        key = (query, snap.version, accept_gzip)
        with self._lock:
            lock = self._cache_locks.setdefault(key, threading.Lock())
        with lock:
            cached = self._cache.get(key)
            if cached is not None:
                return cached
            raw = b"".join(self._lines(query, snap))
            entry = (raw, False, len(raw))
            if accept_gzip and len(raw) > GZIP_MIN_BYTES:
                compressor = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, 31)
                entry = (compressor.compress(raw) + compressor.flush(), True, len(raw))
            with self._lock:
                if snap.version == self._version:
                    self._cache[key] = entry
            return entry


# -- command line ---------------------------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tap_mixpanel_parallel.testing.fake_server",
        description="Serve a fake Mixpanel export API until SIGTERM/SIGINT.",
    )
    parser.add_argument("--start", type=date.fromisoformat, required=True)
    parser.add_argument("--days", type=int, required=True)
    parser.add_argument("--events-per-day", type=int, default=100)
    parser.add_argument("--today", type=date.fromisoformat, default=None)
    parser.add_argument("--timezone", default="UTC")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--bytes-per-second", type=float, default=None)
    parser.add_argument(
        "--throttle-payload",
        action="store_true",
        help="--bytes-per-second counts payload bytes before gzip, not compressed wire bytes",
    )
    parser.add_argument("--event-bytes", type=int, default=590)
    parser.add_argument("--cache-bodies", action="store_true")
    parser.add_argument("--late-fraction", type=float, default=0.0)
    parser.add_argument("--late-days", type=int, default=3)
    parser.add_argument("--duplicate-rate", type=float, default=0.0)
    parser.add_argument("--username", default=None, help="service account (default svc-user)")
    parser.add_argument("--secret", default=None, help="service account secret (svc-secret)")
    parser.add_argument("--project-id", type=int, default=12345)
    parser.add_argument(
        "--api-secret",
        default=None,
        help="legacy project secret; without --username/--secret it disables service accounts",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cut-rate", type=float, default=0.0)
    parser.add_argument("--terminated-early-rate", type=float, default=0.0)
    parser.add_argument("--invalid-json-rate", type=float, default=0.0)
    parser.add_argument("--rate-429", type=float, default=0.0)
    parser.add_argument("--retry-after", type=float, default=None)
    parser.add_argument("--rate-5xx", type=float, default=0.0)
    parser.add_argument("--stall-rate", type=float, default=0.0)
    parser.add_argument("--stall-seconds", type=float, default=0.0)
    parser.add_argument("--max-concurrent", type=int, default=None)
    parser.add_argument(
        "--fail-date",
        action="append",
        default=[],
        help="YYYY-MM-DD; any request covering it fails with 500 (repeatable)",
    )
    parser.add_argument("--status-override", type=int, default=None)
    parser.add_argument(
        "--echo-credentials",
        action="store_true",
        help="401 bodies repeat the credentials received (to test a tap's redaction)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    service_account: tuple[str, str] | None = (
        args.username or "svc-user",
        args.secret or "svc-secret",
    )
    if args.api_secret is not None and args.username is None and args.secret is None:
        service_account = None
    faults = Faults(
        seed=args.seed,
        cut_rate=args.cut_rate,
        terminated_early_rate=args.terminated_early_rate,
        invalid_json_rate=args.invalid_json_rate,
        rate_429=args.rate_429,
        retry_after=args.retry_after,
        rate_5xx=args.rate_5xx,
        stall_rate=args.stall_rate,
        stall_seconds=args.stall_seconds,
        max_concurrent=args.max_concurrent,
        fail_dates=set(args.fail_date),
        status_override=args.status_override,
        echo_credentials=args.echo_credentials,
    )
    server = FakeMixpanel(
        start=args.start,
        days=args.days,
        events_per_day=args.events_per_day,
        today=args.today,
        timezone=args.timezone,
        service_account=service_account,
        project_id=args.project_id,
        api_secret=args.api_secret,
        faults=faults,
        latency=args.latency,
        bytes_per_second=args.bytes_per_second,
        throttle_payload=args.throttle_payload,
        event_bytes=args.event_bytes,
        cache_bodies=args.cache_bodies,
        late_fraction=args.late_fraction,
        late_days=args.late_days,
        duplicate_rate=args.duplicate_rate,
        host=args.host,
        port=args.port,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with server:
        print(f"FAKE_MIXPANEL_URL={server.url}", flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``GET /api/2.0/export``: newline-delimited JSON events of a date range, with its faults.

The body is streamed as it is generated (faults placed at a random line), or, with
``cache_bodies``, made once and replayed byte for byte (faults placed at a random byte).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .data import Query, Snapshot
from .errors import HttpError
from .faults import Faults, Plan, decide, hit
from .request import Request, parse_date
from .wire import Body, stall

if TYPE_CHECKING:
    from .app import FakeMixpanel

EXPORT_PATH = "/api/2.0/export"
# Mixpanel's own words when it gives up on a stream (mixpanel/mixpanel-utils#5: the body was
# "export terminated early"); a tap should look for "terminated early" in a non-JSON last line.
TERMINATED_EARLY_LINE = "export terminated early"
MAX_LIMIT = 100_000
_WHERE_RE = re.compile(r'\s*properties\[\s*("(?:[^"\\]|\\.)*")\s*\]\s*==\s*("(?:[^"\\]|\\.)*")\s*')


def handle(app: FakeMixpanel, request: Request) -> None:
    faults = request.faults
    app.wait_latency()
    if app.overridden(request):
        return
    snap = app.snapshot()
    app.authorize(request)
    query = parse_query(request.params, snap)
    dates = (query.from_date.isoformat(), query.to_date.isoformat())
    if faults.throttle_first and app.next_attempt(("throttle_first",)) < faults.throttle_first:
        request.outcome.fault = "throttle_first"
        app.send_error(request, 429)
        return
    if faults.drip_seconds is not None:
        request.outcome.fault = "drip"
        data = b"".join(_lines(app, query, snap, faults))
        send_drip(app, request, data, faults)
        return
    plan = decide(
        faults, dates, in_flight=request.in_flight, next_attempt=app.next_attempt, dates=dates
    )
    request.outcome.fault = plan.fault
    if plan.status is not None:
        app.send_error(request, plan.status)
        return
    if plan.stall_before:
        stall(app.stopping, faults.stall_seconds)
    if app.config.cache_bodies and plan.fault not in ("terminated_early", "invalid_json"):
        _send_cached(app, request, query, snap, plan)
    else:
        _send_streamed(app, request, query, snap, plan)


def parse_query(params: dict[str, str], snap: Snapshot) -> Query:
    from_date = parse_date(params, "from_date")
    to_date = parse_date(params, "to_date")
    if from_date > to_date:
        raise HttpError(400, "from_date cannot be later than to_date")
    if to_date > snap.today:
        raise HttpError(400, "to_date cannot be later than today")
    event_names = None
    if params.get("event"):
        try:
            names = json.loads(params["event"])
        except ValueError:
            names = None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise HttpError(400, "event must be a JSON array of event names")
        event_names = frozenset(names) if names else None
    where = None
    if params.get("where"):
        match = _WHERE_RE.fullmatch(params["where"])
        try:
            if match is None:
                raise ValueError(params["where"])
            where = (json.loads(match[1]), json.loads(match[2]))
        except ValueError:
            raise HttpError(400, "unsupported where expression") from None
    limit = None
    if "limit" in params:
        text = params["limit"]
        if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
            raise HttpError(400, f"limit must be an integer between 1 and {MAX_LIMIT}")
        limit = int(text)
    return Query(
        from_date=from_date,
        to_date=to_date,
        event_names=event_names,
        where=where,
        limit=limit,
        time_in_ms=params.get("time_in_ms", "").lower() in ("true", "1"),
    )


def _corrupt(line: bytes) -> bytes:
    """Keep a real-looking prefix so the client fails on JSON, not on a blank line."""
    text = line.decode("utf-8")
    return (text[: max(1, len(text) // 2)] + '"<<invalid>>\n').encode("utf-8")


def _lines(app: FakeMixpanel, query: Query, snap: Snapshot, faults: Faults) -> Iterator[bytes]:
    """The range's events, then ``Faults.extra_lines`` of the days it covers, verbatim."""
    yield from app.data.lines(query, snap)
    for day, extra in sorted(faults.extra_lines.items()):
        if query.from_date.isoformat() <= day <= query.to_date.isoformat():
            for line in extra:
                yield line.encode() + b"\n"


def send_drip(app: FakeMixpanel, request: Request, data: bytes, faults: Faults) -> None:
    """A whole ``Content-Length`` body, one byte at a time (with ``drip_headers``, from the
    status line on): each byte resets a client's read timeout."""
    wire, handler = request.wire, request.handler
    wire.status, wire.started = 200, True
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: %d\r\n\r\n" % len(data)
    )
    if not faults.drip_headers:
        handler.wfile.write(head)
        head = b""
    for i, byte in enumerate(head + data):
        handler.wfile.write(bytes((byte,)))
        handler.wfile.flush()
        wire.bytes_sent += i >= len(head)
        stall(app.stopping, faults.drip_seconds or 0.0)


def _send_streamed(
    app: FakeMixpanel, request: Request, query: Query, snap: Snapshot, plan: Plan
) -> None:
    wire, seconds = request.wire, request.faults.stall_seconds
    body = Body(wire, request.accepts_gzip)
    estimate = app.data.estimate_lines(query, snap)

    def at(fraction: float | None) -> int | None:
        return None if fraction is None else int(fraction * estimate)

    stall_at, cut_at = at(plan.stall_at), at(plan.cut_at)
    term_at, bad_at = at(plan.terminate_at), at(plan.invalid_at)
    gzip_cut_at = at(plan.gzip_cut_at)
    terminated = (TERMINATED_EARLY_LINE + "\n").encode()
    lines = _lines(app, query, snap, request.faults)
    current = next(lines, None)
    if current is None:  # empty range: faults that need a position happen at the start
        if term_at is not None:
            body.write(terminated)
        if stall_at is not None:
            body.flush()
            stall(app.stopping, seconds)
        if cut_at is not None:
            body.flush()
            wire.abort()
            return
    index = 0
    while current is not None:
        following = next(lines, None)
        last = following is None
        if hit(stall_at, index, last):
            body.flush()
            stall(app.stopping, seconds)
            stall_at = None
        if hit(term_at, index, last):
            body.write(terminated)
            break
        if hit(cut_at, index, last):
            body.write(current[: int(plan.cut_in_line * len(current))])
            body.flush()
            wire.abort()
            return
        if hit(gzip_cut_at, index, last) and index > 0:
            body.finish(gzip_trailer=False)
            return
        body.write(_corrupt(current) if hit(bad_at, index, last) else current)
        current = following
        index += 1
    body.finish()


def _send_cached(
    app: FakeMixpanel, request: Request, query: Query, snap: Snapshot, plan: Plan
) -> None:
    wire = request.wire
    data, gzipped, raw_size = app.cache.get(
        query, snap.version, request.accepts_gzip, lambda: b"".join(app.data.lines(query, snap))
    )
    wire.begin(gzip=gzipped, compress=False)
    # Under a payload throttle each wire byte stands for its share of the payload.
    ratio = raw_size / len(data) if data else 1.0
    position = 0
    if plan.stall_at is not None:
        position = int(plan.stall_at * len(data))
        wire.send_raw(data[:position], payload=position * ratio)
        stall(app.stopping, request.faults.stall_seconds)
    if plan.cut_at is not None:
        cut = int(plan.cut_at * len(data))
        wire.send_raw(data[:cut], payload=cut * ratio)
        wire.abort()
        return
    wire.send_raw(data[position:], payload=(len(data) - position) * ratio)
    wire.end()

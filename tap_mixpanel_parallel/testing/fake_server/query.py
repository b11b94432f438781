"""The Query, Engage and App API endpoints: people profiles, cohorts, annotations, funnels.

Everything is a pure function of the config, so a test knows exactly which profiles, members,
annotations and funnel rows a complete sync must deliver (:class:`QueryData`).

- **Profiles**: ``profiles`` of them; profile ``i`` has ``$distinct_id`` ``user-{i:07d}`` and a
  ``$last_seen`` spread over the 30 days before the server's today (every 997th has none, as
  profiles set before Mixpanel tracked it). :meth:`QueryData.touch` moves some profiles'
  ``$last_seen`` forward, as updates do.
- **Engage sessions**: page 0 of a query (no ``session_id``) freezes the matching profiles in a
  session, in an order of its own (shuffled per session: Mixpanel promises no order across
  sessions, so a client that skips pages it already has after a restart loses profiles here).
  Later pages are slices of the session. ``total`` comes on page 0 only; ``page_size`` is capped
  at ``max_page_size`` and the answer says which size was used. Only the latest 64 sessions are
  kept; ``Faults.expire_sessions`` expires the first N early. An unknown or expired session is
  a 400 that names the session.
- **where**: only ``properties["$last_seen"] >= "<ISO date-time>"`` (what an incremental sync
  sends); anything else is a 400. ``filter_by_cohort={"id": N}`` selects a cohort's members.
- **Cohorts**: ids ``101, 102, ...``; cohort ``101 + c`` holds every ``(c + 2)``-th profile.
  The last ``group_cohorts`` of them are group cohorts (``data_group_id`` 1): their members are
  group profiles (``company-NNNNN``), and engage answers Mixpanel's 400 "Cannot query one group
  with cohorts of different groups" unless asked with that ``data_group_id``.
- **Funnels**: ids ``7001, ...``; one row per day with two steps, counts a function of
  (funnel, day). As in Mixpanel, a day's conversions keep growing until the conversion window
  (``funnel_window_days``, 7 by default) has passed after it, so a day read too early is low.
- **Annotations**: one a day from the dataset's start; the App API adds ``user`` and ``tags``
  (with ``annotation_extras`` also ``user.email`` and ``tags[].color``), the legacy endpoint
  ``project_id``. The legacy endpoint answers Mixpanel's 400 "Date range exceeds 90 days into
  the past" to a ``from_date`` more than 90 days before today.

Faults are the export's (``Faults``: 429 with or without Retry-After, 5xx, stalls, cuts,
``max_concurrent``, ``status_override``, ``drip_seconds``), drawn per (path, query, page,
attempt), plus expiring sessions and ``query_statuses`` (a status for one path, or one path and
parameter, answered with Mixpanel's JSON error body). ``latency`` is waited before every
answer.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
import re
import threading
from array import array
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import STATUS_TEXT, HttpError
from .export import send_drip
from .faults import decide
from .wire import stall

if TYPE_CHECKING:
    from .app import FakeMixpanel
    from .config import ServerConfig
    from .request import Request

# The documented Query API paths; of the legacy /api/2.0 ones only annotations, which a project
# secret still reaches (the App API takes service accounts only).
ENGAGE_PATH = "/api/query/engage"
COHORTS_PATH = "/api/query/cohorts/list"
FUNNELS_LIST_PATH = "/api/query/funnels/list"
FUNNELS_PATH = "/api/query/funnels"
LEGACY_ANNOTATIONS_PATH = "/api/2.0/annotations"
PATHS = (ENGAGE_PATH, COHORTS_PATH, FUNNELS_LIST_PATH, FUNNELS_PATH, LEGACY_ANNOTATIONS_PATH)
LAST_SEEN_SPREAD_SECONDS = 30 * 86400
SESSION_WINDOW = 64
SESSION_GONE = (
    "session_id {sid} is expired or unknown; query again from page 0 without a session_id"
)
#: How far back the legacy annotations endpoint serves, and what it says past that.
LEGACY_ANNOTATIONS_DAYS = 90
LEGACY_TOO_OLD = "Date range exceeds 90 days into the past"
GROUP_ID = "1"
DIFFERENT_GROUPS = "Cannot query one group with cohorts of different groups"
_WHERE_RE = re.compile(r'\s*properties\["\$last_seen"\]\s*>=\s*"([^"\\]+)"\s*')
_CITIES = ("Berlin", "Lagos", "Lima", "Osaka", "Toronto")
_PLANS = ("free", "starter", "growth", "enterprise")
_FORMAT = "%Y-%m-%dT%H:%M:%S"


def app_annotations_path(project_id: int) -> str:
    return f"/api/app/projects/{project_id}/annotations"


class QueryData:
    """The synthetic project behind the query endpoints (see the module doc)."""

    def __init__(self, config: ServerConfig, today: dt.date) -> None:
        self.profiles = config.profiles
        self.cohorts = config.cohorts
        self.funnels = config.funnels
        self.annotations = config.annotations
        self.group_cohorts = config.group_cohorts
        self.funnel_window_days = config.funnel_window_days
        self.annotation_extras = config.annotation_extras
        self.start = config.start
        self.project_id = config.project_id
        self.today = today
        self.last_seen_base = dt.datetime.combine(today, dt.time(12, 0))
        self.touched: dict[int, str] = {}

    # -- profiles --------------------------------------------------------------------------------

    @staticmethod
    def distinct_id(i: int) -> str:
        return f"user-{i:07d}"

    def last_seen(self, i: int) -> str | None:
        if i in self.touched:
            return self.touched[i]
        if i % 997 == 0:
            return None
        spread = (i * 7919) % LAST_SEEN_SPREAD_SECONDS
        return (self.last_seen_base - dt.timedelta(seconds=spread)).strftime(_FORMAT)

    def touch(self, indices: list[int], when: dt.datetime) -> None:
        """These profiles were updated at ``when``."""
        for i in indices:
            self.touched[i] = when.strftime(_FORMAT)

    def properties(self, i: int) -> dict[str, Any]:
        props: dict[str, Any] = {
            "$email": f"user{i}@example.com",
            "$name": f"User {i}",
            "$created": "2023-06-01T08:00:00",
            "$city": _CITIES[i % len(_CITIES)],
            "plan": _PLANS[i % len(_PLANS)],
            "visits": i % 97,
            "score": (i % 1000) / 10,
            "flags": {"beta": i % 2 == 0, "nested": {"level": i % 3, "tags": ["a", "b"][: i % 3]}},
        }
        seen = self.last_seen(i)
        if seen is not None:
            props["$last_seen"] = seen
        return props

    def profile(self, i: int) -> dict[str, Any]:
        return {"$distinct_id": self.distinct_id(i), "$properties": self.properties(i)}

    @staticmethod
    def group_key(i: int) -> str:
        return f"company-{i:05d}"

    def group_profile(self, i: int) -> dict[str, Any]:
        return {"$distinct_id": self.group_key(i), "$properties": {"$name": f"Company {i}"}}

    def is_group_cohort(self, cohort: int) -> bool:
        c = cohort - 101
        return self.cohorts - self.group_cohorts <= c < self.cohorts

    def matching(self, since: str | None = None, cohort: int | None = None) -> list[int]:
        """Indices of the profiles a query selects, in index order."""
        step = 1
        if cohort is not None:
            c = cohort - 101
            if not 0 <= c < self.cohorts:
                return []
            step = c + 2
            if self.is_group_cohort(cohort):
                return list(range(0, max(self.profiles // 4, 1), step))
        indices = range(0, self.profiles, step)
        if since is None:
            return list(indices)
        return [i for i in indices if (seen := self.last_seen(i)) is not None and seen >= since]

    # -- lists -----------------------------------------------------------------------------------

    def cohort_ids(self) -> list[int]:
        return [101 + c for c in range(self.cohorts)]

    def cohort_list(self) -> list[dict[str, Any]]:
        rows = []
        for c in range(self.cohorts):
            row: dict[str, Any] = {
                "count": len(self.matching(cohort=101 + c)),
                "is_visible": 1,
                "description": f"Every profile whose number is a multiple of {c + 2}",
                "created": f"2024-01-{c % 28 + 1:02d} 10:00:00",
                "project_id": self.project_id,
                "id": 101 + c,
                "name": f"Cohort {c + 1}",
            }
            if self.is_group_cohort(101 + c):
                row["data_group_id"] = GROUP_ID
            rows.append(row)
        return rows

    def annotation_list(self, app: bool) -> list[dict[str, Any]]:
        rows = []
        for n in range(self.annotations):
            day = self.start + dt.timedelta(days=n)
            row: dict[str, Any] = {
                "id": 500 + n,
                "date": f"{day.isoformat()} 12:00:00",
                "description": f"Release {n + 1}",
            }
            if app:
                row["user"] = {"id": 9, "first_name": "Ada", "last_name": "Lovelace"}
                row["tags"] = [{"id": 1, "name": "release"}]
                if self.annotation_extras:
                    row["user"]["email"] = "ada@example.com"
                    row["tags"][0]["color"] = "#3366ff"
            else:
                row["project_id"] = self.project_id
            rows.append(row)
        return rows

    def funnel_list(self) -> list[dict[str, Any]]:
        return [{"funnel_id": 7001 + f, "name": f"Funnel {f + 1}"} for f in range(self.funnels)]

    def funnel_day(self, funnel_id: int, day: dt.date) -> dict[str, Any]:
        """The day's counts as of the server's today: conversions still arrive until the
        conversion window has passed after the day."""
        start = 100 + (funnel_id * 31 + day.toordinal()) % 400
        done = start * (20 + (day.toordinal() + funnel_id) % 50) // 100
        age = (self.today - day).days
        window = self.funnel_window_days
        if age < window:
            done = done * (max(age, 0) + 1) // (window + 1)
        first = {"count": start, "avg_time": None, "avg_time_from_start": None}
        second = {"count": done, "avg_time": 60, "avg_time_from_start": 60}
        return {
            "steps": [
                {
                    **first,
                    "step_conv_ratio": 1,
                    "overall_conv_ratio": 1,
                    "goal": "App Open",
                    "event": "App Open",
                },
                {
                    **second,
                    "step_conv_ratio": done / start,
                    "overall_conv_ratio": done / start,
                    "goal": "Purchase",
                    "event": "Purchase",
                },
            ],
            "analysis": {"completion": done, "starting_amount": start, "steps": 2, "worst": 1},
        }


@dataclass
class _Session:
    number: int
    order: array[int]
    page_size: int
    later_pages: int = 0
    group: bool = False


class QueryState:
    """The data and the live engage sessions of one server."""

    def __init__(self, config: ServerConfig, today: dt.date) -> None:
        self.data = QueryData(config, today)
        self.max_page_size = config.max_page_size
        self.sessions_created = 0
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._lock = threading.Lock()

    def open_session(
        self, order: list[int], page_size: int, group: bool = False
    ) -> tuple[str, _Session]:
        with self._lock:
            self.sessions_created += 1
            number = self.sessions_created
        sid = f"{number:06d}-{hashlib.sha256(str(number).encode()).hexdigest()[:10]}"
        random.Random(sid).shuffle(order)
        session = _Session(number, array("l", order), page_size, group=group)
        with self._lock:
            self._sessions[sid] = session
            while len(self._sessions) > SESSION_WINDOW:
                self._sessions.popitem(last=False)
        return sid, session

    def later_page(self, sid: str, expire_sessions: int, expire_after: int) -> _Session:
        with self._lock:
            found = self._sessions.get(sid)
            if found is None or (
                found.number <= expire_sessions and found.later_pages >= expire_after
            ):
                raise HttpError(400, SESSION_GONE.format(sid=sid))
            found.later_pages += 1
            return found


def handle(app: FakeMixpanel, request: Request) -> None:
    """Every query endpoint: latency, override, auth, the fault draw, then the answer."""
    app.wait_latency()
    if app.overridden(request):
        return
    path = request.path
    mode = app.authorize_query(request)
    if path.startswith("/api/app/") and mode != "service_account":
        raise HttpError(401, "the App API accepts service accounts only")
    params = request.params
    forced = _forced_status(request.faults.query_statuses, path, params)
    if forced is not None:
        request.outcome.fault = "query_status"
        raise HttpError(forced, STATUS_TEXT.get(forced, f"HTTP {forced}"), json_body=True)
    if request.faults.drip_seconds is not None:
        request.outcome.fault = "drip"
        send_drip(app, request, _answer(app, request), request.faults)
        return
    key = (path, *(f"{k}={v}" for k, v in sorted(params.items()) if k != "project_id"))
    plan = decide(request.faults, key, in_flight=request.in_flight, next_attempt=app.next_attempt)
    request.outcome.fault = plan.fault
    if plan.status is not None:
        app.send_error(request, plan.status)
        return
    if plan.stall_before:
        stall(app.stopping, request.faults.stall_seconds)
    body = _answer(app, request)
    wire = request.wire
    wire.begin(gzip=request.accepts_gzip and len(body) > 1400)
    if plan.cut_at is not None:
        wire.send(body[: int(len(body) * plan.cut_at)])
        wire.abort()
        return
    if plan.stall_at is not None:
        wire.send(body[: int(len(body) * plan.stall_at)])
        stall(app.stopping, request.faults.stall_seconds)
        body = body[int(len(body) * plan.stall_at) :]
    wire.send(body)
    wire.end()


def _answer(app: FakeMixpanel, request: Request) -> bytes:
    path, state = request.path, app.query
    data = state.data
    if path == ENGAGE_PATH:
        return _engage(app, request)
    if path == COHORTS_PATH:
        return _json(data.cohort_list())
    if path == FUNNELS_LIST_PATH:
        return _json(data.funnel_list())
    if path == FUNNELS_PATH:
        return _funnel(data, request.params)
    if path == LEGACY_ANNOTATIONS_PATH:
        first, last = _check_legacy_range(data, request.params)
        rows = data.annotation_list(app=False)
        return _json({"annotations": [r for r in rows if first <= r["date"][:10] <= last]})
    return _json({"status": "ok", "results": data.annotation_list(app=True)})


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _engage(app: FakeMixpanel, request: Request) -> bytes:
    state, params, faults = app.query, request.params, request.faults
    page = _int(params.get("page") or "0", "page")
    sid = params.get("session_id") or ""
    if page > 0 and not sid:
        raise HttpError(400, "session_id is required when page is greater than 0")
    if not sid:
        since = None
        if params.get("where"):
            match = _WHERE_RE.fullmatch(params["where"])
            if match is None:
                raise HttpError(400, "unsupported where expression")
            since = match[1]
        cohort = None
        if params.get("filter_by_cohort"):
            try:
                cohort = int(json.loads(params["filter_by_cohort"])["id"])
            except (ValueError, KeyError, TypeError):
                raise HttpError(400, 'filter_by_cohort must look like {"id": 123}') from None
        group = bool(params.get("data_group_id"))
        if cohort is not None and (
            state.data.is_group_cohort(cohort) != group
            or (group and params["data_group_id"] != GROUP_ID)
        ):
            raise HttpError(400, DIFFERENT_GROUPS, json_body=True)
        size = min(_int(params.get("page_size") or "1000", "page_size"), state.max_page_size)
        if size < 1:
            raise HttpError(400, "page_size must be positive")
        sid, session = state.open_session(state.data.matching(since, cohort), size, group)
    else:
        session = state.later_page(sid, faults.expire_sessions, faults.expire_after_pages)
    size = session.page_size
    head: dict[str, Any] = {"page": page, "page_size": size, "session_id": sid, "status": "ok"}
    if page == 0:
        head["total"] = len(session.order)
    profile = state.data.group_profile if session.group else state.data.profile
    results = ",".join(
        json.dumps(profile(i), separators=(",", ":"))
        for i in session.order[page * size : (page + 1) * size]
    )
    return (json.dumps(head)[:-1] + ',"results":[' + results + "]}").encode()


def _forced_status(statuses: dict[str, int], path: str, params: dict[str, str]) -> int | None:
    """``Faults.query_statuses``: a status for ``path``, or for ``path?name=value``."""
    if path in statuses:
        return statuses[path]
    for key, status in statuses.items():
        where, _, pair = key.partition("?")
        name, _, value = pair.partition("=")
        if where == path and pair and params.get(name) == value:
            return status
    return None


def _check_legacy_range(data: QueryData, params: dict[str, str]) -> tuple[str, str]:
    """The inclusive range asked for, as YYYY-MM-DD, if Mixpanel serves it."""
    try:
        start = dt.date.fromisoformat(params["from_date"])
        end = dt.date.fromisoformat(params["to_date"])
    except (KeyError, ValueError):
        raise HttpError(400, "from_date and to_date (YYYY-MM-DD) are required", True) from None
    if (data.today - start).days > LEGACY_ANNOTATIONS_DAYS:
        raise HttpError(400, LEGACY_TOO_OLD, json_body=True)
    return start.isoformat(), end.isoformat()


def _funnel(data: QueryData, params: dict[str, str]) -> bytes:
    try:
        funnel_id = int(params["funnel_id"])
        start = dt.date.fromisoformat(params["from_date"])
        end = dt.date.fromisoformat(params["to_date"])
    except (KeyError, ValueError):
        raise HttpError(400, "funnel_id, from_date and to_date (YYYY-MM-DD) are required") from None
    if funnel_id not in {f["funnel_id"] for f in data.funnel_list()}:
        raise HttpError(400, f"funnel {funnel_id} does not exist")
    if end < start or (end - start).days > 365:
        raise HttpError(400, "from_date must be before to_date, at most a year apart")
    days = [start + dt.timedelta(days=n) for n in range((end - start).days + 1)]
    rows = {d.isoformat(): data.funnel_day(funnel_id, d) for d in days}
    return _json({"meta": {"dates": [d.isoformat() for d in days]}, "data": rows})


def _int(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise HttpError(400, f"{name} must be a whole number") from None

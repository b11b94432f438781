"""``cohorts`` and ``annotations``: one small list each, full table (main thread).

Each list is one request with the shared retries; its answer is checked whole before any
record of it is emitted.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar
from zoneinfo import ZoneInfo

import msgspec
from singer_sdk import typing as th

from tap_mixpanel_parallel.compat import override
from tap_mixpanel_parallel.http.errors import ExportError, PartitionRejected, StreamCut
from tap_mixpanel_parallel.http.limiter import StopRequested
from tap_mixpanel_parallel.query.base import APP_API, QUERY_API, QueryOutcome, QueryStream
from tap_mixpanel_parallel.query.client import app_url, fetch_body, legacy_url, query_url
from tap_mixpanel_parallel.settings import today_in

if TYPE_CHECKING:
    from tap_mixpanel_parallel.query.api import QueryApi

T = TypeVar("T")
UTC = dt.timezone.utc
#: Mixpanel's legacy annotations endpoint answers "Date range exceeds 90 days into the past" to
#: an older from_date: it serves the last 90 days, today included.
LEGACY_ANNOTATIONS_DAYS = 90


class Cohort(msgspec.Struct):
    """One entry of ``cohorts/list``."""

    id: int
    name: str | None = None
    description: str | None = None
    created: str | None = None
    count: int | None = None
    is_visible: int | bool | None = None
    project_id: int | None = None
    data_group_id: str | int | None = None


class Annotation(msgspec.Struct):
    """One annotation, from the App API or the legacy endpoint.

    ``user`` and ``tags`` are kept whole, whatever fields Mixpanel sends in them.
    """

    id: int
    date: str | None = None
    description: str | None = None
    project_id: int | None = None
    user: dict[str, Any] | None = None
    tags: list[dict[str, Any]] | None = None


class _AppAnnotations(msgspec.Struct):
    results: list[Annotation]


class _LegacyAnnotations(msgspec.Struct):
    annotations: list[Annotation]


def local_time(value: str | None, zone: ZoneInfo) -> str | None:
    """Mixpanel's ``YYYY-MM-DD HH:MM:SS`` in the project's timezone, as RFC 3339 in UTC."""
    if not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.astimezone(UTC).isoformat()


def legacy_annotations_start(start: dt.date, today: dt.date) -> dt.date:
    """The first day the legacy annotations endpoint is asked for: never older than it serves."""
    return max(start, today - dt.timedelta(days=LEGACY_ANNOTATIONS_DAYS - 1))


def guarded(outcome: QueryOutcome, what: str, call: Callable[[], T]) -> T | None:
    """``call()``, or None with the failure written into the stream's outcome."""
    try:
        return call()
    except StopRequested:
        return None
    except ExportError as exc:
        if exc.fatal:
            outcome.fatal = exc.message
        else:
            outcome.failed = f"{what}: {exc.message}"
        return None


def decode(body: bytes, kind: type[T], what: str) -> T:
    """A whole answer of the expected shape, or an error that says which it was not."""
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        msg = f"{what}: unexpected answer ({exc})"
        raise PartitionRejected(msg) from None
    except msgspec.DecodeError:
        msg = f"{what}: the answer is not whole JSON (cut body)"
        raise StreamCut(msg) from None


def list_cohorts(api: QueryApi, outcome: QueryOutcome) -> list[dict[str, Any]] | None:
    """Every cohort of the project, or None when the list could not be read."""
    settings = api.settings

    def attempt() -> list[Cohort]:
        body = fetch_body(
            api.sessions.get(),
            settings,
            query_url(settings, "cohorts/list"),
            api.stop_event,
            form={},
        )
        return decode(body, list[Cohort], "cohorts/list")

    cohorts = guarded(outcome, "cohorts/list", lambda: api.call("cohorts/list", attempt))
    if cohorts is None:
        return None
    zone = settings.project_timezone
    return [
        {
            "id": c.id,
            "name": c.name,
            "description": c.description,
            "created": local_time(c.created, zone),
            "count": c.count,
            "is_visible": None if c.is_visible is None else bool(c.is_visible),
            "project_id": c.project_id,
            "data_group_id": None if c.data_group_id is None else str(c.data_group_id),
        }
        for c in cohorts
    ]


class CohortsStream(QueryStream):
    """The project's cohorts, full table."""

    name = "cohorts"
    primary_keys = ("id",)
    replication_key = None

    schema = th.PropertiesList(
        th.Property("id", th.IntegerType, required=True, description="Cohort id"),
        th.Property("name", th.StringType, description="Cohort name"),
        th.Property("description", th.StringType, description="Cohort description"),
        th.Property("created", th.DateTimeType, description="When it was created, in UTC"),
        th.Property("count", th.IntegerType, description="Members when it was last computed"),
        th.Property("is_visible", th.BooleanType, description="Visible in the Mixpanel UI"),
        th.Property("project_id", th.IntegerType, description="Mixpanel project id"),
        th.Property("data_group_id", th.StringType, description="Group analytics data group"),
    ).to_dict()

    @override
    def read(self) -> Iterable[dict[str, Any]]:
        """The whole list, once it was read whole."""
        cohorts = list_cohorts(self.api, self.outcome)
        if cohorts is None:
            return
        yield from cohorts
        self.outcome.summary = f"cohorts finished: {len(cohorts)} cohorts"


class AnnotationsStream(QueryStream):
    """The project's annotations, full table."""

    name = "annotations"
    primary_keys = ("id",)
    replication_key = None

    schema = th.PropertiesList(
        th.Property("id", th.IntegerType, required=True, description="Annotation id"),
        th.Property("date", th.DateTimeType, description="The annotated moment, in UTC"),
        th.Property("description", th.StringType, description="The annotation's text"),
        th.Property("project_id", th.IntegerType, description="Mixpanel project id"),
        th.Property(
            "user",
            th.ObjectType(
                th.Property("id", th.IntegerType),
                th.Property("first_name", th.StringType),
                th.Property("last_name", th.StringType),
                additional_properties=True,
            ),
            description="Who wrote it, with whatever else Mixpanel says of them (App API only)",
        ),
        th.Property(
            "tags",
            th.ArrayType(
                th.ObjectType(
                    th.Property("id", th.IntegerType),
                    th.Property("name", th.StringType),
                    additional_properties=True,
                )
            ),
            description="Its tags, each as Mixpanel sends it (App API only)",
        ),
    ).to_dict()

    @property
    @override
    def api_name(self) -> str:
        """The App API with a service account, else the legacy endpoint of the Query API."""
        return APP_API if self.settings.service_account else QUERY_API

    @override
    def read(self) -> Iterable[dict[str, Any]]:
        """The App API with a service account; the legacy endpoint with a project secret."""
        api = self.api
        settings = self.settings
        if settings.service_account:
            url = app_url(settings, f"projects/{settings.project_id}/annotations")
            params: dict[str, str] = {}
        else:
            url = legacy_url(settings, "annotations")
            today = today_in(settings.project_timezone)
            first = legacy_annotations_start(settings.start_date, today)
            if first > settings.start_date:
                self.logger.warning(
                    "annotations: Mixpanel's legacy endpoint serves only the last %d days, so"
                    " annotations before %s are not read; a service account (the App API)"
                    " reads them all",
                    LEGACY_ANNOTATIONS_DAYS,
                    first,
                )
            params = {
                "from_date": first.isoformat(),
                "to_date": max(first, settings.end_for(today)).isoformat(),
            }

        def attempt() -> list[Annotation]:
            body = fetch_body(
                api.sessions.get(),
                settings,
                url,
                api.stop_event,
                params=params,
                api="Query" if params else "App",
            )
            if settings.service_account:
                return decode(body, _AppAnnotations, "annotations").results
            return decode(body, _LegacyAnnotations, "annotations").annotations

        annotations = guarded(self.outcome, "annotations", lambda: api.call("annotations", attempt))
        if annotations is None:
            return
        zone = settings.project_timezone
        for a in annotations:
            yield {
                "id": a.id,
                "date": local_time(a.date, zone),
                "description": a.description,
                "project_id": a.project_id if a.project_id is not None else settings.project_id,
                "user": a.user,
                "tags": a.tags,
            }
        self.outcome.summary = f"annotations finished: {len(annotations)} annotations"

"""``funnels``: one row per saved funnel and day, incremental on the day, reading again the days
whose conversions may still change (main thread; the requests run on a small pool).

Each funnel is read in windows of ``funnels_window_days`` days (one Query API request each,
against the hourly budget). Windows are fetched side by side and emitted whole, in plan order;
after each window the funnel's bookmark moves to the window's last past day (never today).

Mixpanel keeps adding conversions to a day until the funnel's conversion window has passed
after it, so each run starts ``max(lookback_days, funnels_conversion_window_days)`` before the
bookmark: every day that was not final when it was last read is read again.

A funnel whose window fails after retries fails alone: its later windows are not read (they
would move its bookmark past the failed one), the other funnels load and move on.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Container, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from singer_sdk import typing as th

from tap_mixpanel_parallel.compat import override
from tap_mixpanel_parallel.http.errors import ExportError
from tap_mixpanel_parallel.http.limiter import StopRequested
from tap_mixpanel_parallel.query.api import QueryApi
from tap_mixpanel_parallel.query.base import QueryStream
from tap_mixpanel_parallel.query.client import fetch_body, query_url
from tap_mixpanel_parallel.query.lists import decode, guarded
from tap_mixpanel_parallel.run.dates import Partition, split_date_range
from tap_mixpanel_parallel.run.pool import in_order
from tap_mixpanel_parallel.run.state import StateError
from tap_mixpanel_parallel.settings import today_in

ONE_DAY = dt.timedelta(days=1)


class _Funnel(msgspec.Struct):
    funnel_id: int
    name: str | None = None


class _Day(msgspec.Struct):
    steps: list[dict[str, Any]] | None = None
    analysis: dict[str, Any] | None = None


class _Answer(msgspec.Struct):
    data: dict[str, _Day]


@dataclass(frozen=True)
class FunnelWindow:
    """One request: a funnel and an inclusive range of days."""

    funnel_id: int
    name: str | None
    window: Partition


def load_funnel_bookmarks(stream_state: Mapping[str, Any]) -> dict[int, dt.date]:
    """The last settled day of each funnel, from ``bookmarks.funnels.funnels``."""
    raw = stream_state.get("funnels") or {}
    if not isinstance(raw, dict):
        msg = "bookmarks.funnels.funnels: must map funnel ids to YYYY-MM-DD days"
        raise StateError(msg)
    out: dict[int, dt.date] = {}
    for key, value in raw.items():
        try:
            out[int(key)] = dt.date.fromisoformat(str(value))
        except ValueError:
            msg = f"bookmarks.funnels.funnels.{key}: {value!r} is not a YYYY-MM-DD day"
            raise StateError(msg) from None
    return out


def dump_funnel_bookmarks(bookmarks: Mapping[int, dt.date]) -> dict[str, Any]:
    """Per funnel, the last day settled; ``date`` is the replication key of the rows."""
    return {
        "replication_key": "date",
        "funnels": {str(k): v.isoformat() for k, v in sorted(bookmarks.items())},
    }


def plan_funnel_windows(
    funnels: Iterable[tuple[int, str | None]],
    bookmarks: Mapping[int, dt.date],
    *,
    start: dt.date,
    end: dt.date,
    window_days: int,
    lookback_days: int,
) -> list[FunnelWindow]:
    """Every funnel from its bookmark (less the look-back, never before ``start``) to ``end``.

    ``lookback_days`` is the longer of the late-data look-back and the conversion window.
    """
    plan: list[FunnelWindow] = []
    for funnel_id, name in funnels:
        first = start
        if funnel_id in bookmarks:
            first = max(start, bookmarks[funnel_id] + ONE_DAY - dt.timedelta(days=lookback_days))
        for window in split_date_range(first, end, window_days):
            plan.append(FunnelWindow(funnel_id, name, window))
    return plan


def settled(window: Partition, today: dt.date) -> dt.date:
    """The last day of a window that will not change any more: never today."""
    return min(window.to_date, today - ONE_DAY)


class FunnelsStream(QueryStream):
    """Saved funnels, one row per funnel and day."""

    name = "funnels"
    primary_keys = ("funnel_id", "date")
    replication_key = "date"
    is_sorted = False
    selected_by_default = False  # one query per funnel and window, against 60 an hour

    schema = th.PropertiesList(
        th.Property("funnel_id", th.IntegerType, required=True, description="Saved funnel id"),
        th.Property("date", th.DateType, required=True, description="The day (project timezone)"),
        th.Property("name", th.StringType, description="The funnel's name"),
        th.Property(
            "steps",
            th.ArrayType(th.ObjectType(additional_properties=True)),
            description="Per step: count, conversion ratios, average times, event, goal",
        ),
        th.Property(
            "analysis",
            th.ObjectType(additional_properties=True),
            description="completion, starting_amount, steps, worst",
        ),
    ).to_dict()

    @override
    def read(self) -> Iterable[dict[str, Any]]:
        """Plan the windows of every funnel; emit each whole, then its funnel's bookmark."""
        api, settings = self.api, self.settings
        bookmarks = load_funnel_bookmarks(self.stream_state)
        funnels = guarded(
            self.outcome, "funnels/list", lambda: api.call("funnels/list", list_of(api))
        )
        if funnels is None:
            return
        today = today_in(settings.project_timezone)
        reread = max(settings.lookback_days, settings.funnels_conversion_window_days)
        plan = plan_funnel_windows(
            ((f.funnel_id, f.name) for f in funnels),
            bookmarks,
            start=settings.start_date,
            end=settings.end_for(today),
            window_days=settings.funnels_window_days,
            lookback_days=reread,
        )
        self.logger.info(
            "funnels: %d funnels, %d requests (the last %d days before each bookmark read again:"
            " lookback_days %d, funnels_conversion_window_days %d)",
            len(funnels),
            len(plan),
            reread,
            settings.lookback_days,
            settings.funnels_conversion_window_days,
        )
        rows = 0
        failed: dict[int, str] = {}
        moved: set[int] = set()
        for planned, answer in ordered(api, plan, settings.query_max_workers, skip=failed):
            if planned.funnel_id in failed:
                continue
            if isinstance(answer, ExportError):
                what = f"funnel {planned.funnel_id} {planned.window}: {answer.message}"
                if answer.fatal:
                    self.outcome.fatal = what
                    self._report_failures(failed, moved, len(funnels))
                    return
                self.logger.error("%s; its bookmark stays where it was", what)
                failed[planned.funnel_id] = what
                continue
            for day, values in sorted(answer.data.items()):
                rows += 1
                yield {
                    "funnel_id": planned.funnel_id,
                    "date": day,
                    "name": planned.name,
                    "steps": values.steps,
                    "analysis": values.analysis,
                }
            done = settled(planned.window, today)
            if done >= planned.window.from_date or planned.funnel_id not in bookmarks:
                previous = bookmarks.get(planned.funnel_id)
                bookmarks[planned.funnel_id] = done if previous is None else max(previous, done)
                self.publish_state(dump_funnel_bookmarks(bookmarks))
                moved.add(planned.funnel_id)
        self._report_failures(failed, moved, len(funnels))
        self.outcome.summary = f"funnels finished: {rows} rows of {len(funnels)} funnels" + (
            f", {len(failed)} failed" if failed else ""
        )

    def _report_failures(self, failed: Mapping[int, str], moved: set[int], funnels: int) -> None:
        """Which funnels failed, and which bookmarks this run moved."""
        if moved:
            self.outcome.kept = "the failed funnels' bookmarks are unchanged (the others moved on)"
        if failed:
            self.outcome.failed = f"{len(failed)} of {funnels} funnels failed: " + "; ".join(
                failed.values()
            )


def list_of(api: QueryApi) -> Any:
    """The attempt that reads ``funnels/list``."""

    def attempt() -> list[_Funnel]:
        url = query_url(api.settings, "funnels/list")
        body = fetch_body(api.sessions.get(), api.settings, url, api.stop_event)
        return decode(body, list[_Funnel], "funnels/list")

    return attempt


def ordered(
    api: QueryApi, plan: list[FunnelWindow], workers: int, skip: Container[int] = ()
) -> Iterator[tuple[FunnelWindow, _Answer | ExportError]]:
    """Each window's answer (or the error that ended its retries), in plan order, fetched up
    to ``workers`` at once and at most twice that many ahead; stops quietly on a signal.

    Windows of a funnel in ``skip`` (a set the caller fills as funnels fail) are not fetched
    from then on."""
    settings = api.settings

    def fetch(planned: FunnelWindow) -> _Answer | ExportError:
        params = {
            "funnel_id": str(planned.funnel_id),
            "from_date": planned.window.from_date.isoformat(),
            "to_date": planned.window.to_date.isoformat(),
            "unit": "day",
        }
        what = f"funnel {planned.funnel_id} {planned.window}"

        def attempt() -> _Answer:
            url = query_url(settings, "funnels")
            body = fetch_body(api.sessions.get(), settings, url, api.stop_event, params=params)
            return decode(body, _Answer, what)

        try:
            return api.call(what, attempt)
        except ExportError as exc:
            return exc

    try:
        yield from in_order(
            api.loop,
            plan,
            lambda _, planned: fetch(planned),
            workers=workers,
            stop=api.stop_event,
            skip=lambda planned: planned.funnel_id in skip,
        )
    except StopRequested:
        return

"""Typed, validated settings.

The SDK checks each setting's JSON-schema type; this module checks what a schema cannot say
(exactly one auth method, a real IANA timezone, dates in order) and turns the loose config
mapping into one frozen value that the rest of the tap reads. Every error is one line that
names the setting and what to do.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from singer_sdk import typing as th

REGION_HOSTS = {
    "us": "https://data.mixpanel.com",
    "eu": "https://data-eu.mixpanel.com",
    "in": "https://data-in.mixpanel.com",
}
EXPORT_PATH = "/api/2.0/export"
#: Hosts of the Query API (``/api/query``), the App API (``/api/app``) and the legacy
#: ``/api/2.0`` paths, per data residency.
QUERY_HOSTS = {
    "us": "https://mixpanel.com",
    "eu": "https://eu.mixpanel.com",
    "in": "https://in.mixpanel.com",
}


#: The one source of every setting: name, type, default, bounds and description. The SDK
#: validates the config against it and ``--about`` prints it; :class:`Settings` takes its
#: defaults and bounds from it; meltano.yml, the Hub file and the README are checked against it
#: by tests.
CONFIG_SCHEMA: dict[str, Any] = th.PropertiesList(
    th.Property(
        "service_account_username",
        th.StringType,
        description="Service account username (HTTP Basic user)",
    ),
    th.Property(
        "service_account_secret",
        th.StringType,
        secret=True,
        description="Service account secret (HTTP Basic password)",
    ),
    th.Property(
        "project_id",
        th.IntegerType(minimum=1),
        description="Mixpanel project id; required with a service account",
    ),
    th.Property(
        "api_secret",
        th.StringType,
        secret=True,
        description="Legacy project API secret (deprecated by Mixpanel)",
    ),
    th.Property(
        "region",
        th.StringType(allowed_values=["us", "eu", "in"]),
        default="us",
        description="Data residency: us (data.mixpanel.com), eu or in",
    ),
    th.Property(
        "api_url",
        th.StringType,
        description="Base URL override (proxies, tests) for every API: {api_url}/api/2.0/export,"
        " {api_url}/api/query/..., {api_url}/api/app/...",
    ),
    th.Property(
        "start_date",
        th.StringType,
        required=True,
        description="First day to export (inclusive); a date or an ISO 8601 date-time",
    ),
    th.Property(
        "end_date",
        th.StringType,
        description="Last day to export (inclusive); default and maximum: today",
    ),
    th.Property(
        "project_timezone",
        th.StringType,
        default="UTC",
        description="IANA timezone of export dates and `time`: UTC for projects created"
        " since 2023, the project's own timezone for older ones",
    ),
    th.Property(
        "partition_days",
        th.IntegerType(minimum=1, maximum=100),
        default=7,
        description="Days per export request",
    ),
    th.Property(
        "max_workers",
        th.IntegerType(minimum=1, maximum=100),
        default=10,
        description="Partitions fetched at once",
    ),
    th.Property(
        "max_requests_per_second",
        th.NumberType(exclusive_minimum=0),
        default=3,
        description="Shared request budget per second, retries included",
    ),
    th.Property(
        "max_requests_per_hour",
        th.IntegerType(minimum=1),
        default=60,
        description="Shared request budget per hour, retries included",
    ),
    th.Property(
        "lookback_days",
        th.IntegerType(minimum=0),
        default=5,
        description="On incremental runs, re-read this many days before the bookmark",
    ),
    th.Property(
        "event_names",
        th.ArrayType(th.StringType),
        description="Export only these events",
    ),
    th.Property("where", th.StringType, description="Mixpanel segmentation filter"),
    th.Property(
        "time_in_ms",
        th.BooleanType,
        default=False,
        description="Ask Mixpanel for millisecond `time` values",
    ),
    th.Property(
        "request_timeout",
        th.NumberType(exclusive_minimum=0),
        default=600,
        description="Seconds per request, streaming included",
    ),
    th.Property(
        "max_retries",
        th.IntegerType(minimum=0),
        default=5,
        description="Attempts per partition beyond the first",
    ),
    th.Property(
        "max_spool_mb",
        th.IntegerType(minimum=1),
        default=4096,
        description="Bound on spool files in TMPDIR, in MiB;"
        " fetching ahead waits while it is reached",
    ),
    th.Property(
        "rate_limit_wait",
        th.NumberType(exclusive_minimum=0),
        default=30,
        description="Seconds every worker waits after a 429 without Retry-After, doubled for"
        " each such pause in a row (at most 10x)",
    ),
    th.Property(
        "sanitize_text",
        th.BooleanType,
        default=False,
        description="Replace NUL characters (at any depth of properties, keys included) and"
        " invalid UTF-8 with U+FFFD, which PostgreSQL can store; when off, properties stay byte"
        " for byte",
    ),
    th.Property(
        "batch_messages",
        th.BooleanType,
        default=False,
        description="Send each finished partition as Singer SDK BATCH files (JSONL) instead of"
        " RECORD messages; only for loaders that read BATCH (SDK targets such as"
        " target-postgres)",
    ),
    th.Property(
        "batch_dir",
        th.StringType,
        description="Folder for BATCH files (default: tap-mixpanel-parallel.batches in the"
        " system temporary folder); a run removes the files earlier runs left there",
    ),
    th.Property(
        "batch_max_records",
        th.IntegerType(minimum=1),
        default=10000,
        description="Records per BATCH file at most (the loader holds one file in memory)",
    ),
    th.Property(
        "query_max_workers",
        th.IntegerType(minimum=1, maximum=20),
        default=5,
        description="Query API requests at once (engage pages, cohorts, funnels); Mixpanel"
        " allows 5 concurrent queries per project",
    ),
    th.Property(
        "query_max_requests_per_hour",
        th.IntegerType(minimum=1),
        default=60,
        description="Query API budget per hour, retries included (Mixpanel: 60 per project)",
    ),
    th.Property(
        "query_pages_count_against_hourly_budget",
        th.BooleanType,
        default=False,
        description="Charge engage pages after the first against query_max_requests_per_hour"
        " (Mixpanel does not document that they count; 429s slow the tap down either way)",
    ),
    th.Property(
        "engage_page_size",
        th.IntegerType(minimum=1, maximum=100000),
        default=1000,
        description="Profiles per engage page (engage and cohort_members)",
    ),
    th.Property(
        "engage_full_refresh",
        th.BooleanType,
        default=False,
        description="Read every profile, ignoring the engage bookmark (deleted profiles only"
        " leave the destination's table through a full refresh)",
    ),
    th.Property(
        "funnels_window_days",
        th.IntegerType(minimum=1, maximum=90),
        default=30,
        description="Days per funnels query (one query per funnel and window)",
    ),
    th.Property(
        "funnels_conversion_window_days",
        th.IntegerType(minimum=0, maximum=366),
        default=7,
        description="Days after a day that its funnel conversions may still arrive (the"
        " funnels' conversion window; Mixpanel's default is 7): funnel days that recent are"
        " read again",
    ),
).to_dict()


class SettingsError(ValueError):
    """A setting is missing or wrong; the message names it."""


def parse_day(value: Any, setting: str) -> dt.date:
    """A date from ``YYYY-MM-DD`` or an ISO 8601 date-time, of which only the date counts.

    Meltano passes ``start_date`` either way depending on how the user wrote it.
    """
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    text = str(value).strip()
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        pass
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).date()
    except ValueError:
        msg = f"{setting}: {value!r} is not a date; use YYYY-MM-DD or an ISO 8601 date-time"
        raise SettingsError(msg) from None


def today_in(zone: dt.tzinfo, now: dt.datetime | None = None) -> dt.date:
    """Today's date where Mixpanel counts days: in the project's timezone."""
    return (now or dt.datetime.now(dt.timezone.utc)).astimezone(zone).date()


@dataclass(frozen=True)
class Settings:
    """Everything a run needs from the config, already checked."""

    authorization: str = field(repr=False)
    project_id: int | None
    export_url: str
    start_date: dt.date
    end_date: dt.date | None
    project_timezone: ZoneInfo
    partition_days: int
    max_workers: int
    max_requests_per_second: float
    max_requests_per_hour: int
    lookback_days: int
    event_names: tuple[str, ...]
    where: str | None
    time_in_ms: bool
    request_timeout: float
    max_retries: int
    max_spool_mb: int
    rate_limit_wait: float
    sanitize_text: bool
    batch_messages: bool
    batch_dir: Path
    batch_max_records: int
    #: Scheme and host of the Query, App and legacy ``/api/2.0`` APIs (or ``api_url``).
    query_host: str
    #: True with a service account; the legacy project secret reaches fewer APIs.
    service_account: bool
    query_max_workers: int
    query_max_requests_per_hour: int
    query_pages_count_against_hourly_budget: bool
    engage_page_size: int
    engage_full_refresh: bool
    funnels_window_days: int
    funnels_conversion_window_days: int
    #: Every string that must never be printed: the secret, the Authorization header and its
    #: bare base64 token (a gateway may echo it without "Basic ", and it decodes to the secret).
    secrets: tuple[str, ...] = field(default=(), repr=False)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Settings:
        """Check and convert; raises :class:`SettingsError` on the first problem."""
        authorization, project_id, secret = _auth(config)
        zone_name = config.get("project_timezone") or default_of("project_timezone")
        try:
            zone = ZoneInfo(str(zone_name))
        except (ZoneInfoNotFoundError, ValueError):
            msg = (
                f"project_timezone: {zone_name!r} is not an IANA timezone name;"
                " use e.g. 'UTC' or 'America/Los_Angeles'"
            )
            raise SettingsError(msg) from None
        if config.get("start_date") in (None, ""):
            msg = "start_date: required; set the first day to export, e.g. 2024-01-01"
            raise SettingsError(msg)
        start = parse_day(config["start_date"], "start_date")
        end = (
            None
            if config.get("end_date") in (None, "")
            else parse_day(config["end_date"], "end_date")
        )
        if end is not None and start > end:
            msg = f"start_date: {start} is after end_date {end}; swap or fix them"
            raise SettingsError(msg)
        if start > today_in(zone):
            msg = f"start_date: {start} is in the future in project_timezone {zone_name}"
            raise SettingsError(msg)
        return cls(
            authorization=authorization,
            project_id=project_id,
            export_url=_export_url(config),
            start_date=start,
            end_date=end,
            project_timezone=zone,
            partition_days=_int(config, "partition_days"),
            max_workers=_int(config, "max_workers"),
            max_requests_per_second=_positive(config, "max_requests_per_second"),
            max_requests_per_hour=_int(config, "max_requests_per_hour"),
            lookback_days=_int(config, "lookback_days"),
            event_names=_event_names(config),
            where=(str(config["where"]) if config.get("where") else None),
            time_in_ms=bool(config.get("time_in_ms", default_of("time_in_ms"))),
            request_timeout=_positive(config, "request_timeout"),
            max_retries=_int(config, "max_retries"),
            max_spool_mb=_int(config, "max_spool_mb"),
            rate_limit_wait=_positive(config, "rate_limit_wait"),
            sanitize_text=_bool(config, "sanitize_text"),
            batch_messages=_bool(config, "batch_messages"),
            batch_dir=_batch_dir(config),
            batch_max_records=_int(config, "batch_max_records"),
            query_host=_host(config, QUERY_HOSTS),
            service_account=not config.get("api_secret"),
            query_max_workers=_int(config, "query_max_workers"),
            query_max_requests_per_hour=_int(config, "query_max_requests_per_hour"),
            query_pages_count_against_hourly_budget=_bool(
                config, "query_pages_count_against_hourly_budget"
            ),
            engage_page_size=_int(config, "engage_page_size"),
            engage_full_refresh=_bool(config, "engage_full_refresh"),
            funnels_window_days=_int(config, "funnels_window_days"),
            funnels_conversion_window_days=_int(config, "funnels_conversion_window_days"),
            secrets=(secret, authorization, authorization.partition(" ")[2]),
        )

    def end_for(self, today: dt.date) -> dt.date:
        """The last day to export: ``end_date`` but never past today (Mixpanel answers 400)."""
        return today if self.end_date is None else min(self.end_date, today)


def _basic(user: str, password: str) -> str:
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def _auth(config: Mapping[str, Any]) -> tuple[str, int | None, str]:
    user = config.get("service_account_username") or ""
    secret = config.get("service_account_secret") or ""
    api_secret = config.get("api_secret") or ""
    project_id = config.get("project_id")
    if api_secret and (user or secret):
        msg = (
            "api_secret: set either api_secret or service_account_username/"
            "service_account_secret, not both"
        )
        raise SettingsError(msg)
    if api_secret:
        return _basic(str(api_secret), ""), _project_id(project_id, False), str(api_secret)
    if not user and not secret:
        msg = (
            "service_account_username: no credentials; set service_account_username,"
            " service_account_secret and project_id (or the legacy api_secret)"
        )
        raise SettingsError(msg)
    if not user:
        msg = "service_account_username: required with service_account_secret"
        raise SettingsError(msg)
    if not secret:
        msg = "service_account_secret: required with service_account_username"
        raise SettingsError(msg)
    return _basic(str(user), str(secret)), _project_id(project_id, True), str(secret)


def _project_id(value: Any, required: bool) -> int | None:
    if value in (None, ""):
        if required:
            msg = "project_id: required with a service account; copy it from project settings"
            raise SettingsError(msg)
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        msg = f"project_id: {value!r} is not a whole number"
        raise SettingsError(msg)
    try:
        number = int(value)
    except ValueError:
        msg = f"project_id: {value!r} is not a whole number"
        raise SettingsError(msg) from None
    if number < 1:
        msg = f"project_id: {value!r} must be a positive number"
        raise SettingsError(msg)
    return number


def _export_url(config: Mapping[str, Any]) -> str:
    return _host(config, REGION_HOSTS) + EXPORT_PATH


def _host(config: Mapping[str, Any], hosts: Mapping[str, str]) -> str:
    """``api_url`` when set (one override routes every API), else the region's host."""
    api_url = config.get("api_url")
    if api_url:
        url = str(api_url).rstrip("/")
        if not url.startswith(("http://", "https://")):
            msg = f"api_url: {api_url!r} must start with https:// (or http:// for a local proxy)"
            raise SettingsError(msg)
        return url
    region = str(config.get("region") or default_of("region")).lower()
    if region not in hosts:
        msg = f"region: {region!r} is not one of us, eu, in"
        raise SettingsError(msg)
    return hosts[region]


def default_of(key: str) -> Any:
    """The schema's default for a setting (None when it has none)."""
    return CONFIG_SCHEMA["properties"][key].get("default")


def _int(config: Mapping[str, Any], key: str) -> int:
    value = config.get(key)
    if value is None:
        default: int = default_of(key)
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"{key}: {value!r} is not a whole number"
        raise SettingsError(msg)
    prop = CONFIG_SCHEMA["properties"][key]
    low: int = prop["minimum"]
    high: int | None = prop.get("maximum")
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        msg = f"{key}: {value} must be {bounds}"
        raise SettingsError(msg)
    return value


def _positive(config: Mapping[str, Any], key: str) -> float:
    value = config.get(key)
    if value is None:
        return float(default_of(key))
    # The SDK reads a JSON config's fractions as Decimal.
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)) or value <= 0:
        msg = f"{key}: {value!r} must be a number above 0"
        raise SettingsError(msg)
    return float(value)


def _bool(config: Mapping[str, Any], key: str) -> bool:
    value = config.get(key)
    return bool(default_of(key) if value is None else value)


def _batch_dir(config: Mapping[str, Any]) -> Path:
    """The BATCH folder; when BATCH is on, checked writable now rather than after the fetch."""
    value = config.get("batch_dir")
    if value in (None, ""):
        path = Path(tempfile.gettempdir()) / "tap-mixpanel-parallel.batches"
    else:
        path = Path(str(value)).expanduser().absolute()
    if _bool(config, "batch_messages"):
        existing = next(p for p in (path, *path.parents) if p.exists())
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            msg = f"batch_dir: cannot create or write {str(path)!r}; choose a writable folder"
            raise SettingsError(msg)
    return path


def _event_names(config: Mapping[str, Any]) -> tuple[str, ...]:
    names = config.get("event_names")
    if names in (None, ""):
        return ()
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        msg = "event_names: must be a list of non-empty event names"
        raise SettingsError(msg)
    return tuple(names)

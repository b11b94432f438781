"""Every option of the fake server, each declared once: ``FakeMixpanel(**kwargs)`` and the flags."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

from .faults import Faults
from .options import doc

DEFAULT_SERVICE_ACCOUNT = ("svc-user", "svc-secret")


@dataclass(kw_only=True)
class ServerConfig:
    """Options beyond Mixpanel's documented surface (late events, duplicates, pacing, caching)
    are all off by default."""

    # -- dataset ----------------------------------------------------------------------------------
    start: date = field(metadata=doc("first day of the dataset"))
    days: int = field(metadata=doc("days of events from --start"))
    events_per_day: int | Callable[[date], int] = field(
        default=100,
        metadata=doc("events per day (in Python also a function of the day)", parse=int),
    )
    today: date | None = field(
        default=None,
        metadata=doc(
            "the server's today: later to_date values are refused "
            "(default: the last day of the dataset)"
        ),
    )
    timezone: str = field(
        default="UTC",
        metadata=doc(
            "project timezone; a non-UTC project sends `time` as local epoch seconds, "
            "as pre-2023 projects do"
        ),
    )
    event_bytes: int = field(
        default=590, metadata=doc("average size of an event line, newline included")
    )
    late_fraction: float = field(
        default=0.0,
        metadata=doc(
            "fraction of events that arrive 1..--late-days days late, invisible until today "
            "reaches their arrival (so add_days makes them appear in past days)"
        ),
    )
    late_days: int = field(default=3, metadata=doc("the most days an event arrives late"))
    duplicate_rate: float = field(
        default=0.0,
        metadata=doc(
            "fraction of each day's events sent twice with the same $insert_id "
            "(raw export is not deduplicated)"
        ),
    )
    awkward_events: bool = field(
        default=False,
        metadata=doc(
            "add to each day 5 events of shapes real exports have: 3 without $insert_id sharing "
            "event, distinct_id and time (two of them byte-identical), one with NUL characters "
            "nested in properties and in a key, one with invalid UTF-8 in a nested value"
        ),
    )
    # -- Query/App API dataset (see query.py) ------------------------------------------------------
    profiles: int = field(
        default=0, metadata=doc("people profiles served by engage (user-0000000, ...)")
    )
    cohorts: int = field(
        default=0, metadata=doc("cohorts (ids 101...; cohort 101+c holds every (c+2)th profile)")
    )
    funnels: int = field(default=0, metadata=doc("saved funnels (ids 7001...)"))
    annotations: int = field(default=0, metadata=doc("annotations, one a day from --start"))
    group_cohorts: int = field(
        default=0,
        metadata=doc(
            "the last N cohorts are group cohorts (data_group_id 1), whose members are group"
            " profiles company-00000... and must be queried with that data_group_id"
        ),
    )
    funnel_window_days: int = field(
        default=7,
        metadata=doc(
            "every funnel's conversion window: a day's conversions grow until this many days"
            " after it (Mixpanel's default is 7)"
        ),
    )
    annotation_extras: bool = field(
        default=False,
        metadata=doc(
            "App API annotations also carry fields beyond the documented ones (user.email,"
            " tags[].color)"
        ),
    )
    max_page_size: int = field(
        default=10_000, metadata=doc("the largest engage page_size honoured (larger is capped)")
    )
    # -- authentication ---------------------------------------------------------------------------
    service_account: tuple[str, str] | None = field(
        default=DEFAULT_SERVICE_ACCOUNT,
        metadata=doc("(username, secret) of the one service account; None accepts none", cli=False),
    )
    project_id: int = field(
        default=12345, metadata=doc("the project the service account belongs to")
    )
    api_secret: str | None = field(
        default=None,
        metadata=doc(
            "legacy project secret; without --username/--secret it disables service accounts"
        ),
    )
    # -- transport --------------------------------------------------------------------------------
    latency: float = field(
        default=0.0,
        metadata=doc(
            "seconds waited before the response headers of every request, errors included"
        ),
    )
    bytes_per_second: float | None = field(
        default=None,
        metadata=doc(
            "paces each response by its bytes on the wire (gzip-compressed when the client "
            "accepts gzip)"
        ),
    )
    throttle_payload: bool = field(
        default=False,
        metadata=doc(
            "--bytes-per-second counts payload bytes before gzip, not compressed wire bytes"
        ),
    )
    cache_bodies: bool = field(
        default=False,
        metadata=doc(
            "make each distinct healthy body once and keep it (benchmarks: measure the client)"
        ),
    )
    host: str = field(default="127.0.0.1", metadata=doc("address to listen on"))
    port: int = field(default=0, metadata=doc("port to listen on (0: any free port)"))
    # -- faults -----------------------------------------------------------------------------------
    faults: Faults = field(
        default_factory=Faults, metadata=doc("what goes wrong (see Faults)", cli=False)
    )

    def __post_init__(self) -> None:
        if self.days < 0:
            raise ValueError("days must be >= 0")
        if self.faults is None:  # FakeMixpanel(faults=None) always meant "no faults"
            self.faults = Faults()

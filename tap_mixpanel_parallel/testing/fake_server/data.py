"""The synthetic dataset: every event a pure function of (day, index), rendered fast.

A clean export of a range always returns exactly ``EventData.lines`` of it, so tests assert
exact outputs and benchmarks measure the client, not the generator.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

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

_EPOCH = date(1970, 1, 1)
ONE_DAY = timedelta(days=1)
_FRAGMENTS = 64
_TIERS = ("free", "starter", "growth", "enterprise")
_TYPICAL_HEAD = (
    '{"event":"Add to Cart","properties":{"time":1704067200,"distinct_id":"user-01234",'
    '"$insert_id":"00000000000000000000000000000000","mp_processing_time_ms":1704067200123,'
    '"plan":{"tier":"starter","seats":100},"price":499.99,'
)


@dataclass(frozen=True)
class Query:
    """Which events a request selects (hashable: it keys the body cache)."""

    from_date: date
    to_date: date
    event_names: frozenset[str] | None
    where: tuple[str, str] | None
    limit: int | None
    time_in_ms: bool


@dataclass(frozen=True)
class Snapshot:
    """The dataset as of the request's start, so ``add_days`` cannot change a response midway."""

    start: date
    last: date
    today: date
    version: int


def build_fragments(event_bytes: int) -> list[str]:
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
        if k % 3:  # identified: Mixpanel's simplified ID merge adds the user id
            props["$user_id"] = f"member-{k:04d}"
        body = json.dumps(props, ensure_ascii=False, separators=(",", ":"))[1:-1]
        # A typical head as rendered by EventData._day_lines, plus the closing "}}\n".
        size = len(_TYPICAL_HEAD) + len(body.encode()) + len(',"description":""') + 3
        pad = max(0, event_bytes - size)
        fragments.append(body + ',"description":' + json.dumps(filler[:pad]))
    return fragments


AWKWARD_NAMES = ("Server Import", "Server Import", "Server Import", "Form Submit", "Form Submit")


def awkward_lines(day: date, query: Query) -> list[bytes]:
    """Five events of shapes real exports have, at noon of ``day`` (local epoch seconds).

    Three have no ``$insert_id`` (older SDKs, server-side imports) and share event, distinct_id
    and second; the first and third are byte-identical, as a double submit is. One carries NUL
    characters (JSON ``\\u0000``) nested in properties and in a key, as user agents and form
    fields do. One has invalid UTF-8 bytes in a nested value.
    """
    second = (day - _EPOCH).days * 86400 + 43200
    time = f"{second * 1000 if query.time_in_ms else second}".encode()
    tag = day.isoformat().encode()
    lines = [
        b'{"event":"Server Import","properties":{"time":'
        + time
        + b',"distinct_id":"legacy-'
        + tag
        + b'","button":"buy","items":[1,2]}}\n',
        b'{"event":"Server Import","properties":{"time":'
        + time
        + b',"distinct_id":"legacy-'
        + tag
        + b'","button":"cancel","items":[1,2]}}\n',
        b'{"event":"Server Import","properties":{"time":'
        + time
        + b',"distinct_id":"legacy-'
        + tag
        + b'","button":"buy","items":[1,2]}}\n',
        b'{"event":"Form Submit","properties":{"time":'
        + time
        + b',"distinct_id":"nul-'
        + tag
        + b'","$insert_id":"nul-'
        + tag
        + b'","$browser":"Mozilla\\u0000",'
        b'"form":{"fields":[{"value":"a\\u0000b"}],"key\\u0000":"v"}}}\n',
        b'{"event":"Form Submit","properties":{"time":'
        + time
        + b',"distinct_id":"utf8-'
        + tag
        + b'","$insert_id":"utf8-'
        + tag
        + b'","form":{"name":"caf\xe9 \xff\xfe"}}}\n',
    ]
    if query.event_names is None:
        return lines
    return [
        line for line, name in zip(lines, AWKWARD_NAMES, strict=True) if name in query.event_names
    ]


class EventData:
    """Renders the events of a snapshot; holds the options that shape them, not the dates.

    ``timezone`` mimics pre-2023 projects: for a non-UTC project ``time`` is "local epoch"
    seconds (``datetime.utcfromtimestamp(time)`` is the local wall clock), while
    ``mp_processing_time_ms`` stays true UTC milliseconds. ``late_fraction`` of events arrive
    1..``late_days`` days late and stay invisible until ``today`` reaches their arrival day;
    ``duplicate_rate`` re-sends that fraction of each day's events with the same ``$insert_id``;
    ``awkward_events`` ends each day with :func:`awkward_lines`.
    """

    def __init__(
        self,
        *,
        events_per_day: int | Callable[[date], int],
        timezone: str,
        event_bytes: int,
        late_fraction: float,
        late_days: int,
        duplicate_rate: float,
        awkward_events: bool = False,
    ) -> None:
        self.events_per_day = events_per_day
        self._tz = None if timezone.upper() == "UTC" else ZoneInfo(timezone)
        self.late_fraction = late_fraction
        self.late_days = max(1, late_days)
        self.duplicate_rate = duplicate_rate
        self.awkward_events = awkward_events
        self._fragments = build_fragments(event_bytes)
        self._names_json = [json.dumps(name) for name in EVENT_NAMES]

    def count(self, day: date) -> int:
        per_day = self.events_per_day
        return max(0, per_day(day) if callable(per_day) else per_day)

    def estimate_lines(self, query: Query, snap: Snapshot) -> int:
        """An upper-bound-ish line count, used to place faults at a random point of the body."""
        total = 0
        day = max(query.from_date, snap.start)
        while day <= min(query.to_date, snap.last):
            total += self.count(day) + int(self.count(day) * self.duplicate_rate)
            total += len(AWKWARD_NAMES) if self.awkward_events else 0
            day += ONE_DAY
        if query.event_names is not None:
            matching = len(query.event_names & set(EVENT_NAMES))
            total = total * matching // len(EVENT_NAMES)
        if query.limit is not None:
            total = min(total, query.limit)
        return max(total, 1)

    def lines(self, query: Query, snap: Snapshot) -> Iterator[bytes]:
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
            day += ONE_DAY

    def _utc_offset(self, day: date, second: int) -> int:
        if self._tz is None:
            return 0
        local = datetime(day.year, day.month, day.day, tzinfo=self._tz) + timedelta(seconds=second)
        offset = local.utcoffset()
        return int(offset.total_seconds()) if offset is not None else 0

    def _day_lines(self, day: date, query: Query, today: date) -> Iterator[bytes]:
        """The hot loop: one random draw per event, one f-string, no dicts, no json.dumps.

        Event ``i`` of a day is built from the day RNG's ``i``-th 128-bit draw, so it depends on
        (day, index) only, not on how many events the day has.
        """
        if self.awkward_events:
            yield from awkward_lines(day, query)
        n = self.count(day)
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

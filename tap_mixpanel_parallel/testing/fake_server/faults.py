"""What goes wrong, and when: the ``Faults`` knobs and the seeded decision for one request.

Adding a fault: a field on ``Faults`` (its help becomes the flag's), a draw appended at the END of
``_Draws`` (so the sequences of existing seeds do not move), a branch in ``decide`` that returns a
``Plan``, and the endpoint acting on that plan.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from .options import doc


@dataclass
class Faults:
    """Failure knobs; every random decision derives from ``seed`` so a failing test replays.

    Rates are probabilities per export or query request. The random faults are drawn independently
    in the order 429, 5xx, stall, cut, terminated early, invalid JSON and the first one that fires
    wins; deterministic ones (``status_override``, ``fail_ranges``, ``fail_dates``,
    ``max_concurrent``) are checked before them. The draws hash (seed, from_date, to_date, attempt),
    where attempt counts the earlier well-formed, authenticated requests for that range that were
    not turned away by ``max_concurrent``, so neither thread interleaving nor how many requests
    happened to overlap changes the sequence. Mutating a ``Faults`` in place or swapping
    ``FakeMixpanel.faults`` applies to the next request.

    ``echo_credentials`` makes every 401 body repeat the ``Authorization`` header it received,
    its base64 token and the decoded ``user:secret``, as careless proxies and gateways do: a
    tap must redact whatever an error body carries before logging it.

    Mixpanel's odder answers, all deterministic: ``error_message`` words ``status_override`` as
    Mixpanel's error JSON (which echoes the request, dates included); ``throttle_first`` and
    ``drip_seconds`` act before any other fault but ``status_override``; ``gzip_trailer_cut``
    takes the first attempts of each range before the random draws; ``extra_lines`` are added
    to the body whatever else happens to it.
    """

    seed: int = field(
        default=0, metadata=doc("seed of every random fault decision, so a failing run replays")
    )
    cut_rate: float = field(
        default=0.0, metadata=doc("probability a response is cut mid-body (no terminating chunk)")
    )
    terminated_early_rate: float = field(
        default=0.0,
        metadata=doc("probability a body ends early with the line 'export terminated early'"),
    )
    invalid_json_rate: float = field(
        default=0.0, metadata=doc("probability one line of a body is broken JSON")
    )
    rate_429: float = field(default=0.0, metadata=doc("probability of a 429 (a JSON body)"))
    retry_after: float | None = field(
        default=None, metadata=doc("seconds sent as Retry-After with every 429 (none by default)")
    )
    rate_5xx: float = field(
        default=0.0, metadata=doc("probability of a 500, 502 or 503 (a plain-text body)")
    )
    stall_rate: float = field(
        default=0.0, metadata=doc("probability a response stalls, before its headers or mid-body")
    )
    stall_seconds: float = field(default=0.0, metadata=doc("how long a stall lasts"))
    max_concurrent: int | None = field(
        default=None,
        metadata=doc("export requests beyond this many in flight get a 429 (no limit by default)"),
    )
    fail_ranges: dict[tuple[str, str], int] = field(
        default_factory=dict,
        metadata=doc(
            "(from_date, to_date) -> status: a request for exactly that range always gets it",
            cli=False,
        ),
    )
    fail_dates: set[str] = field(
        default_factory=set,
        metadata=doc(
            "YYYY-MM-DD; any request covering it fails with 500 (repeatable)", flag="--fail-date"
        ),
    )
    status_override: int | None = field(
        default=None, metadata=doc("every export request gets this status, before authentication")
    )
    expire_sessions: int = field(
        default=0,
        metadata=doc(
            "the first N engage sessions expire after --expire-after-pages later pages: the next"
            " page of such a session gets a 400 naming the session"
        ),
    )
    expire_after_pages: int = field(
        default=1, metadata=doc("later pages an expiring engage session serves before it expires")
    )
    echo_credentials: bool = field(
        default=False,
        metadata=doc("401 bodies repeat the credentials received (to test a tap's redaction)"),
    )
    echo_padding: int = field(
        default=0,
        metadata=doc("spaces before the echoed credentials, to push them across a read limit"),
    )
    error_message: str | None = field(
        default=None,
        metadata=doc(
            "with status_override: the body is Mixpanel's error JSON, echoing the request"
            ' ({"request": path?query, "error": this text})'
        ),
    )
    throttle_first: int = field(
        default=0, metadata=doc("the first N export requests get a 429 (with retry_after if set)")
    )
    drip_seconds: float | None = field(
        default=None,
        metadata=doc("a 200 with Content-Length whose body comes one byte every this many seconds"),
    )
    drip_headers: bool = field(
        default=False, metadata=doc("with drip_seconds, the status line and headers drip too")
    )
    gzip_trailer_cut: int = field(
        default=0,
        metadata=doc(
            "the first N attempts of a range end their gzip body halfway, cleanly but without"
            " the gzip trailer"
        ),
    )
    extra_lines: dict[str, list[str]] = field(
        default_factory=dict,
        metadata=doc(
            "YYYY-MM-DD -> raw lines (newline added) appended to any export covering that day",
            cli=False,
        ),
    )
    query_statuses: dict[str, int] = field(
        default_factory=dict,
        metadata=doc(
            "Query/App API path, or path?name=value -> status: every matching request gets it,"
            ' as Mixpanel words it ({"error": ..., "status": "error"})',
            cli=False,
        ),
    )


@dataclass
class Plan:
    """Positions are fractions of the expected body, resolved once its size is known."""

    fault: str | None = None
    status: int | None = None
    stall_before: bool = False
    stall_at: float | None = None
    cut_at: float | None = None
    cut_in_line: float = 0.0
    terminate_at: float | None = None
    invalid_at: float | None = None
    gzip_cut_at: float | None = None


class _Draws(NamedTuple):
    """Every draw is taken on every attempt, so enabling one fault never reshuffles the others.

    New draws go at the end: the values of the existing ones then stay the same for a seed.
    """

    r429: float
    r5xx: float
    code: float
    rstall: float
    where_stall: float
    rcut: float
    cut_at: float
    cut_in: float
    rterm: float
    term_at: float
    rbad: float
    bad_at: float


def decide(
    faults: Faults,
    key: tuple[str, ...],
    *,
    in_flight: int,
    next_attempt: Callable[[tuple[str, ...]], int],
    dates: tuple[str, str] | None = None,
) -> Plan:
    """Same seed, same sequence per ``key``, whatever the thread interleaving.

    ``dates`` is the inclusive (from, to) range a request covers, for ``fail_ranges`` and
    ``fail_dates``; ``next_attempt`` counts the attempts per key (reset by ``reset_stats``).
    """
    if dates is not None:
        status = faults.fail_ranges.get(dates)
        if status is not None:
            return Plan(fault="fail_range", status=status)
        if any(dates[0] <= day <= dates[1] for day in faults.fail_dates):
            return Plan(fault="fail_date", status=500)
    if faults.max_concurrent is not None and in_flight > faults.max_concurrent:
        # Not an attempt: how many requests overlap depends on timing, and counting them
        # would make the random faults below depend on it too.
        return Plan(fault="concurrency", status=429)
    attempt = next_attempt(key)
    if attempt < faults.gzip_trailer_cut:
        return Plan(fault="gzip_trailer_cut", gzip_cut_at=0.5)
    seed = hashlib.sha256("|".join((str(faults.seed), *key, str(attempt))).encode()).digest()
    rng = random.Random(int.from_bytes(seed, "big"))
    d = _Draws(*(rng.random() for _ in _Draws._fields))
    if d.r429 < faults.rate_429:
        return Plan(fault="429", status=429)
    if d.r5xx < faults.rate_5xx:
        return Plan(fault="5xx", status=(500, 502, 503)[min(int(d.code * 3), 2)])
    if d.rstall < faults.stall_rate:
        before = d.where_stall < 0.5
        return Plan(
            fault="stall",
            stall_before=before,
            stall_at=None if before else (d.where_stall - 0.5) * 2,
        )
    if d.rcut < faults.cut_rate:
        return Plan(fault="cut", cut_at=d.cut_at, cut_in_line=d.cut_in)
    if d.rterm < faults.terminated_early_rate:
        return Plan(fault="terminated_early", terminate_at=d.term_at)
    if d.rbad < faults.invalid_json_rate:
        return Plan(fault="invalid_json", invalid_at=d.bad_at)
    return Plan()


def hit(target: int | None, index: int, last: bool) -> bool:
    """Fire at ``target`` or, if the body turned out shorter than estimated, at its last line."""
    return target is not None and (index == target or (last and index < target))

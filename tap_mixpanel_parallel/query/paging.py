"""How an engage query splits into pages, and whether a page came back whole (pure).

Mixpanel's engage answers page 0 with ``session_id``, ``total`` and ``page_size``; every other
page of that session is addressed by ``session_id`` and ``page`` and can be fetched at the same
time (Mixpanel's own client does). ``total`` may be approximate, so the documented rule, fetch
on while a page is full, decides when a session really ends. Without ``total`` pages are asked
for a window ahead, while none has come back short.

Pages of one session are a fixed split of one result, so only the last non-empty page may be
short and no profile may come twice; a session that breaks either rule (a short middle page, a
split that shifted under concurrent writes) cannot promise every profile once, and its query is
read again.
"""

from __future__ import annotations

from array import array
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Session:
    """What page 0 said about the whole query."""

    session_id: str
    page_size: int
    total: int
    #: False when page 0 carried no ``total`` (``total`` is then page 0's count).
    total_known: bool = True

    @property
    def planned_pages(self) -> int:
        """Pages to ask for at once: those ``total`` promises (page 0 always exists), and one
        more when the last of them would be full. ``total`` may be short, and a full last page
        means asking for the next one anyway; asked for with the others, it costs no extra
        round trip."""
        pages = page_count(self.total, self.page_size)
        if self.total > 0 and self.total % self.page_size == 0:
            pages += 1
        return pages


def page_count(total: int, page_size: int) -> int:
    """``ceil(total / page_size)``, at least 1."""
    if page_size < 1:
        return 1
    return max(1, -(-max(total, 0) // page_size))


def is_short(count: int, page_size: int) -> bool:
    """A page that ends its session: fewer profiles than a full page (any page, when the page
    size is not a size Mixpanel sends, so that paging ends rather than loops)."""
    return page_size < 1 or count < page_size


def pages_to_add(
    known_pages: int,
    received: Collection[int],
    *,
    short_seen: bool,
    open_ended: bool,
    window: int,
) -> int:
    """How many pages to ask for beyond the ``known_pages`` already asked for, given the pages
    ``received`` so far.

    None once a page came back short (``short_seen``: the end, or a broken split that
    :func:`broken_split` reports). Without ``total`` (``open_ended``), enough to keep
    ``window`` pages in flight; with it, the next page once the last one asked for came back
    full.
    """
    if short_seen:
        return 0
    if open_ended:
        return max(0, window - (known_pages - len(received)))
    return 1 if known_pages - 1 in received else 0


def broken_split(counts: Mapping[int, int], page_size: int) -> str | None:
    """What is wrong with a session's complete pages, or None when they are a whole split:
    every page before the first short one full, every page after it empty."""
    first_short: int | None = None
    for page in sorted(counts):
        count = counts[page]
        if first_short is not None and count > 0:
            return (
                f"page {first_short} held {counts[first_short]} profiles, not a full page of"
                f" {page_size}, yet page {page} after it held {count}"
            )
        if first_short is None and count < page_size:
            first_short = page
    return None


def repeated_keys(pages: Iterable[array[int]]) -> int:
    """How many profile keys (:func:`~tap_mixpanel_parallel.query.records.profile_key`) occur
    more than once across ``pages``.

    Keys are bucketed by their top byte first, so memory holds the keys (8 bytes a profile)
    and one bucket's set at a time, not a set of every profile.
    """
    buckets: list[array[int]] = [array("Q") for _ in range(256)]
    for keys in pages:
        for key in keys:
            buckets[key >> 56].append(key)
    return sum(len(bucket) - len(set(bucket)) for bucket in buckets)

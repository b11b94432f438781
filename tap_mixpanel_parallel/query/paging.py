"""How an engage query splits into pages, and whether a page came back whole (pure).

Mixpanel's engage answers page 0 with ``session_id``, ``total`` and ``page_size``; every other
page of that session is addressed by ``session_id`` and ``page`` and can be fetched at the same
time (Mixpanel's own client does). ``total`` may be approximate, so the documented rule, fetch
on while a page is full, decides when a session really ends.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Session:
    """What page 0 said about the whole query."""

    session_id: str
    page_size: int
    total: int

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


def next_page_needed(last_page: int, last_count: int, page_size: int, known_pages: int) -> bool:
    """True when the last known page came back full: Mixpanel's documented rule is to keep
    asking while ``len(results) >= page_size``, whatever ``total`` said."""
    return last_page == known_pages - 1 and page_size > 0 and last_count >= page_size


def short_page(page: int, count: int, session: Session, known_pages: int) -> bool:
    """A page before the last that holds fewer profiles than a full page.

    Within one session pages are a fixed split of one result, so only the last may be short;
    a short one elsewhere is worth a warning (nothing is lost from what Mixpanel returned,
    but Mixpanel's split is not what its own numbers said).
    """
    return page < known_pages - 1 and count < session.page_size

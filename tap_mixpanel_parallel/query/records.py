"""From one engage page (a JSON body) to Singer records (worker threads).

A profile's ``$properties`` is carried through as the exact bytes Mixpanel sent
(``msgspec.Raw``), as ``events.properties`` is: nested values stay nested, nothing is re-typed.
Only ``$last_seen`` is decoded from it, for the column and the bookmark.
"""

from __future__ import annotations

import datetime as dt
from array import array
from dataclasses import dataclass, field
from typing import IO, Any

import msgspec

from tap_mixpanel_parallel.query.state import later, parse_last_seen
from tap_mixpanel_parallel.run.text import (
    TEXT_DECODE_ERRORS,
    decode_text,
    is_utf8,
    replace_invalid_utf8,
    sanitize_line,
)


class _Profile(msgspec.Struct):
    distinct_id: Any = msgspec.field(name="$distinct_id", default=None)
    properties: msgspec.Raw = msgspec.field(name="$properties", default=msgspec.Raw(b"{}"))


class _Page(msgspec.Struct):
    results: list[_Profile] | None = None
    session_id: str | None = None
    page: int | None = None
    page_size: int | None = None
    total: int | None = None
    status: str | None = None
    error: str | None = None


class _RawProfile(msgspec.Struct):
    properties: msgspec.Raw = msgspec.field(name="$properties", default=msgspec.Raw(b"{}"))


class _RawPage(msgspec.Struct):
    """A page read without decoding any string, so invalid UTF-8 cannot stop it."""

    results: list[_RawProfile] | None = None


class _LastSeen(msgspec.Struct):
    last_seen: Any = msgspec.field(name="$last_seen", default=None)


_page_decoder = msgspec.json.Decoder(_Page)
_raw_page_decoder = msgspec.json.Decoder(_RawPage)
_last_seen_decoder = msgspec.json.Decoder(_LastSeen)
_encoder = msgspec.json.Encoder()


_KEY_MASK = (1 << 64) - 1


class PageMalformed(ValueError):
    """The body is JSON but not an engage page."""


class PageRefused(ValueError):
    """The body is Mixpanel's JSON saying the query failed (``"status": "error"``), whatever
    else it carries: an empty ``results`` beside it is not an empty page."""

    def __init__(self, said: str) -> None:
        super().__init__(said)
        self.said = said


def profile_key(distinct_id: str) -> int:
    """A 64-bit digest of a ``distinct_id``: eight bytes a profile are enough to tell whether a
    query served one twice (two ids share one with odds of about 1 in 10^7 at 10^6 profiles;
    then the query is only read once more). Python's own string hash: keys are only compared
    within one run (one process), and it costs a fraction of a cryptographic digest."""
    return hash(distinct_id) & _KEY_MASK


@dataclass(frozen=True)
class PageWritten:
    """What a worker learnt from one page it wrote to its spool file."""

    count: int
    max_last_seen: dt.datetime | None
    # What the page says about its session (page 0 carries all three).
    session_id: str | None = None
    page_size: int | None = None
    total: int | None = None
    #: :func:`profile_key` of each profile of the page.
    keys: array[int] = field(default_factory=lambda: array("Q"))


def _decode_page(body: bytes) -> _Page:
    """The page; msgspec.DecodeError on a cut body.

    Invalid UTF-8 (``sanitize_text`` off) becomes U+FFFD in ``distinct_id`` and the other
    decoded fields, and ``$properties`` stay the bytes Mixpanel sent, as for events.
    """
    try:
        return _page_decoder.decode(body)
    except TEXT_DECODE_ERRORS:
        if is_utf8(body):
            raise  # a cut or foreign body, not bad text
    page = _page_decoder.decode(replace_invalid_utf8(body))
    raw = _raw_page_decoder.decode(body)
    for profile, sent in zip(page.results or [], raw.results or [], strict=True):
        profile.properties = sent.properties
    return page


def _last_seen(properties: msgspec.Raw) -> Any:
    return decode_text(_last_seen_decoder.decode, properties).last_seen


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


class ProfileEncoder:
    """Writes the records of one page: whole Singer RECORD lines, or bare records.

    ``extra`` holds columns every record of the query shares (``cohort_id`` of a cohort's
    members); ``with_profile`` False keeps only the keys (cohort members, which refer to
    ``engage`` for the profile itself).
    """

    def __init__(
        self,
        stream: str,
        *,
        as_messages: bool,
        extra: dict[str, Any] | None = None,
        with_profile: bool = True,
        sanitize: bool = False,
    ) -> None:
        self.stream = stream
        self.as_messages = as_messages
        self.extra = extra or {}
        self.with_profile = with_profile
        self.sanitize = sanitize

    def write_page(self, body: bytes, sink: IO[bytes], time_extracted: str) -> PageWritten:
        """Decode a whole page and write its records; raises on a cut or foreign body.

        With ``sanitize`` (setting ``sanitize_text``), NULs and invalid UTF-8 anywhere in the
        page become U+FFFD first, as for events: PostgreSQL stores neither.
        """
        if self.sanitize:
            body = sanitize_line(body)
        page = _decode_page(body)  # msgspec.DecodeError on a cut body
        if page.status != "ok":
            said = page.error or (f"status {page.status!r}" if page.status else "no status")
            raise PageRefused(_text(said))
        if page.results is None:
            msg = "the engage answer has no results list"
            raise PageMalformed(msg)
        newest: dt.datetime | None = None
        write = sink.write
        keys: array[int] = array("Q")
        for profile in page.results:
            record: dict[str, Any] = dict(self.extra)
            record["distinct_id"] = distinct_id = _text(profile.distinct_id)
            keys.append(profile_key(distinct_id))
            if self.with_profile:
                seen = parse_last_seen(_last_seen(profile.properties))
                newest = later(newest, seen)
                record["last_seen"] = None if seen is None else seen.isoformat()
                record["properties"] = profile.properties
            if self.as_messages:
                message = {
                    "type": "RECORD",
                    "stream": self.stream,
                    "record": record,
                    "time_extracted": time_extracted,
                }
                write(_encoder.encode(message) + b"\n")
            else:
                write(_encoder.encode(record) + b"\n")
        return PageWritten(
            len(page.results), newest, page.session_id, page.page_size, page.total, keys
        )

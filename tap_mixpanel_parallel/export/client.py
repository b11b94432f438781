"""Mixpanel's raw export endpoint: one partition's body, streamed as lines (worker threads).

The body is streamed and split into lines as it arrives; nothing holds a whole response in
memory.
"""

from __future__ import annotations

import json
import threading
import zlib
from collections.abc import Iterable, Iterator

import requests
import urllib3

from tap_mixpanel_parallel.http.errors import StreamCut, TransientError
from tap_mixpanel_parallel.http.session import (
    CONNECT_TIMEOUT_SECONDS,
    Watchdog,
    status_error,
    timed_out,
    transport_error,
)
from tap_mixpanel_parallel.run.dates import Partition
from tap_mixpanel_parallel.settings import Settings

CHUNK_BYTES = 256 * 1024
#: zlib's window bits for a gzip stream with its header and trailer.
GZIP_WBITS = 16 + zlib.MAX_WBITS
#: What the export endpoint is asked to answer with (JSONL).
EXPORT_ACCEPT = "text/plain"


def export_params(settings: Settings, partition: Partition) -> dict[str, str]:
    """Query parameters for one partition; both dates inclusive, as Mixpanel reads them."""
    params = {
        "from_date": partition.from_date.isoformat(),
        "to_date": partition.to_date.isoformat(),
    }
    if settings.project_id is not None:
        params["project_id"] = str(settings.project_id)
    if settings.event_names:
        params["event"] = json.dumps(list(settings.event_names))
    if settings.where:
        params["where"] = settings.where
    if settings.time_in_ms:
        params["time_in_ms"] = "true"
    return params


def export_lines(
    session: requests.Session, settings: Settings, partition: Partition, stop: threading.Event
) -> Iterator[bytes]:
    """Complete lines of the partition's export, newline stripped.

    Raises :class:`StreamCut` when the body ends without a final newline (a cut at a random
    byte) or a gzip body ends before its trailer, and a :class:`TransientError` on resets,
    timeouts and gzip errors, so the caller can discard what it received and try again.
    ``request_timeout`` bounds the whole request by the wall clock: a server that drips a byte
    at a time gets its connection closed at the deadline.
    """
    timeout = settings.request_timeout
    with Watchdog(timeout) as watchdog:
        try:
            response = session.get(
                settings.export_url,
                params=export_params(settings, partition),
                stream=True,
                timeout=(min(CONNECT_TIMEOUT_SECONDS, timeout), timeout),
            )
        except requests.RequestException as exc:
            if watchdog.fired.is_set():
                raise timed_out(timeout) from None
            raise transport_error(exc, settings.secrets) from None
        with response:
            if response.status_code != 200:
                raise status_error(response, settings.secrets, settings.project_id)
            try:
                yield from split_lines(_body(response, stop))
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                if watchdog.fired.is_set():
                    raise timed_out(timeout) from None
                raise transport_error(exc, settings.secrets) from None
            except StreamCut:
                if watchdog.fired.is_set():
                    raise timed_out(timeout) from None
                raise
            if watchdog.fired.is_set():
                raise timed_out(timeout)


def _body(response: requests.Response, stop: threading.Event) -> Iterator[bytes]:
    """The decoded body in chunks; a gzip body must end with its trailer to count as whole.

    urllib3's decoder takes a gzip stream cut at a clean chunk boundary as complete, so gzip is
    decoded here, where the decompressor can tell.
    """
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    gzipped = encoding in ("gzip", "x-gzip")
    raw = response.raw.stream(CHUNK_BYTES, decode_content=not gzipped)
    decoder = GzipMembers() if gzipped else None
    for chunk in raw:
        if stop.is_set():
            msg = "stopping: partition abandoned"
            raise StreamCut(msg)
        if decoder is None:
            yield chunk
        else:
            yield from decoder.feed(chunk)
    if decoder is not None:
        decoder.finish()


class GzipMembers:
    """Decompresses a gzip body of one or more members and knows whether it ended whole."""

    def __init__(self, piece_bytes: int = CHUNK_BYTES) -> None:
        self._member = zlib.decompressobj(GZIP_WBITS)
        self._piece = piece_bytes
        self._fed = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        """What ``data`` decompresses to, in pieces of at most ``piece_bytes``.

        Bounded pieces keep memory flat whatever the compression ratio. Raises
        :class:`TransientError` on corrupt input.
        """
        try:
            while data:
                self._fed = True
                piece = self._member.decompress(data, self._piece)
                if piece:
                    yield piece
                if not self._member.eof:
                    data = self._member.unconsumed_tail
                    continue
                data = self._member.unused_data
                if data:
                    self._member = zlib.decompressobj(GZIP_WBITS)
        except zlib.error as exc:
            msg = f"the gzip body is corrupt ({exc})"
            raise TransientError(msg) from None

    def finish(self) -> None:
        """Raise :class:`StreamCut` unless the last member ended with its trailer."""
        if self._fed and not self._member.eof:
            msg = "the gzip body ended before its trailer (cut stream)"
            raise StreamCut(msg)


def split_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Whole lines from chunks cut anywhere; raises :class:`StreamCut` on a final partial line.

    The pieces of a line longer than a chunk are kept in a list and joined once, when its
    newline arrives: each byte is copied a bounded number of times, so a line of 100 MB costs
    no more per byte than a line of 1 KB.
    """
    pending: list[bytes] = []
    for chunk in chunks:
        if b"\n" not in chunk:
            if chunk:
                pending.append(chunk)
            continue
        lines = chunk.split(b"\n")
        if pending:
            pending.append(lines[0])
            lines[0] = b"".join(pending)
            pending.clear()
        tail = lines.pop()
        if tail:
            pending.append(tail)
        yield from lines
    if any(piece.strip() for piece in pending):
        msg = "the stream ended in the middle of a line (cut stream)"
        raise StreamCut(msg)

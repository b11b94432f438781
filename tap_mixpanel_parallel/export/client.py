"""Mixpanel's raw export endpoint: one partition's body, streamed as lines (worker threads).

The body is streamed and split into lines as it arrives; nothing holds a whole response in
memory.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import requests

from tap_mixpanel_parallel.export.partitions import Partition
from tap_mixpanel_parallel.http.errors import StreamCut, TransientError
from tap_mixpanel_parallel.http.session import (
    CONNECT_TIMEOUT_SECONDS,
    status_error,
    transport_error,
)
from tap_mixpanel_parallel.settings import Settings

CHUNK_BYTES = 256 * 1024
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
    byte) and a :class:`TransientError` on resets, timeouts and gzip errors, so the caller can
    discard what it received and try again.
    """
    timeout = settings.request_timeout
    deadline = time.monotonic() + timeout
    try:
        response = session.get(
            settings.export_url,
            params=export_params(settings, partition),
            stream=True,
            timeout=(min(CONNECT_TIMEOUT_SECONDS, timeout), timeout),
        )
    except requests.RequestException as exc:
        raise transport_error(exc, settings.secrets) from None
    with response:
        if response.status_code != 200:
            raise status_error(response, settings.secrets, settings.project_id)
        tail = b""
        try:
            for chunk in response.iter_content(chunk_size=CHUNK_BYTES):
                if stop.is_set():
                    msg = "stopping: partition abandoned"
                    raise StreamCut(msg)
                if time.monotonic() > deadline:
                    msg = f"request_timeout of {timeout:g}s passed while streaming"
                    raise TransientError(msg)
                lines = (tail + chunk).split(b"\n")
                tail = lines.pop()
                yield from lines
        except requests.RequestException as exc:
            raise transport_error(exc, settings.secrets) from None
        if tail.strip():
            msg = "the stream ended in the middle of a line (cut stream)"
            raise StreamCut(msg)

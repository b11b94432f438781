"""Talking to Mixpanel's raw export endpoint.

One :class:`MixpanelClient` per worker thread, each with its own ``requests.Session``
(sessions are not safe to share between threads). Credentials travel only in the
``Authorization`` header, never in the URL, so no URL in a log line or an exception can leak
them. The body is streamed and split into lines as it arrives; nothing holds a whole
response in memory.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import requests

from tap_mixpanel_parallel.errors import (
    ExportError,
    StreamCut,
    TransientError,
    error_for_status,
    parse_retry_after,
    redact,
)
from tap_mixpanel_parallel.partitions import Partition
from tap_mixpanel_parallel.settings import Settings

CHUNK_BYTES = 256 * 1024
ERROR_BODY_BYTES = 4096
CONNECT_TIMEOUT_SECONDS = 30.0


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


class MixpanelClient:
    """Streams one partition's lines at a time."""

    def __init__(self, settings: Settings, user_agent: str) -> None:
        self._settings = settings
        self._session = requests.Session()
        self._session.headers.update(
            {
                "Authorization": settings.authorization,
                "Accept": "text/plain",
                "Accept-Encoding": "gzip",
                "User-Agent": user_agent,
            }
        )

    def close(self) -> None:
        """Release pooled connections."""
        self._session.close()

    def export_lines(self, partition: Partition, stop: threading.Event) -> Iterator[bytes]:
        """Complete lines of the partition's export, newline stripped.

        Raises :class:`StreamCut` when the body ends without a final newline (a cut at a
        random byte) and a :class:`TransientError` on resets, timeouts and gzip errors, so the
        caller can discard what it received and try again.
        """
        timeout = self._settings.request_timeout
        deadline = time.monotonic() + timeout
        try:
            response = self._session.get(
                self._settings.export_url,
                params=export_params(self._settings, partition),
                stream=True,
                timeout=(min(CONNECT_TIMEOUT_SECONDS, timeout), timeout),
            )
        except requests.RequestException as exc:
            raise self._transient(exc) from None
        with response:
            if response.status_code != 200:
                raise self._status_error(response)
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
                raise self._transient(exc) from None
            if tail.strip():
                msg = "the stream ended in the middle of a line (cut stream)"
                raise StreamCut(msg)

    def _status_error(self, response: requests.Response) -> ExportError:
        try:
            body = response.raw.read(ERROR_BODY_BYTES, decode_content=True) or b""
        except Exception:
            body = b""
        text = redact(body.decode("utf-8", "replace"), self._settings.secrets)
        return error_for_status(
            response.status_code,
            text,
            parse_retry_after(response.headers.get("Retry-After")),
            self._settings.project_id,
        )

    def _transient(self, exc: requests.RequestException) -> TransientError:
        kind = type(exc).__name__
        detail = redact(str(exc), self._settings.secrets)
        return TransientError(f"{kind}: {detail}")

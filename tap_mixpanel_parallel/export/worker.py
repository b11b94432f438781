"""One attempt at one partition, as a worker thread runs it: fetch, parse, spool.

Everything here runs on worker threads. It writes only to the spool file it is handed and to
its own ``requests.Session``; it never touches Singer messages or state.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import IO

from tap_mixpanel_parallel.export.client import EXPORT_ACCEPT, export_lines
from tap_mixpanel_parallel.export.partitions import PlannedPartition
from tap_mixpanel_parallel.export.records import OutOfRangeTime, RecordEncoder
from tap_mixpanel_parallel.export.runner import Attempt, Spooled
from tap_mixpanel_parallel.http.session import SessionPool
from tap_mixpanel_parallel.settings import Settings

#: Skipped events are counted in full; the reasons of only this many per partition are kept.
SKIP_NOTES = 3


class ExportWorkers:
    """The per-worker sessions and the attempt function the runner calls on each worker."""

    def __init__(self, settings: Settings, user_agent: str) -> None:
        self._settings = settings
        self._sessions = SessionPool(settings.authorization, user_agent, EXPORT_ACCEPT)

    def attempt_with(self, encoder: RecordEncoder) -> Attempt:
        """An :data:`Attempt` that spools ``encoder``'s lines for one partition."""
        settings = self._settings

        def attempt(planned: PlannedPartition, sink: IO[bytes], stop: threading.Event) -> Spooled:
            stamp = dt.datetime.now(dt.timezone.utc).isoformat()
            count = 0
            occurrences: dict[str, int] = {}  # per attempt: a retry counts from scratch
            notes: list[str] = []
            skipped = 0
            encode = encoder.encode
            write = sink.write
            lines = export_lines(self._sessions.get(), settings, planned.partition, stop)
            for line_no, line in enumerate(lines, 1):
                if line and not line.isspace():  # no per-line copy, as strip() makes
                    try:
                        write(encode(line, line_no, stamp, occurrences))
                    except OutOfRangeTime as exc:
                        skipped += 1
                        if len(notes) < SKIP_NOTES:
                            notes.append(exc.message)
                        continue
                    count += 1
            return Spooled(count, skipped, tuple(notes))

        return attempt

    def close(self) -> None:
        """Release every worker's connections."""
        self._sessions.close()

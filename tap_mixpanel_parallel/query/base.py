"""What the Query/App API streams have in common (main thread only).

A query stream never raises out of ``get_records`` for a Mixpanel error: it records what went
wrong in :attr:`QueryStream.outcome`, leaves its state as it was and returns, so the streams
after it still run; the tap turns the outcomes into a summary and an exit code.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import msgspec
from singer_sdk import Stream, metrics
from singer_sdk.helpers.conform import TypeConformanceLevel

from tap_mixpanel_parallel.output import copy_file_to_stdout
from tap_mixpanel_parallel.query.api import QueryApi
from tap_mixpanel_parallel.settings import Settings


@dataclass
class QueryOutcome:
    """How a query stream's sync ended, for the run's summary and exit code."""

    failed: str | None = None
    fatal: str | None = None
    summary: str = ""


class QueryStream(Stream):
    """A stream of the Query or App API."""

    # Profiles' ``properties`` are free-form JSON, carried as Mixpanel sent them.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.ROOT_ONLY

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outcome = QueryOutcome()
        self._record_counter: metrics.Counter | None = None

    @property
    def settings(self) -> Settings:
        """The tap's checked settings."""
        return cast("Settings", getattr(self._tap, "settings"))  # noqa: B009

    @property
    def api(self) -> QueryApi:
        """The run's Query API budget and sessions, shared by every query stream."""
        return cast("QueryApi", getattr(self._tap, "query_api"))  # noqa: B009

    def halted(self) -> bool:
        """True when an earlier stream hit a fatal error or a signal came: start nothing."""
        return bool(getattr(self._tap, "run_halted")())  # noqa: B009

    def get_record_counter(
        self,
        *,
        endpoint: str | None = None,
        log_interval: float = metrics.DEFAULT_LOG_INTERVAL,
    ) -> metrics.Counter:
        """The SDK's record counter, kept so copied spool files are counted too."""
        self._record_counter = super().get_record_counter(
            endpoint=endpoint, log_interval=log_interval
        )
        return self._record_counter

    # Bookmarks are set once a whole query was emitted (see query/state.py), never from
    # record values as they pass.
    def _increment_stream_state(self, *args: Any, **kwargs: Any) -> None:
        return

    def get_replication_key_signpost(self, context: Any = None) -> None:
        """No signpost: the bookmark never comes from record values."""
        return

    def publish_state(self, value: dict[str, Any]) -> None:
        """Replace the stream's bookmark and write STATE now."""
        stream_state = self.stream_state
        stream_state.clear()
        stream_state.update(value)
        self.state_manager.is_flushed = False
        self._write_state_message()

    def emit_spool(self, paths: list[Path], records: int, fast: bool) -> Iterator[dict[str, Any]]:
        """Send spooled pages in order: copied as RECORD lines, or yielded for the SDK."""
        for path in paths:
            if fast:
                copy_file_to_stdout(path)
            else:
                with open(path, "rb") as fh:
                    for line in fh:
                        yield cast("dict[str, Any]", msgspec.json.decode(line))
        if fast and self._record_counter is not None:
            self._record_counter.increment(records)

"""What every stream of this tap shares on the main thread.

Each stream fetches on worker threads into spool files and emits whole units (a partition, a
query) from the main thread, followed by STATE. So each may copy pre-encoded RECORD lines
straight to stdout when nothing would change a record, counts what it copies in the SDK's
record counter, and sets its bookmark itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from singer_sdk import Tap, metrics
from singer_sdk.helpers.conform import TypeConformanceLevel

from tap_mixpanel_parallel.compat import override
from tap_mixpanel_parallel.sdk_seams import PartitionBookmarks, records_pass_through
from tap_mixpanel_parallel.settings import Settings


class SpooledStream(PartitionBookmarks):
    """A stream whose records come from spool files and whose bookmark is set per unit."""

    # Free-form JSON (``properties``) is carried as Mixpanel sent it: walking it per record to
    # conform types would cost more than the whole export and could only change values users
    # asked to keep as they are.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.ROOT_ONLY

    def __init__(self, tap: Tap, settings: Callable[[], Settings]) -> None:
        super().__init__(tap=tap)
        self._owner = tap
        self._settings = settings
        self._record_counter: metrics.Counter | None = None

    @property
    def settings(self) -> Settings:
        """The tap's checked settings."""
        return self._settings()

    def start(self, *, ahead: bool = False) -> None:
        """Start fetching before the stream's turn to be written out (main thread).

        The tap calls it for ``events`` and the first selected query stream before the SDK
        syncs the first stream, so their workers fetch side by side while the main thread
        writes out one stream after another; with ``ahead`` a stream may fetch further than its
        look-ahead window while it waits.
        A stream that does not fetch in the background keeps this no-op.
        """

    @property
    def given_state(self) -> Mapping[str, Any]:
        """The stream's state as the run was given it, read without adding an empty entry to
        the tap's state: a stream started early shows in no STATE before its turn."""
        bookmarks = self.tap_state.get("bookmarks") or {}
        given = bookmarks.get(self.name) or {}
        return given if isinstance(given, Mapping) else {}

    def uses_fast_path(self) -> bool:
        """True when records can go out exactly as the workers encoded them.

        Stream maps, flattening, a deselected field or a record limit (``--test``, the SDK's
        dry runs) need the SDK's own record path.
        """
        if self.ABORT_AT_RECORD_COUNT is not None or not records_pass_through(self):
            return False
        return all(self.mask.get(("properties", name), True) for name in self.schema["properties"])

    @override
    def get_record_counter(
        self,
        *,
        endpoint: str | None = None,
        log_interval: float = metrics.DEFAULT_LOG_INTERVAL,
    ) -> metrics.Counter:
        """The SDK's record counter, kept so the fast path can count what it copies."""
        self._record_counter = super().get_record_counter(
            endpoint=endpoint, log_interval=log_interval
        )
        return self._record_counter

    def count_copied(self, records: int) -> None:
        """Records the fast path copied to stdout, in the SDK's record counter."""
        if self._record_counter is not None:
            self._record_counter.increment(records)

    @override
    def get_replication_key_signpost(self, context: Any = None) -> None:
        """No signpost: the bookmark never comes from record values."""
        return

    def publish_state(self, value: dict[str, Any]) -> None:
        """Replace the stream's bookmark and write STATE now."""
        stream_state = self.stream_state
        stream_state.clear()
        stream_state.update(value)
        self._owner.state_writer.write_state(self._owner.state)

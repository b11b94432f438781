"""What every stream of this tap shares on the main thread.

Each stream fetches on worker threads into spool files and emits whole units (a partition, a
query) from the main thread, followed by STATE. So each may copy pre-encoded RECORD lines
straight to stdout when nothing would change a record, counts what it copies in the SDK's
record counter, and sets its bookmark itself.

With the SDK's ``batch_config``, the streams that can be large (:attr:`SpooledStream.batches`)
go the SDK's BATCH route instead: the SDK calls :meth:`SpooledStream.get_batches` and writes a
BATCH message for each manifest it yields, and the stream writes the unit's STATE once the SDK
resumes it, so a STATE always follows the BATCH it covers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from singer_sdk import Tap, metrics
from singer_sdk.helpers.conform import TypeConformanceLevel

from tap_mixpanel_parallel.compat import override
from tap_mixpanel_parallel.run.batch import BatchFiles
from tap_mixpanel_parallel.sdk_seams import PartitionBookmarks, records_pass_through
from tap_mixpanel_parallel.settings import Settings

if TYPE_CHECKING:
    from singer_sdk.helpers.types import Context

    from tap_mixpanel_parallel.sdk_seams import BaseBatchFileEncoding, BatchConfig


@dataclass(frozen=True)
class Manifest:
    """A unit's BATCH files, written; the SDK sends them as one BATCH message."""

    urls: list[str]


Unit = dict[str, Any] | Manifest


class SpooledStream(PartitionBookmarks):
    """A stream whose records come from spool files and whose bookmark is set per unit."""

    # Free-form JSON (``properties``) is carried as Mixpanel sent it: walking it per record to
    # conform types would cost more than the whole export and could only change values users
    # asked to keep as they are.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.ROOT_ONLY

    #: True for the streams that can be large: they honour ``batch_config``. The others always
    #: send RECORD messages, which every loader that reads BATCH reads too.
    batches: ClassVar[bool] = False

    def __init__(
        self,
        tap: Tap,
        settings: Callable[[], Settings],
        batch_files: Callable[[], BatchFiles] | None = None,
    ) -> None:
        super().__init__(tap=tap)
        self._owner = tap
        self._settings = settings
        self._batch_files = batch_files
        self._record_counter: metrics.Counter | None = None
        #: This run's BATCH folder while the SDK syncs the stream through :meth:`get_batches`.
        self.batch_out: BatchFiles | None = None

    def units(self, context: Context | None) -> Iterable[Unit]:
        """Records for the SDK, or nothing (copied to stdout), or manifests (BATCH route)."""
        raise NotImplementedError

    @override
    def get_records(self, context: Context | None) -> Iterable[dict[str, Any]]:
        for unit in self.units(context):
            assert not isinstance(unit, Manifest), "manifests only on the BATCH route"
            yield unit

    @override
    def get_batch_config(self, config: Mapping[str, Any]) -> BatchConfig | None:
        """The SDK's batch config for the large streams on the fast path; None: RECORDs.

        Stream maps, flattening, a deselected field or a record limit need the SDK's record
        path (its own batcher would write records without applying them).
        """
        if not self.batches or self._batch_files is None:
            return None
        batch_config = super().get_batch_config(config)
        if batch_config is not None and not self.uses_fast_path():
            self.logger.warning(
                "%s: batch_config is set, but stream maps, flattening, a deselected field or a"
                " record limit need the SDK's record path: sending RECORD messages",
                self.name,
            )
            return None
        return batch_config

    def sends_batches(self) -> bool:
        """True when the SDK will sync this stream through :meth:`get_batches`.

        Asked before the stream's turn (by a stream started early, whose workers must know
        whether to encode RECORD messages or bare records); the same rule as
        :meth:`get_batch_config`, without its warning.
        """
        return (
            self.batches
            and self._batch_files is not None
            and self.uses_fast_path()
            and super().get_batch_config(self.config) is not None
        )

    @override
    def get_batches(
        self, batch_config: BatchConfig, context: Context | None = None
    ) -> Iterable[tuple[BaseBatchFileEncoding, list[str]]]:
        """One manifest per unit, written by the tap's fast path into this run's folder."""
        assert self._batch_files is not None
        self.batch_out = self._batch_files()
        try:
            with self.get_record_counter():
                for unit in self.units(context):
                    assert isinstance(unit, Manifest), "records only on the RECORD route"
                    yield batch_config.encoding, unit.urls
        finally:
            self.batch_out = None

    def write_batch(self, spools: list[Path], records: int, name: str) -> Manifest | None:
        """A unit's spooled records as BATCH files: their manifest, None without records.

        Raises ``OSError`` when they cannot be written (none of them is left behind).
        """
        assert self.batch_out is not None
        urls = self.batch_out.write(spools, f"{self.name}-{name}")
        self.count_copied(records)
        return Manifest(urls) if urls else None

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

"""The tap and its settings."""

from __future__ import annotations

import copy
import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any, ClassVar

from singer_sdk.helpers.capabilities import (
    CapabilitiesEnum,
    PluginCapabilities,
    TapCapabilities,
)

from tap_mixpanel_parallel.compat import override
from tap_mixpanel_parallel.export.runner import WORKER_THREAD_PREFIX
from tap_mixpanel_parallel.export.state import StateError
from tap_mixpanel_parallel.export.stream import EventsStream
from tap_mixpanel_parallel.output import StdoutWriter
from tap_mixpanel_parallel.sdk_seams import SyncHooks
from tap_mixpanel_parallel.settings import CONFIG_SCHEMA, Settings, SettingsError

EXIT_FAILED_PARTITIONS = 1
EXIT_FATAL = 2
EXIT_SIGNAL_BASE = 128
WORKER_EXIT_GRACE_SECONDS = 3.0


class TapMixpanelParallel(SyncHooks):
    """Mixpanel raw events, exported in parallel date partitions."""

    name = "tap-mixpanel-parallel"
    package_name = "tap-mixpanel-parallel"
    message_writer_class = StdoutWriter
    # Not the SDK's defaults: records never leave as BATCH files, and an incremental stream
    # emits no ACTIVATE_VERSION, so neither is advertised.
    capabilities: ClassVar[list[CapabilitiesEnum]] = [
        TapCapabilities.CATALOG,
        TapCapabilities.STATE,
        TapCapabilities.DISCOVER,
        PluginCapabilities.ABOUT,
        PluginCapabilities.STREAM_MAPS,
        PluginCapabilities.FLATTENING,
        PluginCapabilities.STRUCTURED_LOGGING,
    ]

    # A copy: the SDK appends its built-in settings (stream maps, flattening) to the tap's
    # schema, and CONFIG_SCHEMA must stay the tap's own settings only.
    config_jsonschema = copy.deepcopy(CONFIG_SCHEMA)

    _settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        """Checked settings; built once, after the SDK validated the config's types."""
        if self._settings is None:
            self._settings = Settings.from_config(self.config)
        return self._settings

    @override
    def check_config(self) -> list[str]:
        """The rules a schema cannot express (auth pairs, dates, timezone)."""
        try:
            self._settings = Settings.from_config(self.config)
        except SettingsError as exc:
            return [str(exc)]
        return []

    @override
    def discover_streams(self) -> list[EventsStream]:
        """The one stream."""
        return [EventsStream(self, lambda: self.settings)]

    def _events(self) -> EventsStream:
        stream = self.streams[EventsStream.name]
        assert isinstance(stream, EventsStream)
        return stream

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        """SIGINT/SIGTERM: stop starting partitions; a second signal exits at once."""
        runner = self._events().runner
        if runner is None:
            # Nothing is in flight (discovery, start-up): stop now, as a signal should.
            sys.exit(EXIT_SIGNAL_BASE + signum)
        if self._signal is not None:
            # A second signal while stopping: the user wants out now; the last STATE stands.
            sys.stdout.flush()
            os._exit(EXIT_SIGNAL_BASE + signum)
        self.logger.warning(
            "signal %d: starting no more partitions; emitting the state of what is complete",
            signum,
        )
        self._signal = signum
        runner.stop()

    _signal: int | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Our own handlers replace the SDK's (which would exit at once): a stop must first
        # finish the partition being written and emit the STATE of what is complete.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._on_signal)
            signal.signal(signal.SIGTERM, self._on_signal)

    @override
    def run_streams(self) -> None:
        """The SDK's sync, with the errors that end a run turned into one line each."""
        try:
            super().run_streams()
        except StateError as exc:
            self.logger.error("invalid state: %s", exc)
            sys.exit(EXIT_FATAL)
        except BrokenPipeError:
            # The reader of stdout (a target, `head`) is gone: nothing more can be delivered,
            # and the last STATE it read is the one to resume from.
            self.logger.error("stdout was closed by its reader (did the target exit?); stopping")
            _stdout_to_devnull()
            os._exit(EXIT_FATAL)

    @override
    def after_sync(self) -> None:
        """Turn the run's outcome into a summary and an exit code."""
        outcome = self._events().outcome
        if outcome.summary:
            self.logger.info(outcome.summary)
        code = 0
        if outcome.failed:
            ranges = ", ".join(str(f.partition) for f in outcome.failed)
            self.logger.error(
                "%d partition%s failed and are saved in state for the next run: %s",
                len(outcome.failed),
                "" if len(outcome.failed) == 1 else "s",
                ranges,
            )
            code = EXIT_FAILED_PARTITIONS
        if outcome.fatal:
            self.logger.error("stopped: %s", outcome.fatal)
            code = EXIT_FATAL
        if outcome.interrupted:
            self.logger.warning("interrupted: rerun with the last STATE to export the rest")
            code = EXIT_SIGNAL_BASE + (self._signal or 15)
        if code:
            sys.stdout.flush()
            sys.stderr.flush()
            if not _workers_finished(WORKER_EXIT_GRACE_SECONDS):
                # A worker stuck in a stalled read would keep the process alive for up to
                # request_timeout; everything owed is already in the STATE just written.
                os._exit(code)
            sys.exit(code)


def _stdout_to_devnull() -> None:
    """Let interpreter shutdown flush stdout without a second BrokenPipeError."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _workers_finished(grace: float) -> bool:
    """Give idle or stopping workers a moment to end; True when none is left."""
    deadline = time.monotonic() + grace
    for thread in threading.enumerate():
        if thread.name.startswith(WORKER_THREAD_PREFIX):
            thread.join(max(0.0, deadline - time.monotonic()))
    return not any(
        t.is_alive() and t.name.startswith(WORKER_THREAD_PREFIX) for t in threading.enumerate()
    )


if __name__ == "__main__":
    TapMixpanelParallel.cli()

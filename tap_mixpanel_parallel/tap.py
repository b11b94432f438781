"""The tap and its settings."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Mapping
from types import FrameType
from typing import Any, ClassVar

from singer_sdk import Tap
from singer_sdk.exceptions import ConfigValidationError
from singer_sdk.helpers.capabilities import (
    CapabilitiesEnum,
    PluginCapabilities,
    TapCapabilities,
)

from tap_mixpanel_parallel.export.runner import WORKER_THREAD_PREFIX
from tap_mixpanel_parallel.export.state import StateError
from tap_mixpanel_parallel.export.stream import EventsStream
from tap_mixpanel_parallel.http.errors import redact
from tap_mixpanel_parallel.output import StdoutWriter
from tap_mixpanel_parallel.settings import CONFIG_SCHEMA, Settings, SettingsError

EXIT_FAILED_PARTITIONS = 1
EXIT_FATAL = 2
EXIT_SIGNAL_BASE = 128
WORKER_EXIT_GRACE_SECONDS = 3.0


class TapMixpanelParallel(Tap):
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

    config_jsonschema = CONFIG_SCHEMA

    _settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        """Checked settings; built once, after the SDK validated the config's types."""
        if self._settings is None:
            self._settings = Settings.from_config(self.config)
        return self._settings

    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        # The SDK's schema errors quote the offending value: a secret of the wrong type (a
        # list, a number) would be printed. Catch them and hide those values.
        try:
            errors = super()._validate_config(raise_errors=raise_errors)
        except ConfigValidationError as exc:
            errors = exc.errors
        errors = [
            _hide_secret_values(error, self._config, self.config_jsonschema) for error in errors
        ]
        if not errors:
            try:
                self._settings = Settings.from_config(self.config)
            except SettingsError as exc:
                errors = [str(exc)]
        if errors and raise_errors:
            msg = "Config validation failed"
            raise ConfigValidationError(msg, errors=errors, schema=self.config_jsonschema)
        return errors

    def discover_streams(self) -> list[EventsStream]:
        """The one stream."""
        return [EventsStream(tap=self)]

    def _events(self) -> EventsStream:
        stream = self.streams[EventsStream.name]
        assert isinstance(stream, EventsStream)
        return stream

    def _handle_termination(self, signum: int, frame: FrameType | None) -> None:
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

    def sync_all(self) -> None:  # type: ignore[misc]
        """Sync, then turn the run's outcome into a summary and an exit code."""
        try:
            super().sync_all()
        except StateError as exc:
            self.logger.error("invalid state: %s", exc)
            sys.exit(EXIT_FATAL)
        except BrokenPipeError:
            # The reader of stdout (a target, `head`) is gone: nothing more can be delivered,
            # and the last STATE it read is the one to resume from.
            self.logger.error("stdout was closed by its reader (did the target exit?); stopping")
            _stdout_to_devnull()
            os._exit(EXIT_FATAL)
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


def _hide_secret_values(error: str, config: Mapping[str, Any], schema: Mapping[str, Any]) -> str:
    """A schema error about a secret setting, without the value it quotes."""
    secret_keys = [k for k, v in schema["properties"].items() if v.get("secret")]
    for key in secret_keys:
        if f"config['{key}']" in error:
            return f"{key}: must be a string (value not shown, it is a secret)"
    return redact(error, [v for k in secret_keys if isinstance(v := config.get(k), str)])


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

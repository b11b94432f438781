"""The tap and its settings."""

from __future__ import annotations

import copy
import os
import signal
import sys
import threading
from collections.abc import Mapping
from types import FrameType
from typing import Any, ClassVar, NoReturn

from singer_sdk import Stream
from singer_sdk.helpers.capabilities import (
    CapabilitiesEnum,
    PluginCapabilities,
    TapCapabilities,
)

from tap_mixpanel_parallel.compat import override
from tap_mixpanel_parallel.export.plan import FIXED, duration, run_cost
from tap_mixpanel_parallel.export.state import check_state, read_state_file
from tap_mixpanel_parallel.export.stream import EventsStream
from tap_mixpanel_parallel.locks import hold_state_lock
from tap_mixpanel_parallel.output import (
    LINE_GRACE_SECONDS,
    STDOUT,
    STOP_GRACE_SECONDS,
    ReaderGone,
    StdoutWriter,
    StopWriting,
)
from tap_mixpanel_parallel.query.api import QueryApi
from tap_mixpanel_parallel.query.base import QueryStream, RunStopped
from tap_mixpanel_parallel.query.engage import CohortMembersStream, EngageStream
from tap_mixpanel_parallel.query.funnels import FunnelsStream, load_funnel_bookmarks
from tap_mixpanel_parallel.query.lists import AnnotationsStream, CohortsStream
from tap_mixpanel_parallel.query.state import load_engage_state
from tap_mixpanel_parallel.run.batch import BatchFiles, check_storage, describe
from tap_mixpanel_parallel.run.pool import RunLoop, workers_finished
from tap_mixpanel_parallel.run.state import StateError
from tap_mixpanel_parallel.sdk_seams import StateFileHook, SyncHooks
from tap_mixpanel_parallel.settings import CONFIG_SCHEMA, Settings, SettingsError
from tap_mixpanel_parallel.stream_base import SpooledStream

EXIT_FAILED_PARTITIONS = 1
EXIT_FATAL = 2
EXIT_SIGNAL_BASE = 128
WORKER_EXIT_GRACE_SECONDS = 3.0


class TapMixpanelParallel(SyncHooks, StateFileHook):
    """Mixpanel raw events, exported in parallel date partitions."""

    name = "tap-mixpanel-parallel"
    package_name = "tap-mixpanel-parallel"
    message_writer_class = StdoutWriter
    # The SDK's defaults but ACTIVATE_VERSION: an incremental stream emits none. BATCH adds the
    # SDK's standard batch_config setting.
    capabilities: ClassVar[list[CapabilitiesEnum]] = [
        TapCapabilities.CATALOG,
        TapCapabilities.STATE,
        TapCapabilities.DISCOVER,
        PluginCapabilities.ABOUT,
        PluginCapabilities.BATCH,
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
        if self._settings.batch is not None and (problem := check_storage(self._settings.batch)):
            return [problem]
        return []

    @override
    def discover_streams(self) -> list[Stream]:
        """Raw events and the Query/App API streams (the SDK syncs them in name order)."""
        query_streams = (
            EngageStream,
            CohortsStream,
            CohortMembersStream,
            AnnotationsStream,
            FunnelsStream,
        )
        return [
            EventsStream(self, lambda: self.settings, self.batch_files, self.run_loop),
            *(
                kind(self, lambda: self.settings, self.query_api, self.run_halted, self.batch_files)
                for kind in query_streams
            ),
        ]

    _batch_files: BatchFiles | None = None

    def batch_files(self) -> BatchFiles:
        """This run's BATCH folder, made when a stream first needs it; every stream shares it."""
        if self._batch_files is None:
            target = self.settings.batch
            assert target is not None, "a stream asks for BATCH files only with batch_config"
            files = BatchFiles(target)
            self.logger.info(describe(files, files.open()))
            self._batch_files = files
        return self._batch_files

    _query_api: QueryApi | None = None

    def query_api(self) -> QueryApi:
        """The Query API budget and sessions every query stream of this run shares."""
        if self._query_api is None:
            self._query_api = QueryApi(self.settings, self.name, self.logger, self.run_loop)
        return self._query_api

    def _query_streams(self) -> list[QueryStream]:
        return [s for s in self.streams.values() if isinstance(s, QueryStream)]

    def run_halted(self) -> bool:
        """True once a signal means no further stream may start.

        An error no retry can fix stops only the streams of the API that answered it: the
        export runs whatever the Query API said, and the other way round.
        """
        return self._signal is not None

    def _events(self) -> EventsStream:
        stream = self.streams[EventsStream.name]
        assert isinstance(stream, EventsStream)
        return stream

    @classmethod
    @override
    def read_state_file(cls, text: str, name: str) -> str:
        """Exit 2 with one line on a state file this tap cannot resume from, or in use."""
        try:
            check_every_stream(read_state_file(text, name))
        except StateError as exc:
            cls.logger.error("invalid state: %s", exc)
            sys.exit(EXIT_FATAL)
        owner = hold_state_lock(name)
        if owner is not None:
            cls.logger.error(
                "another tap-mixpanel-parallel run (pid %s) is using the state file %s; wait for"
                " it to end: two runs on one state export the same days twice and share one"
                " Mixpanel rate budget",
                owner,
                name,
            )
            sys.exit(EXIT_FATAL)
        return text

    @override
    def load_state(self, state: dict[str, Any]) -> None:
        """Check the state's shape first: the SDK's own merge fails with a traceback."""
        check_every_stream(state)
        super().load_state(state)
        self._given_bookmarks = copy.deepcopy(state.get("bookmarks") or {})

    _given_bookmarks: dict[str, Any] | None = None

    def state_view(self, value: Mapping[str, Any]) -> Mapping[str, Any]:
        """The state a STATE message carries: a query stream that did not run, or stopped
        before writing any STATE, keeps its bookmark as given (the SDK would add an empty one,
        or its starting marker)."""
        untouched = [s.name for s in self._query_streams() if s.state_untouched]
        if not untouched:
            return value
        out = copy.deepcopy(dict(value))
        bookmarks = out.setdefault("bookmarks", {})
        given = self._given_bookmarks or {}
        for name in untouched:
            if name in given:
                bookmarks[name] = copy.deepcopy(given[name])
            else:
                bookmarks.pop(name, None)
        return out

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        """SIGINT/SIGTERM: stop within a bounded time; the same signal twice exits at once.

        Two different signals are one stop: Ctrl+C sends SIGINT to the whole process group and
        Meltano then adds a SIGTERM of its own.
        """
        if not self.run_loop.started:
            # Nothing is in flight (discovery, start-up): stop now, as a signal should.
            sys.exit(EXIT_SIGNAL_BASE + signum)
        if self._signal is None:
            self._signal = signum
            self._signals_seen.add(signum)
            self.logger.warning(
                "signal %d: stopping: no new partitions; the one being written goes out whole"
                " if it can within %gs, then the state of what is complete",
                signum,
                STOP_GRACE_SECONDS,
            )
            self.run_loop.stop()
            STDOUT.begin_stop()
            return
        if signum not in self._signals_seen:
            self._signals_seen.add(signum)
            self.logger.warning(
                "signal %d too: still stopping (the same signal twice exits at once)", signum
            )
            return
        self.logger.warning(
            "signal %d again: exiting now, after the line being written; the last STATE stands",
            signum,
        )
        STDOUT.exit_at_line_end(lambda: self._exit_now(EXIT_SIGNAL_BASE + signum))

    def _exit_now(self, code: int) -> NoReturn:
        """Leave at once: no spool behind, stdout given back as found."""
        self.run_loop.close()
        STDOUT.restore()
        sys.stderr.flush()
        os._exit(code)

    _signal: int | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        #: Drives and stops every stream's workers (the streams made by the SDK's init use it).
        self.run_loop = RunLoop()
        super().__init__(*args, **kwargs)
        self._signals_seen: set[int] = set()
        if isinstance(self.message_writer, StdoutWriter):
            self.message_writer.state_view = self.state_view
        # Our own handlers replace the SDK's (which would exit at once): a stop must first
        # finish the partition being written and emit the STATE of what is complete.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._on_signal)
            signal.signal(signal.SIGTERM, self._on_signal)

    @override
    def run_streams(self) -> None:
        """Every selected stream started, then the SDK's sync, which writes them out one after
        another; the errors that end a run turned into one line each."""
        try:
            self._log_cost()
            self._start_streams()
            super().run_streams()
        except RunStopped:
            pass  # after_sync reports it; the last STATE written is the one to resume from
        except StateError as exc:
            self.logger.error("invalid state: %s", exc)
            sys.exit(EXIT_FATAL)
        except ReaderGone:
            # Meltano, told to stop, no longer forwards the tap's output: nothing more can be
            # delivered, and the last STATE it read is the one to resume from.
            self.logger.error(
                "stdout accepted nothing for %gs after the stop signal: its reader is gone",
                LINE_GRACE_SECONDS,
            )
            _stdout_to_devnull()
        except StopWriting:
            pass  # a stop signal's grace ran out; the stream said where it stopped
        except BrokenPipeError:
            # The reader of stdout (a target, `head`) is gone: nothing more can be delivered,
            # and the last STATE it read is the one to resume from.
            self.logger.error("stdout was closed by its reader (did the target exit?); stopping")
            _stdout_to_devnull()
            self._exit_now(EXIT_FATAL if self._signal is None else EXIT_SIGNAL_BASE + self._signal)
        finally:
            # Streams started but never written out (the run stopped first) stop fetching,
            # and their spool folders go.
            self.run_loop.close()

    def _start_streams(self) -> None:
        """Start now the first selected stream of the export and of the Query and App APIs.

        The export and the Query API have budgets of their own, so the first stream of each
        fetches beside the other while the main thread writes out one after another, and a run
        costs about its longest stream rather than the sum. Later query streams start in their
        turn: they share the Query API's budget, and an earlier one may find the credentials
        (shared by the Query and App APIs) refused, in which case they must not ask at all. A
        run of one stream starts it in its turn, as the SDK would, fetching no further ahead
        than its look-ahead window.
        """
        selected = [s for s in self.streams.values() if isinstance(s, SpooledStream) and s.selected]
        if len(selected) < 2:
            return
        apis: set[str] = set()
        for stream in selected:
            api = "query" if isinstance(stream, QueryStream) else EventsStream.name
            if api in apis:
                continue
            apis.add(api)
            if self.run_halted():
                return
            stream.start(ahead=True)

    def _log_cost(self) -> None:
        """Before any request: what the run costs and the least time Mixpanel's budgets allow."""
        settings = self.settings
        events = self._events()
        plan = events.planned() if events.selected else []
        query = sum(1 for stream in self._query_streams() if stream.selected)
        cost = run_cost(
            export_requests=len(plan),
            per_hour=settings.max_requests_per_hour,
            per_second=settings.max_requests_per_second,
            query_requests=query,
            query_per_hour=settings.query_max_requests_per_hour,
        )
        size = max((p.partition.days for p in plan if not p.retry_of_failed), default=0)
        self.logger.info(
            "plan: %d export request%s (%s partitions, partition_mode %s, %d retried from"
            " state), at least %d Query API request%s; Mixpanel's budgets (%d export requests"
            " an hour, %g a second, %d at once; Query API %d an hour, %d at once) allow this run"
            " in no less than %s, plus the time Mixpanel takes to serve the last requests",
            cost.export_requests,
            "" if cost.export_requests == 1 else "s",
            f"{size}-day" if size else "no new",
            settings.partition_mode,
            sum(p.retry_of_failed for p in plan),
            cost.query_requests,
            "" if cost.query_requests == 1 else "s",
            settings.max_requests_per_hour,
            settings.max_requests_per_second,
            settings.max_workers,
            settings.query_max_requests_per_hour,
            settings.query_max_workers,
            duration(cost.least_seconds),
        )
        if (
            settings.partition_mode == FIXED
            and cost.export_requests > settings.max_requests_per_hour
        ):
            self.logger.info(
                "the export needs more requests than max_requests_per_hour: partition_mode"
                " fit_budget plans larger partitions so the run fits the hour"
            )

    @override
    def after_sync(self) -> None:
        """Turn the run's outcome into a summary and an exit code."""
        # The query streams first: the export's summary and failures stay the last lines.
        code = self._report_query_streams()
        outcome = self._events().outcome
        if outcome.summary:
            self.logger.info(outcome.summary)
        if outcome.failed:
            ranges = ", ".join(str(f.partition) for f in outcome.failed)
            self.logger.error(
                "%d partition%s failed and are saved in state for the next run: %s",
                len(outcome.failed),
                "" if len(outcome.failed) == 1 else "s",
                ranges,
            )
            code = max(code, EXIT_FAILED_PARTITIONS)
        if outcome.fatal:
            self.logger.error("stopped: %s", outcome.fatal)
            code = EXIT_FATAL
        if self._batch_files is not None:
            self._batch_files.close()
        query_cut = self._query_api is not None and self._query_api.cut
        if self._query_api is not None:
            self._query_api.close()
        if self._signal is not None and (outcome.unsettled or query_cut):
            self.logger.warning("interrupted: rerun with the last STATE to export the rest")
            code = EXIT_SIGNAL_BASE + self._signal
        elif self._signal is not None:
            self.logger.info(
                "signal %d came once every partition was exported or saved as failed:"
                " nothing more is owed",
                self._signal,
            )
        if code:
            sys.stdout.flush()
            sys.stderr.flush()
            if not workers_finished(WORKER_EXIT_GRACE_SECONDS):
                # A worker stuck in a stalled read would keep the process alive for up to
                # request_timeout; everything owed is already in the STATE just written.
                os._exit(code)
            sys.exit(code)

    def _report_query_streams(self) -> int:
        """Log each query stream's summary and failure; the exit code they call for."""
        code = 0
        for stream in self._query_streams():
            if stream.outcome.summary:
                self.logger.info(stream.outcome.summary)
            if stream.outcome.failed:
                self.logger.error(
                    "stream %s failed; %s for the next run: %s",
                    stream.name,
                    stream.outcome.kept,
                    stream.outcome.failed,
                )
                code = max(code, EXIT_FAILED_PARTITIONS)
            if stream.outcome.fatal:
                self.logger.error(
                    "stream %s stopped; %s: %s",
                    stream.name,
                    stream.outcome.kept,
                    stream.outcome.fatal,
                )
                code = EXIT_FATAL
        return code


def check_every_stream(state: Mapping[str, Any]) -> None:
    """Raise :class:`StateError` unless every stream can resume from ``state``: checked before
    the first request, so a bad bookmark of a later stream is one line, not a traceback after
    the earlier streams ran."""
    check_state(state)
    bookmarks = state.get("bookmarks", {})
    load_engage_state(bookmarks.get(EngageStream.name, {}))
    load_funnel_bookmarks(bookmarks.get(FunnelsStream.name, {}))


def _stdout_to_devnull() -> None:
    """Let interpreter shutdown flush stdout without a second BrokenPipeError."""
    STDOUT.restore()  # drops the writer's own descriptor on the pipe too
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":
    TapMixpanelParallel.cli()

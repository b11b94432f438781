"""What the Query/App API streams have in common (main thread only).

A query stream never raises out of ``get_records`` for a Mixpanel error: it records what went
wrong in :attr:`QueryStream.outcome`, leaves the state of what failed as it was and returns, so
the streams after it still run; the tap turns the outcomes into a summary and an exit code.

An error no retry can fix (401, 403) stops the streams of the API that answered it: a 403 of
the App API says nothing about the Query API, nor either about the raw export. A 401 (or a 400
saying the credentials were rejected) stops both the Query and the App API streams: they share
the credentials Mixpanel did not know.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import msgspec
from singer_sdk import Tap

from tap_mixpanel_parallel.compat import override
from tap_mixpanel_parallel.http.errors import CHECK_CREDENTIALS
from tap_mixpanel_parallel.output import STDOUT, StopWriting
from tap_mixpanel_parallel.query.api import QueryApi
from tap_mixpanel_parallel.settings import Settings
from tap_mixpanel_parallel.stream_base import SpooledStream

#: The two APIs of the query streams, as error messages name them.
QUERY_API = "Query"
APP_API = "App"


class RunStopped(BaseException):
    """A signal ends the run after this stream.

    Raised once the stream's last STATE, if any, was written, so no later stream starts and no
    later STATE is written (the state stays as given, or as the last complete unit left it). A
    ``BaseException``, like ``KeyboardInterrupt``: the SDK logs every ``Exception`` out of a
    stream as a crash, and this is an orderly stop; the tap catches it and reports the outcome.
    """


@dataclass
class QueryOutcome:
    """How a query stream's sync ended, for the run's summary and exit code."""

    failed: str | None = None
    fatal: str | None = None
    summary: str = ""
    #: What the failure left of the stream's state, for the log line that reports it.
    kept: str = "its state is unchanged"


class QueryStream(SpooledStream):
    """A stream of the Query or App API.

    ``settings``, ``api`` and ``halted`` come from the tap: its checked settings, the run's
    shared Query API budget, and whether an earlier stream stopped the run.
    """

    def __init__(
        self,
        tap: Tap,
        settings: Callable[[], Settings],
        api: Callable[[], QueryApi],
        halted: Callable[[], bool],
    ) -> None:
        super().__init__(tap, settings)
        self._api = api
        self.halted = halted
        self.outcome = QueryOutcome()
        #: True when the stream did not run, or stopped before it wrote any STATE: its
        #: bookmark must stay as it was given, whatever the SDK writes for it.
        self.state_untouched = False
        self._published = False

    @property
    def api_name(self) -> str:
        """The API this stream reads (the one named in its errors)."""
        return QUERY_API

    @override
    def get_records(self, context: Any) -> Iterable[dict[str, Any]]:
        """:meth:`read`, unless the run is stopping or the stream's API refused an earlier
        stream; after a signal, end the run here.

        A deselected stream reads nothing, even when synced anyway (the SDK's dry run syncs
        every stream): ``cohort_members`` costs a query per cohort.
        """
        if self.selected and not self.api.interrupted and not self.halted():
            refused = self.api.refused.get(self.api_name)
            if refused is not None:
                self.outcome.fatal = f"not started: {refused}"
                self.state_untouched = True
            else:
                yield from self.read()
                if self.outcome.fatal:
                    self._refuse(self.outcome.fatal)
                    self.state_untouched = not self._published
            if self.api.interrupted:
                self.api.cut = True
        if self.api.interrupted:
            raise RunStopped

    def _refuse(self, error: str) -> None:
        """No later stream of this API (of either, for unknown credentials) may start."""
        said = f"the {self.api_name} API refused stream {self.name}: {error}"
        apis = (QUERY_API, APP_API) if CHECK_CREDENTIALS in error else (self.api_name,)
        for api in apis:
            self.api.refused.setdefault(api, said)

    @override
    def publish_state(self, value: dict[str, Any]) -> None:
        """Replace the stream's bookmark and write STATE now."""
        self._published = True
        super().publish_state(value)

    def read(self) -> Iterable[dict[str, Any]]:
        """The stream's records (written to stdout directly in the fast path)."""
        raise NotImplementedError

    @property
    def api(self) -> QueryApi:
        """The run's Query API budget and sessions, shared by every query stream."""
        return self._api()

    def emit_spool(self, paths: list[Path], records: int, fast: bool) -> Iterator[dict[str, Any]]:
        """Send spooled pages in order: copied as RECORD lines, or yielded for the SDK."""
        for path in paths:
            if fast:
                try:
                    STDOUT.copy_file(path)
                except StopWriting:
                    self.api.cut = True
                    self.logger.warning(
                        "%s: stopped while writing; the records sent so far have no STATE, so"
                        " the next run sends them again (a target that upserts on the key"
                        " properties keeps each once)",
                        self.name,
                    )
                    raise
            else:
                with open(path, "rb") as fh:
                    for line in fh:
                        yield cast("dict[str, Any]", msgspec.json.decode(line))
        if fast:
            self.count_copied(records)

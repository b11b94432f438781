"""Every private or fragile Singer SDK hook the tap still needs, in one room.

The rest of the tap uses the SDK's public API only. Each seam here exists because the SDK has no
public way to do the same thing, and tests/test_sdk_seams.py checks each one against the
installed SDK, so an SDK upgrade that removes or reshapes one fails CI instead of a user's run:

- :class:`SyncHooks` overrides ``Tap.sync_all`` (``@final``) to turn the run's outcome into a
  summary and an exit code after every stream ran: the SDK's ``invoke`` calls ``sync_all`` and
  then exits 0, with no public hook in between.
- :class:`SyncHooks` overrides ``PluginBase._validate_config`` so a schema error that quotes a
  secret's value is shown without it, and so the tap's own checks (:mod:`settings`) report
  through the SDK's config-error path. :func:`hide_secret_values` reads the SDK's
  ``config['key']`` wording.
- :class:`PartitionBookmarks` overrides ``Stream._increment_stream_state``: the export's
  bookmark is a settled day, not the largest replication-key value seen, and the SDK's own
  increment would overwrite it on its record path.
- :class:`StateFileHook` overrides ``Tap.invoke`` to read the ``--state`` file before the SDK
  does: the SDK parses it inside ``invoke`` (a traceback on anything but a JSON object of
  objects) and has no hook in between.
- ``BatchConfig`` and ``BaseBatchFileEncoding``, the types of the public
  ``Stream.get_batch_config`` and ``Stream.get_batches``, live in the private
  ``singer_sdk.helpers._batch``; the tap only names them in annotations and reads
  ``batch_config.encoding``, which it hands back to the SDK unchanged.
- :func:`records_pass_through` reads the stream-map internals (``SameRecordTransform``,
  ``flattening_enabled``, ``stream_alias``) to know when records may skip the SDK's path.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import IO, Any

from singer_sdk import Stream, Tap
from singer_sdk.exceptions import ConfigValidationError
from singer_sdk.helpers import types
from singer_sdk.helpers._batch import BaseBatchFileEncoding, BatchConfig
from singer_sdk.mapper import SameRecordTransform

from tap_mixpanel_parallel.compat import override
from tap_mixpanel_parallel.http.errors import redact

__all__ = [
    "BaseBatchFileEncoding",
    "BatchConfig",
    "PartitionBookmarks",
    "StateFileHook",
    "SyncHooks",
    "hide_secret_values",
    "records_pass_through",
]


def hide_secret_values(error: str, config: Mapping[str, Any], schema: Mapping[str, Any]) -> str:
    """A schema error about a secret setting, without the value it quotes.

    The SDK words a schema error as ``... in config['key']``; a secret of the wrong type (a
    list, a number) would be printed whole.
    """
    secret_keys = [k for k, v in schema["properties"].items() if v.get("secret")]
    for key in secret_keys:
        if f"config['{key}']" in error:
            return f"{key}: must be a string (value not shown, it is a secret)"
    return redact(error, [v for k in secret_keys if isinstance(v := config.get(k), str)])


class SyncHooks(Tap):
    """A Tap with two hooks the SDK does not offer publicly."""

    def check_config(self) -> list[str]:
        """Problems a JSON schema cannot express; called once the schema check passed."""
        return []

    def after_sync(self) -> None:
        """Runs on the main thread once every stream was synced (or a stream raised)."""

    @override
    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        try:
            errors = super()._validate_config(raise_errors=raise_errors)
        except ConfigValidationError as exc:
            errors = exc.errors
        errors = [hide_secret_values(e, self._config, self.config_jsonschema) for e in errors]
        if not errors:
            errors = self.check_config()
        if errors and raise_errors:
            msg = "Config validation failed"
            raise ConfigValidationError(msg, errors=errors, schema=self.config_jsonschema)
        return errors

    @override  # type: ignore[misc]  # sync_all is @final in the SDK; see the module doc
    def sync_all(self) -> None:
        """The SDK's sync of every stream, then :meth:`after_sync`."""
        self.run_streams()
        self.after_sync()

    def run_streams(self) -> None:
        """The SDK's own sync of every selected stream."""
        super().sync_all()


class StateFileHook(Tap):
    """A Tap that sees the ``--state`` file's text before the SDK parses it."""

    @classmethod
    def read_state_file(cls, text: str, name: str) -> str:
        """The text the SDK should parse; may exit with a message instead."""
        return text

    @classmethod
    @override
    def invoke(cls, *, state: IO[str] | None = None, **kwargs: Any) -> None:
        if state is not None:
            name = str(getattr(state, "name", "--state"))
            state = io.StringIO(cls.read_state_file(state.read(), name))
        super().invoke(state=state, **kwargs)


class PartitionBookmarks(Stream):
    """A stream whose bookmark it sets itself, never from record values."""

    @override
    def _increment_stream_state(
        self,
        latest_record: types.Record,
        *,
        context: types.Context | None = None,
    ) -> None:
        return


def records_pass_through(stream: Stream) -> bool:
    """True when no stream map, alias or flattening would change a record of ``stream``."""
    maps = stream.stream_maps
    if len(maps) != 1 or type(maps[0]) is not SameRecordTransform:
        return False
    return not maps[0].flattening_enabled and maps[0].stream_alias == stream.name

"""Each private SDK hook of tap_mixpanel_parallel.sdk_seams still exists in the installed SDK.

An SDK upgrade that renames, removes or reshapes one of them must fail here, in CI, rather than
in a user's run.
"""

from __future__ import annotations

import inspect

import pytest
from singer_sdk import Stream, Tap
from singer_sdk.exceptions import ConfigValidationError
from singer_sdk.mapper import SameRecordTransform, StreamMap

from tap_mixpanel_parallel.sdk_seams import (
    PartitionBookmarks,
    StateFileHook,
    SyncHooks,
    hide_secret_values,
)
from tap_mixpanel_parallel.settings import CONFIG_SCHEMA
from tap_mixpanel_parallel.tap import TapMixpanelParallel


def parameters(function) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_sync_all_is_still_the_sdk_entry_of_a_sync():
    assert parameters(Tap.sync_all) == ["self"]
    # invoke() runs a sync through sync_all; our override hooks in there
    assert "sync_all()" in inspect.getsource(Tap.invoke)
    assert TapMixpanelParallel.sync_all is SyncHooks.sync_all


def test_validate_config_keeps_its_signature_and_is_called_on_construction():
    assert parameters(Tap._validate_config) == ["self", "raise_errors"]
    from singer_sdk.plugin_base import PluginBase

    assert "_validate_config(" in inspect.getsource(PluginBase.__init__)


def test_increment_stream_state_keeps_its_signature():
    assert parameters(Stream._increment_stream_state) == ["self", "latest_record", "context"]
    assert PartitionBookmarks._increment_stream_state is not Stream._increment_stream_state


def test_schema_errors_still_name_the_setting_as_hide_secret_values_expects():
    config = {"service_account_secret": ["not", "a", "string"], "start_date": "2024-01-01"}
    with pytest.raises(ConfigValidationError) as caught:
        Tap._validate_config.__get__(_BareTap.__new__(_BareTap))()  # the SDK's own check
    errors = caught.value.errors
    assert any("config['service_account_secret']" in e for e in errors), errors
    hidden = [hide_secret_values(e, config, CONFIG_SCHEMA) for e in errors]
    assert not any("not" in e and "string" in e and "[" in e for e in hidden), hidden


class _BareTap(TapMixpanelParallel):
    """Just enough of a tap for the SDK's schema check to run on a bad config."""

    def __new__(cls, *args, **kwargs):
        tap = object.__new__(cls)
        tap._config = {"service_account_secret": ["not", "a", "string"], "start_date": "x"}
        return tap


def test_stream_map_internals_used_by_the_fast_path():
    for name in ("flattening_enabled", "stream_alias"):
        assert name in inspect.getsource(StreamMap.__init__) + inspect.getsource(
            SameRecordTransform.__init__
        ), name
    assert isinstance(inspect.getattr_static(Stream, "stream_maps"), property)


def test_invoke_still_takes_the_state_file_and_parses_it_itself():
    # StateFileHook reads --state before the SDK does; the SDK must still get it as an open
    # file named `state` and parse it inside invoke, with no hook in between
    assert "state" in parameters(Tap.invoke)
    assert "state.read()" in inspect.getsource(Tap.invoke)
    assert TapMixpanelParallel.invoke.__func__ is StateFileHook.invoke.__func__
    # the CLI's --state option still hands invoke an open file
    (option,) = [p for p in TapMixpanelParallel.get_singer_command().params if p.name == "state"]
    assert option.type.name == "filename"


def test_batch_route_types_and_hooks_the_tap_relies_on():
    """BatchConfig and BaseBatchFileEncoding (private module) type the public BATCH hooks.

    The tap overrides ``get_batch_config`` and ``get_batches``; the SDK's ``sync`` must still
    choose the BATCH route from ``get_batch_config`` and write one BATCH message per manifest
    that ``get_batches`` yields, before it asks for the next one.
    """
    from tap_mixpanel_parallel.sdk_seams import BaseBatchFileEncoding, BatchConfig

    assert parameters(Stream.get_batch_config) == ["self", "config"]
    assert parameters(Stream.get_batches) == ["self", "batch_config", "context"]
    config = BatchConfig.from_dict(
        {
            "encoding": {"format": "jsonl", "compression": "gzip"},
            "storage": {"root": "s3://bucket/x", "params": {"endpoint_url": "http://x"}},
            "batch_size": 5,
        }
    )
    assert isinstance(config.encoding, BaseBatchFileEncoding)
    assert (config.encoding.format, config.encoding.compression) == ("jsonl", "gzip")
    assert config.batch_size == 5
    sync = inspect.getsource(Stream.sync)
    assert "self.get_batch_config(self.config)" in sync
    assert "self._sync_batches(" in sync
    loop = inspect.getsource(Stream._sync_batches)
    assert loop.index("self.get_batches(") < loop.index("self._write_batch_message(")

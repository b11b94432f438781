"""A plain Singer SDK tap doing our job the way the SDK's docs suggest: the comparison point.

One ``singer_sdk.Tap`` with one ``Stream`` whose ``get_records`` streams the same export
response (one request for ``start_date..end_date``), ``json.loads`` each line and yields
``{event, time, distinct_id, insert_id, properties}`` under a schema like the real tap's. Everything
else is the SDK's default behaviour: default message writer, default type conformance
(recursive), replication-key state tracking per record, default record metadata.

Usage: python benchmarks/plain_sdk_tap.py --config CONFIG.json  (same config keys as the tap)
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from typing import Any

from export_lines import export_lines
from singer_sdk import Stream, Tap
from singer_sdk import typing as th

UTC = dt.timezone.utc


class PlainEventsStream(Stream):
    name = "events"
    primary_keys = ("event", "distinct_id", "time", "insert_id")
    replication_key = "time"
    is_sorted = False
    schema = th.PropertiesList(
        th.Property("event", th.StringType, required=True),
        th.Property("time", th.DateTimeType, required=True),
        th.Property("distinct_id", th.StringType),
        th.Property("insert_id", th.StringType),
        th.Property("properties", th.ObjectType(additional_properties=True)),
    ).to_dict()

    def get_records(self, context: Any) -> Iterable[dict[str, Any]]:
        for line in export_lines(self.config):
            event = json.loads(line)
            props = event.get("properties") or {}
            yield {
                "event": event.get("event"),
                "time": dt.datetime.fromtimestamp(props["time"], UTC).isoformat(),
                "distinct_id": str(props.get("distinct_id", "")),
                "insert_id": str(props.get("$insert_id", "")),
                "properties": props,
            }


class TapPlainMixpanel(Tap):
    name = "tap-plain-mixpanel"
    config_jsonschema = th.PropertiesList(
        th.Property("service_account_username", th.StringType, required=True),
        th.Property("service_account_secret", th.StringType, required=True, secret=True),
        th.Property("project_id", th.IntegerType, required=True),
        th.Property("api_url", th.StringType, required=True),
        th.Property("start_date", th.StringType, required=True),
        th.Property("end_date", th.StringType, required=True),
    ).to_dict()

    def discover_streams(self) -> list[Stream]:
        return [PlainEventsStream(self)]


if __name__ == "__main__":
    TapPlainMixpanel.cli()

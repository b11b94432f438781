"""The one export request every minimal contender makes: stream the range's JSONL lines.

Shared by the raw floors and the plain SDK tap, so they differ only in what they do per line.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import requests

CHUNK_BYTES = 256 * 1024


def export_lines(config: Mapping[str, Any]) -> Iterator[bytes]:
    """Non-empty lines of ``start_date..end_date`` from ``api_url``, gzip as the tap gets it."""
    response = requests.get(
        config["api_url"].rstrip("/") + "/api/2.0/export",
        params={
            "from_date": config["start_date"],
            "to_date": config["end_date"],
            "project_id": str(config["project_id"]),
        },
        auth=(config["service_account_username"], config["service_account_secret"]),
        headers={"Accept-Encoding": "gzip"},
        stream=True,
        timeout=600,
    )
    response.raise_for_status()
    for line in response.iter_lines(chunk_size=CHUNK_BYTES):
        if line:
            yield line

"""Records with what real exports carry: NULs, escapes, nesting, precise numbers, gaps."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

KEYS = ["event", "insert_id"]


def schema_message(stream: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "event": {"type": "string"},
        "insert_id": {"type": "string"},
        "time": {"type": ["integer", "null"]},
        "seen_at": {"type": ["string", "null"], "format": "date-time"},
        "price": {"type": ["number", "null"]},
        "ok": {"type": ["boolean", "null"]},
        "note": {"type": ["string", "null"]},
        "properties": {"type": ["object", "null"]},
        "tags": {"type": ["array", "null"], "items": {"type": "string"}},
        # a name target-postgres conforms into a column name of its own
        "$City Name": {"type": ["string", "null"]},
    }
    properties.update(extra or {})
    return {
        "type": "SCHEMA",
        "stream": stream,
        "schema": {"type": "object", "properties": properties},
        "key_properties": KEYS,
    }


NOTES = [
    "plain",
    "tab\there, newline\nthere, backslash \\ and \\N",
    "quotes \" and ' and , commas",
    "NUL \x00 inside",
    "unicode é ✓ 😀",
    "",
    None,
]


def record(i: int, version: int = 1, **extra: Any) -> dict[str, Any]:
    """The i-th record; a later version of a key changes its values."""
    made: dict[str, Any] = {
        "event": f"e{i % 3}",
        "insert_id": f"id-{i}",
        "time": 1_700_000_000 + i * version,
        "seen_at": f"2024-01-{1 + i % 28:02d}T10:{i % 60:02d}:00+00:00",
        "price": "REPLACE",
        "ok": [True, False, None][i % 3],
        "note": NOTES[i % len(NOTES)],
        "properties": {
            "$browser": "Chrome",
            "nul": "a\x00b" if i % 4 == 0 else "ok",
            "n": i,
            "nested": {"deep": [1, 2.5, {"x": None}]},
            "v": version,
        },
        "tags": ["t", f"v{version}", "nul\x00tag"] if i % 5 == 0 else [],
        "$City Name": f"city {i % 3}",
    }
    if i % 7 == 0:
        del made["note"]  # a property absent from the record
    if i % 11 == 0:
        made["properties"] = None
    made.update(extra)
    return made


def line(rec: dict[str, Any], i: int) -> str:
    """One JSON line; price written as a literal so its digits are the file's, not a float's."""
    text = json.dumps(rec, ensure_ascii=i % 2 == 0)
    price = ["12.345678901234567890123", "1e2", "-0.5", "7", "null"][i % 5]
    return text.replace('"REPLACE"', price)


def write_jsonl(path: Path, lines: list[str], *, gzip_it: bool) -> Path:
    data = "".join(text + "\n" for text in lines).encode("utf-8")
    if gzip_it:
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def batch_message(
    urls: list[str], *, compression: str = "none", fmt: str = "jsonl", stream: str = "events"
) -> dict[str, Any]:
    return {
        "type": "BATCH",
        "stream": stream,
        "encoding": {"format": fmt, "compression": compression},
        "manifest": urls,
    }


def state_message(n: int) -> dict[str, Any]:
    return {"type": "STATE", "value": {"bookmarks": {"events": {"n": n}}}}

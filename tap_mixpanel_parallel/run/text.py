"""Text PostgreSQL can store: invalid UTF-8 and escaped NULs made U+FFFD, for any stream."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from tap_mixpanel_parallel.compat import Buffer

T = TypeVar("T")

_encoder = msgspec.json.Encoder()
_any_decoder = msgspec.json.Decoder()

#: How a NUL character is written in JSON; the only way one can be in Mixpanel's export, whose
#: lines are JSON. A pre-filter: ``\\u0000`` (an escaped backslash) matches too, and is kept.
NUL_ESCAPE = b"\\u0000"
#: What a NUL or an invalid UTF-8 sequence becomes: U+FFFD, as target-postgres's own
#: ``sanitize_null_text_characters`` does for top-level strings.
REPLACEMENT = "\ufffd"


def is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def replace_invalid_utf8(data: bytes) -> bytes:
    return data.decode("utf-8", "replace").encode("utf-8")


# What msgspec raises for invalid UTF-8 inside a string it decodes: UnicodeDecodeError up to
# 0.22, a plain DecodeError ("Invalid UTF-8 encoded string") from 0.23 on. Catch both, then
# tell bad text from a cut body by looking at the bytes, never at the exception's type or text.
TEXT_DECODE_ERRORS = (UnicodeDecodeError, msgspec.DecodeError)


def decode_text(decode: Callable[[Buffer], T], data: Buffer) -> T:
    """``decode(data)``, or where a string in it is invalid UTF-8, the same with U+FFFD there.

    A cut or foreign body still raises: bad text is told from it by the bytes. Valid data is
    decoded once, as it is, with no copy.
    """
    try:
        return decode(data)
    except TEXT_DECODE_ERRORS:
        if is_utf8(bytes(data)):
            raise  # a cut or foreign body, not bad text
    return decode(replace_invalid_utf8(bytes(data)))


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", REPLACEMENT) if "\x00" in value else value
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def sanitize_line(line: bytes) -> bytes:
    """``line`` with invalid UTF-8 and escaped NULs, at any depth and in keys, made U+FFFD.

    Lines with neither (nearly all) come back as the same object, after an ASCII check or one
    UTF-8 validation and a substring scan; only a line that needs it is parsed and re-encoded
    (so its whitespace and number spelling may change; values do not).
    """
    if not line.isascii() and not is_utf8(line):
        line = replace_invalid_utf8(line)
    if NUL_ESCAPE not in line:
        return line
    try:
        value = _any_decoder.decode(line)
    except msgspec.DecodeError:
        return line  # not JSON: the caller reports it as a cut stream
    return _encoder.encode(_clean(value))


def decode_record(line: bytes) -> dict[str, Any]:
    """A spooled record back as a dict, for the SDK's own record path (stream maps, flattening).

    The fast path copies the bytes Mixpanel sent; a dict holds text, so invalid UTF-8 (with
    ``sanitize_text`` off) becomes U+FFFD here instead of failing the run.
    """
    record: dict[str, Any] = decode_text(_any_decoder.decode, line)
    return record

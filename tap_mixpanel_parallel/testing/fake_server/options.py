"""One declaration per option: a dataclass field carries its default and, in ``doc``, its help.

The command line is derived from the fields (``add_arguments``/``values``), so a new server
option or fault is written once, as a field, and is at once a constructor keyword and a flag.
``doc`` metadata: ``help``; ``flag`` when the flag is not ``--field-name``; ``parse`` when the
field's type is not a plain converter; ``cli=False`` for options a command line cannot express.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable
from datetime import date
from typing import Any

_MISSING: Any = dataclasses.MISSING


def doc(
    help: str,
    *,
    flag: str | None = None,
    parse: Callable[[str], Any] | None = None,
    cli: bool = True,
) -> dict[str, Any]:
    """Field metadata: ``field(default=..., metadata=doc("what it does"))``."""
    return {"help": help, "flag": flag, "parse": parse, "cli": cli}


def _cli_fields(cls: type[Any]) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if f.metadata.get("cli", True)]


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return _MISSING


def _unwrap_optional(kind: Any) -> Any:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        rest = [arg for arg in typing.get_args(kind) if arg is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return kind


def add_arguments(parser: argparse._ActionsContainer, cls: type[Any]) -> None:
    """One flag per field of the dataclass ``cls`` (not those marked ``cli=False``)."""
    hints = typing.get_type_hints(cls)
    for f in _cli_fields(cls):
        meta = f.metadata
        flag = meta["flag"] or "--" + f.name.replace("_", "-")
        default = _default(f)
        text = meta["help"]
        if default is not _MISSING and default:  # zero, None and empty mean "off"
            text += f" (default: {default})"
        kind = _unwrap_optional(hints[f.name])
        if kind is bool:
            parser.add_argument(flag, dest=f.name, action="store_true", help=text)
            continue
        repeated = typing.get_origin(kind) in (set, list)
        if repeated:
            (kind,) = typing.get_args(kind)
        parse = meta["parse"] or (date.fromisoformat if kind is date else kind)
        parser.add_argument(
            flag,
            dest=f.name,
            type=parse,
            action="append" if repeated else "store",
            default=[] if repeated else (None if default is _MISSING else default),
            required=default is _MISSING,
            metavar="YYYY-MM-DD" if kind is date else flag[2:].replace("-", "_").upper(),
            help=text,
        )


def values(cls: type[Any], args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments for ``cls`` from parsed flags (repeated flags become its collection)."""
    hints = typing.get_type_hints(cls)
    result = {}
    for f in _cli_fields(cls):
        value = getattr(args, f.name)
        origin = typing.get_origin(_unwrap_optional(hints[f.name]))
        result[f.name] = origin(value) if origin in (set, list) else value
    return result

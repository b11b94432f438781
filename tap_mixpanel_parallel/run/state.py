"""The one error every stream raises for an incoming state it cannot resume from."""

from __future__ import annotations


class StateError(ValueError):
    """The incoming state cannot be read; the message says which key and what to do."""

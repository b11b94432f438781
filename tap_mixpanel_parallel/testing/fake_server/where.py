"""Mixpanel's segmentation expressions (the ``where`` of engage), as its reference documents them.

Grammar: ``properties["name"]`` (and ``user["name"]``), string, number and boolean literals,
lists of literals (for ``in``), ``( )``, the binary operators ``+ - * / % == != > >= < <= in
and or``, the unary ``-`` and ``not``, ``floor``/``round``/``ceil``, the typecasts
``boolean``/``number``/``string`` and ``defined(...)``.

Semantics, from the same page: values are strings, numbers, booleans, null or *undefined* (a
missing property). ``==`` is false across types; ``> >= < <=`` are defined for two numbers only
and give undefined otherwise; ``in`` is a substring test of two strings (or membership in a list
literal); ``and``/``or`` read undefined as false and refuse any other non-boolean; ``not`` of
undefined is true. A profile matches when the expression is ``true``.

Comparing two strings with ``>=`` is undefined by that grammar, yet peers send
``properties["$last_seen"] >= "<ISO date-time>"`` and report it works: ``compare_strings``
chooses between the documented rule (False: no profile matches) and that practice (True).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


class WhereError(ValueError):
    """The expression does not follow the grammar (Mixpanel answers 400)."""


class _Undefined:
    def __repr__(self) -> str:
        return "undefined"


UNDEFINED: Any = _Undefined()

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*")
      | (?P<number>\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
      | (?P<op>==|!=|>=|<=|[-+*/%<>()\[\],])
      | (?P<word>[A-Za-z_$][A-Za-z0-9_$]*)
    )""",
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "in", "true", "false"}
_FUNCTIONS = {"floor", "round", "ceil", "boolean", "number", "string", "defined"}
_COMPARISONS = ("==", "!=", ">=", "<=", ">", "<", "in")

Profile = Mapping[str, Any]
Node = Callable[[Profile], Any]


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if match is None:
            msg = f"unexpected character at {position}"
            raise WhereError(msg)
        kind = match.lastgroup
        assert kind is not None
        out.append((kind, match[kind]))
        position = match.end()
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _string_literal(token: str) -> str:
    try:
        value = json.loads(token)
    except ValueError:
        msg = f"bad string literal {token}"
        raise WhereError(msg) from None
    assert isinstance(value, str)
    return value


@dataclass
class _Parser:
    tokens: list[tuple[str, str]]
    compare_strings: bool
    at: int = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (value is not None and token[1] != value):
            msg = f"expected {value or 'more'} at token {self.at}"
            raise WhereError(msg)
        self.at += 1
        return token

    def accept(self, value: str) -> bool:
        token = self.peek()
        if token is not None and token[1] == value and token[0] in ("op", "word"):
            self.at += 1
            return True
        return False

    def parse(self) -> Node:
        node = self.disjunction()
        if self.peek() is not None:
            msg = f"unexpected {self.peek()[1]!r}"  # type: ignore[index]
            raise WhereError(msg)
        return node

    def disjunction(self) -> Node:
        node = self.conjunction()
        while self.accept("or"):
            node = _logical(node, self.conjunction(), any_=True)
        return node

    def conjunction(self) -> Node:
        node = self.negation()
        while self.accept("and"):
            node = _logical(node, self.negation(), any_=False)
        return node

    def negation(self) -> Node:
        if self.accept("not"):
            inner = self.negation()
            return lambda p: _not(inner(p))
        return self.comparison()

    def comparison(self) -> Node:
        node = self.additive()
        token = self.peek()
        if token is not None and token[1] in _COMPARISONS:
            self.at += 1
            if token[1] == "in" and self.peek() == ("op", "["):
                items = self.literal_list()
                left = node
                return lambda p: left(p) in items if left(p) is not UNDEFINED else UNDEFINED
            right = self.additive()
            return _compare(token[1], node, right, self.compare_strings)
        return node

    def additive(self) -> Node:
        node = self.multiplicative()
        while (token := self.peek()) is not None and token[1] in ("+", "-"):
            self.at += 1
            node = _arithmetic(token[1], node, self.multiplicative())
        return node

    def multiplicative(self) -> Node:
        node = self.unary()
        while (token := self.peek()) is not None and token[1] in ("*", "/", "%"):
            self.at += 1
            node = _arithmetic(token[1], node, self.unary())
        return node

    def unary(self) -> Node:
        if self.accept("-"):
            inner = self.unary()
            return lambda p: -inner(p) if _is_number(inner(p)) else UNDEFINED
        return self.primary()

    def literal_list(self) -> list[Any]:
        self.take("[")
        items: list[Any] = []
        while not self.accept("]"):
            if items:
                self.take(",")
            items.append(self.primary()({}))
        return items

    def primary(self) -> Node:
        kind, value = self.take()
        if kind == "string":
            text = _string_literal(value)
            return lambda p: text
        if kind == "number":
            number = float(value)
            return lambda p: number
        if value == "(":
            node = self.disjunction()
            self.take(")")
            return node
        if value in ("true", "false"):
            flag = value == "true"
            return lambda p: flag
        if value in ("properties", "user"):
            self.take("[")
            name_kind, name = self.take()
            if name_kind != "string":
                msg = "a property name must be a string literal"
                raise WhereError(msg)
            self.take("]")
            key = _string_literal(name)
            return lambda p: _value(p, key)
        if value in _FUNCTIONS:
            self.take("(")
            inner = self.disjunction()
            self.take(")")
            return _function(value, inner)
        msg = f"unexpected {value!r}"
        raise WhereError(msg)


def _value(profile: Profile, key: str) -> Any:
    if key not in profile:
        return UNDEFINED
    value = profile[key]
    return float(value) if _is_number(value) else value


def _truth(value: Any) -> bool:
    if value is UNDEFINED:
        return False
    if isinstance(value, bool):
        return value
    msg = "and/or/not take booleans only"
    raise WhereError(msg)


def _logical(left: Node, right: Node, *, any_: bool) -> Node:
    if any_:
        return lambda p: _truth(left(p)) or _truth(right(p))
    return lambda p: _truth(left(p)) and _truth(right(p))


def _not(value: Any) -> Any:
    if value is UNDEFINED:
        return True
    if isinstance(value, bool):
        return not value
    return UNDEFINED


def _compare(op: str, left: Node, right: Node, compare_strings: bool) -> Node:
    def run(profile: Profile) -> Any:
        a, b = left(profile), right(profile)
        if op in ("==", "!="):
            same = type(a) is type(b) and a == b
            return same if op == "==" else not same
        if op == "in":
            if isinstance(a, str) and isinstance(b, str):
                return a in b
            return UNDEFINED
        both_numbers = _is_number(a) and _is_number(b)
        both_strings = compare_strings and isinstance(a, str) and isinstance(b, str)
        if not (both_numbers or both_strings):
            return UNDEFINED
        if op == ">":
            return a > b
        if op == ">=":
            return a >= b
        if op == "<":
            return a < b
        return a <= b

    return run


def _arithmetic(op: str, left: Node, right: Node) -> Node:
    def run(profile: Profile) -> Any:
        a, b = left(profile), right(profile)
        if op == "+" and isinstance(a, str) and isinstance(b, str):
            return a + b
        if not (_is_number(a) and _is_number(b)):
            return UNDEFINED
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if b == 0:
            return UNDEFINED
        return a / b if op == "/" else math.copysign(abs(a) % abs(b), a)

    return run


def _function(name: str, inner: Node) -> Node:
    def run(profile: Profile) -> Any:
        value = inner(profile)
        if name == "defined":
            return value is not UNDEFINED and value is not None
        if name in ("floor", "round", "ceil"):
            if not _is_number(value):
                return UNDEFINED
            rounding: dict[str, Callable[[float], int]] = {
                "floor": math.floor,
                "round": round,
                "ceil": math.ceil,
            }
            return float(rounding[name](value))
        if name == "string":
            if isinstance(value, bool):
                return "true" if value else "false"
            if _is_number(value):
                return repr(int(value)) if float(value).is_integer() else repr(value)
            return value
        if name == "number":
            if isinstance(value, bool):
                return 1.0 if value else 0.0
            if _is_number(value):
                return value
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    return UNDEFINED
            return UNDEFINED
        # boolean
        if isinstance(value, bool):
            return value
        if _is_number(value):
            return value != 0
        if isinstance(value, str):
            return value != ""
        return UNDEFINED

    return run


def compile_where(text: str, *, compare_strings: bool = True) -> Callable[[Profile], bool]:
    """A predicate over a profile's ``$properties``; :class:`WhereError` when not in the
    grammar."""
    node = _Parser(_tokens(text), compare_strings).parse()

    def matches(profile: Profile) -> bool:
        return node(profile) is True

    return matches

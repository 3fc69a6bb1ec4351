"""``SafeInt``: whole numbers past 2^31, exact in JavaScript (SPEC 6.1).

GraphQL's ``Int`` is 32-bit, too small for credit totals; ``SafeInt`` is a whole number in
±(2^53 − 1), sent as a JSON number. A value outside is never rounded: serialising it raises
``NumberOutOfRange``. Strawberry maps the type with ``StrawberryConfig(scalar_map=SCALAR_MAP)``.
See README, 'Architecture' (Numbers).
"""

from __future__ import annotations

from typing import Any, NewType

import strawberry
from graphql import IntValueNode, ValueNode
from strawberry.types.scalar import ScalarDefinition

from gql_usage.graphql.errors import ApiError

MAX_SAFE_INT = 2**53 - 1
MIN_SAFE_INT = -MAX_SAFE_INT
NUMBER_OUT_OF_RANGE = "NUMBER_OUT_OF_RANGE"

SafeInt = NewType("SafeInt", int)
"""A whole number in ±(2^53 − 1); in Python, a plain ``int``."""


class NumberOutOfRange(ApiError):
    """A number the API cannot send exactly (outside ±(2^53 − 1))."""

    code = NUMBER_OUT_OF_RANGE


def _checked(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"SafeInt cannot represent a non-integer value: {value!r}")
    if not MIN_SAFE_INT <= value <= MAX_SAFE_INT:
        raise NumberOutOfRange(f"{value} is outside SafeInt's range ±(2^53 − 1) and cannot "
                               "be sent exactly")
    return value


def serialize(value: Any) -> int:
    """Output: an ``int`` in range is itself; anything else is an error, never a guess."""
    return _checked(value)


def parse_value(value: Any) -> int:
    """A variable's value: a JSON whole number in range (floats such as ``1.0`` too)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    try:
        return _checked(value)
    except NumberOutOfRange as exc:
        raise ValueError(str(exc)) from None


def parse_literal(node: ValueNode, variables: dict[str, Any] | None = None) -> int:
    """A literal in the document: an integer literal in range."""
    if not isinstance(node, IntValueNode):
        raise ValueError("SafeInt cannot represent a non-integer literal")
    return parse_value(int(node.value))


SAFE_INT: ScalarDefinition = strawberry.scalar(
    name="SafeInt",
    description="A whole number in ±(2^53 − 1), exact in JavaScript; serialised as a JSON "
                "number.",
    serialize=serialize, parse_value=parse_value, parse_literal=parse_literal)

#: ``StrawberryConfig.scalar_map`` of every schema that uses these types.
SCALAR_MAP: dict[object, ScalarDefinition] = {SafeInt: SAFE_INT}

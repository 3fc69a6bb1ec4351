"""``plain_input`` (``gql_usage.graphql.inputs``) builds exactly what Strawberry's generic
conversion builds, from the same coerced values, and refuses types it cannot build."""

# No ``from __future__ import annotations``: the local input types below must resolve
# when they are decorated.
from datetime import UTC, datetime

import pytest
import strawberry
from strawberry.types.arguments import convert_argument

from gql_usage.graphql.filters import UsageFilter
from gql_usage.graphql.inputs import plain_input
from gql_usage.graphql.schema import schema

FROM, TO = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1)
VALUES = [
    {"from": FROM, "to": TO},
    {"from": FROM, "to": TO, "timeZone": None, "apiKeyIds": None, "endpoints": None,
     "sources": None, "userIds": None},
    {"from": FROM, "to": TO, "timeZone": "Asia/Kolkata", "apiKeyIds": ["QXBpS2V5Oms="],
     "endpoints": ["/v1/a", "/v1/b"], "sources": [], "userIds": ["VXNlcjp1"]},
]


def convert(value: dict[str, object]) -> object:
    return convert_argument(value, UsageFilter, schema.schema_converter.scalar_registry,
                            schema.config)


@pytest.mark.parametrize("value", VALUES)
def test_same_value_as_strawberrys_conversion(value):
    definition = UsageFilter.__strawberry_definition__
    hook = definition.from_input
    assert hook is not None
    try:
        definition.from_input = None
        generic = convert(value)
    finally:
        definition.from_input = hook
    plain = convert(value)
    assert type(plain) is UsageFilter and plain == generic


def test_lists_are_copied():
    """graphql-core shares an argument's default list between requests."""
    value = VALUES[2]
    built = convert(value)
    assert isinstance(built, UsageFilter)
    assert built.endpoints == value["endpoints"] and built.endpoints is not value["endpoints"]


def test_nested_input_objects_are_refused():
    @strawberry.input
    class Inner:
        a: int

    with pytest.raises(TypeError, match=r"Outer\.inner: plain_input takes scalar"):
        @plain_input
        @strawberry.input
        class Outer:
            inner: list[Inner] | None = None

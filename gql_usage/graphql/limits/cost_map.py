"""The schema names the cost model reads, checked against the built schema at start-up, so
that a renamed type, field, argument or enum value cannot silently change a cost."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from graphql import GraphQLEnumType, GraphQLObjectType, GraphQLSchema, get_named_type

from gql_usage import calendar
from gql_usage.graphql.limits.cost import (
    AGGREGATES,
    ALERTS,
    API_KEYS,
    BREAKDOWN,
    BREAKDOWN_ROWS,
    BY,
    FILTER,
    FILTERED,
    FIRST,
    FREE,
    GRANULARITY,
    INCLUDE_REVOKED,
    LIMIT,
    OTHER,
    SERIES,
    SIZED_LISTS,
    SPIKE_DRIVERS,
    SPIKES,
    Field,
    enum_key,
)


class StaleCostMap(Exception):
    """The cost model names something the schema does not have."""


@dataclass(frozen=True)
class CostMap:
    """Every field the cost model names, with the arguments it reads from it, and the enum
    arguments whose values it prices (each value of the schema's enum, and no other)."""

    fields: Mapping[Field, frozenset[str]]
    enums: Mapping[tuple[Field, str], frozenset[str]] = field(default_factory=dict)


def _fields() -> dict[Field, frozenset[str]]:
    read: dict[Field, set[str]] = {f: set() for f in AGGREGATES | FREE | SIZED_LISTS}
    for f in FILTERED:
        read.setdefault(f, set()).add(FILTER)
    read.setdefault(SERIES, set()).add(GRANULARITY)
    read.setdefault(BREAKDOWN, set()).update({BY, LIMIT, OTHER})
    read.setdefault(SPIKES, set()).update({GRANULARITY, LIMIT})
    read.setdefault(SPIKE_DRIVERS, set())
    read.setdefault(API_KEYS, set()).add(INCLUDE_REVOKED)
    read.setdefault(ALERTS, set()).add(FIRST)
    return {f: frozenset(args) for f, args in read.items()}


#: The cost model's names (``gql_usage.graphql.limits.cost``).
COST_MAP = CostMap(_fields(), {
    (SERIES, GRANULARITY): frozenset(g.value for g in calendar.Granularity),
    (SPIKES, GRANULARITY): frozenset(g.value for g in calendar.Granularity),
    (BREAKDOWN, BY): frozenset(BREAKDOWN_ROWS),
})


def validate_cost_map(schema: GraphQLSchema, cost_map: CostMap | None = None) -> None:
    """Raises ``StaleCostMap`` naming the first entry of ``cost_map`` (default
    ``COST_MAP``) that ``schema`` lacks: an object type, a field of it, an argument of the
    field, or an enum value (or an enum value the model does not price)."""
    cost_map = COST_MAP if cost_map is None else cost_map
    for (type_name, field_name), arguments in sorted(cost_map.fields.items()):
        where = f"{type_name}.{field_name}"
        type_ = schema.type_map.get(type_name)
        if type_ is None:
            raise StaleCostMap(f"the cost model names {where}, but the schema has no type "
                               f"{type_name}")
        if not isinstance(type_, GraphQLObjectType):
            raise StaleCostMap(f"the cost model names {where}, but {type_name} is not an "
                               "object type")
        field_def = type_.fields.get(field_name)
        if field_def is None:
            raise StaleCostMap(f"the cost model names {where}, but {type_name} has no "
                               f"field {field_name}")
        missing = sorted(arguments - field_def.args.keys())
        if missing:
            raise StaleCostMap(f"the cost model reads {where}({missing[0]}:), but the field "
                               f"has no argument {missing[0]}")
    for ((type_name, field_name), argument), priced in sorted(cost_map.enums.items()):
        where = f"{type_name}.{field_name}({argument}:)"
        type_ = schema.type_map.get(type_name)
        field_def = type_.fields.get(field_name) if isinstance(
            type_, GraphQLObjectType) else None
        arg = field_def.args.get(argument) if field_def is not None else None
        if arg is None:
            raise StaleCostMap(f"the cost model prices the values of {where}, but the "
                               "schema has no such argument")
        enum = get_named_type(arg.type)
        if not isinstance(enum, GraphQLEnumType):
            raise StaleCostMap(f"the cost model prices the values of {where}, but the "
                               f"argument's type {enum.name} is not an enum")
        values = {enum_key(value.value) for value in enum.values.values()}
        if values != priced:
            raise StaleCostMap(
                f"the cost model prices {where} for {', '.join(sorted(priced))}, but the "
                f"enum {enum.name} has {', '.join(sorted(values))}: unpriced "
                f"{sorted(values - priced)}, stale {sorted(priced - values)}")

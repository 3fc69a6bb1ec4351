"""Type guards applied to a schema: every field returning a guarded type is guarded.

``apply_type_guards`` gives every field returning a ``@guarded_type`` the type's rules
before the build; ``check_type_guards`` refuses to start if one is unguarded or non-null
(a refusal must null only the field). Interface and union fields (``node``) are checked
at execution instead. See README, 'Architecture' (Access).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import graphql
from strawberry.permission import PermissionExtension
from strawberry.types.base import (
    StrawberryContainer,
    StrawberryObjectDefinition,
    get_object_definition,
)
from strawberry.types.field import StrawberryField
from strawberry.types.lazy_type import LazyType
from strawberry.types.union import StrawberryUnion

from gql_usage.graphql.directives import Rule, guarded, ordered, type_rules

_BACKREF = "strawberry-definition"


def _named(type_: Any) -> Any:
    """The named type inside lists and optionals."""
    while isinstance(type_, StrawberryContainer):
        type_ = type_.of_type
    if isinstance(type_, LazyType):
        type_ = type_.resolve_type()
    return type_


def _classes(type_: Any) -> list[Any]:
    named = _named(type_)
    if isinstance(named, StrawberryUnion):
        return [c for t in named.types for c in _classes(t)]
    return [named] if get_object_definition(named) is not None else []


def _fields(roots: Iterable[Any]) -> Iterator[tuple[StrawberryObjectDefinition, StrawberryField]]:
    """Every field of every object type and interface reachable from ``roots``."""
    seen: set[int] = set()
    stack = [r for r in roots if r is not None]
    while stack:
        cls = stack.pop()
        definition = get_object_definition(cls)
        if definition is None or id(cls) in seen:
            continue
        seen.add(id(cls))
        stack.extend(i.origin for i in definition.interfaces)
        for field in definition.fields:
            yield definition, field
            stack.extend(_classes(field.type))


def apply_type_guards(roots: Iterable[Any]) -> None:
    """Give every field that returns a guarded type that type's rules (idempotent)."""
    for _definition, field in _fields(roots):
        named = _named(field.type)
        rules = type_rules(named) if get_object_definition(named) is not None else ()
        if not rules:
            continue
        existing = [e for e in field.extensions if isinstance(e, PermissionExtension)]
        have: list[type[Rule]] = []
        for extension in existing:
            for permission in extension.permissions:
                if not isinstance(permission, Rule):
                    raise TypeError(f"{field.python_name}: returns a guarded type and has "
                                    "a permission that is not one of directives.RULES")
                have.append(type(permission))
        if set(rules) <= set(have):
            continue
        field.extensions = [e for e in field.extensions
                            if not isinstance(e, PermissionExtension)]
        field.extensions.append(guarded(*ordered([*rules, *have])))


def field_rules(field_def: graphql.GraphQLField) -> set[type]:
    """The permission classes that enforce a built field."""
    strawberry_field = (field_def.extensions or {}).get(_BACKREF)
    extensions = getattr(strawberry_field, "extensions", ())
    return {type(p) for e in extensions if isinstance(e, PermissionExtension)
            for p in e.permissions}


def object_type_rules(gtype: graphql.GraphQLObjectType) -> tuple[type[Rule], ...]:
    """The ``@guarded_type`` rules of a built object type; () if none."""
    definition = (gtype.extensions or {}).get(_BACKREF)
    return type_rules(getattr(definition, "origin", None))


def unguarded_paths(schema: graphql.GraphQLSchema) -> list[str]:
    """``Type.field`` of every field returning a guarded type without all of its rules
    enforced, or non-null (a refusal would null its parent)."""
    problems = []
    for type_name, gtype in schema.type_map.items():
        if type_name.startswith("__") or not isinstance(
                gtype, graphql.GraphQLObjectType | graphql.GraphQLInterfaceType):
            continue
        for field_name, field_def in gtype.fields.items():
            named = graphql.get_named_type(field_def.type)
            if not isinstance(named, graphql.GraphQLObjectType):
                continue
            rules = object_type_rules(named)
            if not rules:
                continue
            if not set(rules) <= field_rules(field_def):
                problems.append(f"{type_name}.{field_name}: returns {named.name} without "
                                f"{', '.join(r.__name__ for r in rules)}")
            elif graphql.is_non_null_type(field_def.type):
                problems.append(f"{type_name}.{field_name}: returns {named.name} and must "
                                "be nullable")
    return problems


def check_type_guards(schema: graphql.GraphQLSchema) -> None:
    problems = unguarded_paths(schema)
    if problems:
        raise TypeError("guarded types reached without their guard: " + "; ".join(problems))

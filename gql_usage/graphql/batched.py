"""Per-item fields answered once per list: ``@batched`` marks a resolver whose answer for
every object of a list comes from one computation (each API key's ``usage(filter:)``
is its row of one breakdown by key).

A dashboard lists 50 keys with their usage. Run field by field, each key's ``usage``
paid for Strawberry's argument conversion, its permission check, a coroutine, a task
and a loader future: about 140 µs per key, more than the rest of the list. For a list
whose selection is plain leaves and batched fields only, the fast execution
(``gql_usage.graphql.execution``) converts each batched field's arguments once, checks
its rules once, awaits its batch function once and reads each object's answer from it;
the answer objects' own selection must be plain leaves.

The batch function is an optimisation of the field, never a second definition of it:
anything it does not cover takes graphql-core's general path, which runs the field's
resolver on each object as before (and reports errors there, object by object): a
refused rule, a failing batch, a null where the schema says non-null, a value a plain
leaf cannot take. Only the viewer's own rules (``@adminOnly``, ``@paidPlan``), whose
answer is the same for every object, may guard a batched field.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from graphql import GraphQLField, GraphQLNonNull, GraphQLObjectType
from strawberry.permission import PermissionExtension
from strawberry.types.arguments import convert_arguments
from strawberry.types.field import StrawberryField

from gql_usage.graphql.directives import AdminOnly, PaidPlan

#: ``(info, **arguments) -> answer``: the field's value for one object of the list.
Batch = Callable[..., Awaitable[Callable[[Any], Any]]]
F = TypeVar("F", bound=Callable[..., Any])

_ATTRIBUTE = "__gql_usage_batch__"
_BACKREF = "strawberry-definition"
#: Rules that depend on the viewer alone: checked once, they hold for every object.
_VIEWER_RULES = (AdminOnly, PaidPlan)


def batched(batch: Batch) -> Callable[[F], F]:
    """Resolver decorator (under ``@strawberry.field``): ``batch(info, **arguments)``
    (the field's converted arguments, ``info`` as the resolver gets it) returns, for the
    whole list, a function giving each object's value, the resolver's answer for it."""
    def mark(resolver: F) -> F:
        setattr(resolver, _ATTRIBUTE, batch)
        return resolver
    return mark


def batch_of(field_def: GraphQLField) -> tuple[StrawberryField, Batch] | None:
    """The Strawberry field and batch function of a ``@batched`` field whose extensions
    are viewer rules only; else None."""
    field = (field_def.extensions or {}).get(_BACKREF)
    if not isinstance(field, StrawberryField) or field.base_resolver is None:
        return None
    batch: Batch | None = getattr(field.base_resolver.wrapped_func, _ATTRIBUTE, None)
    if batch is None:
        return None
    for extension in field.extensions:
        if (type(extension) is not PermissionExtension or extension.fail_silently
                or not all(type(p) in _VIEWER_RULES for p in extension.permissions)):
            return None
    return field, batch


def permitted(field: StrawberryField, info: Any) -> bool:
    """Whether every rule guarding ``field`` lets the viewer read it (viewer rules:
    ``source`` plays no part)."""
    return all(permission.has_permission(None, info) is True
               for extension in field.extensions
               if isinstance(extension, PermissionExtension)
               for permission in extension.permissions)


def arguments(field: StrawberryField, coerced: dict[str, Any], schema: Any,
              info: Any) -> dict[str, Any]:
    """The field's arguments as its resolver receives them (Strawberry's conversion of
    graphql-core's coerced values)."""
    strawberry_schema = schema._strawberry_schema  # set by strawberry.Schema
    return convert_arguments(coerced, field.arguments,
                             scalar_registry=strawberry_schema.schema_converter.scalar_registry,
                             config=strawberry_schema.config, info=info)


def object_type(field_def: GraphQLField) -> tuple[GraphQLObjectType, bool] | None:
    """(the object type, non-null?) a batched field returns, or None if not an object."""
    returned = field_def.type
    non_null = isinstance(returned, GraphQLNonNull)
    named = returned.of_type if isinstance(returned, GraphQLNonNull) else returned
    if not isinstance(named, GraphQLObjectType) or named.is_type_of is not None:
        return None
    return named, non_null

"""``plain_input``: an input type built from its coerced value as it is: 10 µs per value
instead of Strawberry's generic 210 µs, which a dashboard paid for every API key's
``usage`` filter (``python -m bench.filter_input``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from strawberry.types.arguments import InputContext
from strawberry.types.base import (
    StrawberryList,
    StrawberryObjectDefinition,
    StrawberryOptional,
    get_object_definition,
    has_object_definition,
)
from strawberry.types.field import StrawberryField

T = TypeVar("T", bound=type)


def plain_input(cls: T) -> T:
    """Build ``cls`` (a ``@strawberry.input`` whose fields are scalars, enums or lists of
    them) straight from graphql-core's coerced value, through Strawberry's documented
    ``from_input`` hook of the type definition.

    Strawberry's own conversion resolves every field's annotation on every value;
    graphql-core has already parsed the scalars and enums and checked the lists, so the
    values are taken as they are, lists copied (graphql-core shares default values
    between requests). Nested input objects would need conversion: refused here."""
    definition = get_object_definition(cls, strict=True)
    _check(definition, lambda f: f.type)  # what resolves now; the rest on first use
    names: list[tuple[str, str]] = []
    names_config: list[object] = [None]

    def from_input(target: type, value: Mapping[str, Any], context: InputContext) -> Any:
        if names_config[0] is not context.config:  # (GraphQL name, Python name), once
            _check(definition, lambda f: f.resolve_type(type_definition=definition))
            names[:] = [(context.config.name_converter.from_field(f), f.python_name)
                        for f in definition.fields]
            names_config[0] = context.config
        kwargs: dict[str, Any] = {}
        for graphql_name, python_name in names:
            if graphql_name in value:
                item = value[graphql_name]
                kwargs[python_name] = list(item) if isinstance(item, list) else item
        return target(**kwargs)

    definition.from_input = from_input
    return cls


def _check(definition: StrawberryObjectDefinition,
           type_of: Callable[[StrawberryField], Any]) -> None:
    for f in definition.fields:
        inner = type_of(f)
        while isinstance(inner, StrawberryOptional | StrawberryList):
            inner = inner.of_type
        if has_object_definition(inner):
            raise TypeError(f"{definition.name}.{f.python_name}: plain_input takes scalar, "
                            "enum and list fields only")

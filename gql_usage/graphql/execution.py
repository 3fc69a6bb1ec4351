"""A faster execution of objects made only of plain scalar fields, and type guards.

A usage series is hundreds of plain objects, and graphql-core's per-field execution was
most of the GraphQL layer's time: ``FastExecutionContext`` completes an object in one step
when every selected field is a plain leaf (no resolver, arguments or extension; or
``__typename``, which clients such as Apollo add to every selection). A list whose
objects select plain leaves and ``@batched`` fields (each API key's ``usage``) has each
batched field computed once for the whole list (``gql_usage.graphql.batched``). Anything
else, or any surprise, takes the general path. It also checks ``@guarded_type`` rules on
every object completed, however reached. See README, 'Architecture' (Access).

(Objects mixing plain leaves with other fields once had the leaves read here and only
the others executed by graphql-core; measured with ``bench.compare``, it bought nothing,
and it was removed: docs/performance.md, round 5.)
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable
from typing import Any, NamedTuple

from graphql import (
    GraphQLField,
    GraphQLInt,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLString,
    is_leaf_type,
)
from graphql.execution.values import get_argument_values
from graphql.pyutils import Path, Undefined
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.types.field import StrawberryField

from gql_usage.graphql import batched, scalars
from gql_usage.graphql.directives import enforce
from gql_usage.graphql.guards import object_type_rules

_BACKREF = "strawberry-definition"
#: (Python type, lowest, highest): a value of exactly this type (within these bounds, for
#: an int) is its own output value.
_Own = tuple[type, int, int]
#: How to read a plain leaf field: (response name, attribute name, named leaf type,
#: non-null?, own output or None); ``__typename`` is (response name, None, the type's
#: name, True, None).
_Leaf = tuple[str, str | None, Any, bool, _Own | None]
#: How to read each field of an object selected only with plain leaves.
_LeafFields = tuple[_Leaf, ...]


class _Refused(Exception):
    """A batched field's rule refuses the viewer: the general path reports it."""


class _Batched(NamedTuple):
    """A batched field of a list's objects (``gql_usage.graphql.batched``)."""

    response_name: str
    details: Any  # graphql-core's field details list
    field_def: GraphQLField
    field: StrawberryField
    batch: batched.Batch
    leaves: _LeafFields  # of the object it returns
    non_null: bool


#: How to complete a list's objects: per selected field, its ``_Leaf`` or ``_Batched``.
_BatchPlan = tuple[_Leaf | _Batched, ...]


class FastExecutionContext(StrawberryGraphQLCoreExecutionContext):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Per request: field groups are shared by all objects of one list, so each
        # group is examined once. The group is kept alive with its answer (ids are keys).
        self._plan_by_group: dict[int, tuple[object, _LeafFields | None]] = {}
        self._batch_plans: dict[int, tuple[object, _BatchPlan | None]] = {}

    def execute_fields(self, parent_type: GraphQLObjectType, source_value: Any,
                       path: Path | None, grouped_field_set: Any,
                       position_context: Any) -> Any:
        leaves = self._plan(parent_type, grouped_field_set)
        if leaves is not None:
            results = _plain_values(leaves, source_value)
            if results is not None:
                return results
        return super().execute_fields(parent_type, source_value, path, grouped_field_set,
                                      position_context)

    def complete_iterable_value(self, item_type: Any, field_details_list: Any, info: Any,
                                path: Path, items: Any, position_context: Any) -> Any:
        """A list of plain objects in one loop, without the per-item completion steps
        (path entry, awaitable check, object completion, subfield collection)."""
        completed = self._plain_list(item_type, field_details_list, info, path, items)
        if completed is not None:
            return completed
        batched_list = self._batched_list(item_type, field_details_list, info, path, items,
                                          position_context)
        if batched_list is not None:
            return batched_list
        return super().complete_iterable_value(item_type, field_details_list, info, path,
                                               items, position_context)

    def complete_object_value(self, return_type: GraphQLObjectType, field_details_list: Any,
                              info: Any, path: Path, result: Any,
                              position_context: Any) -> Any:
        """Every object of a guarded type, however it was reached, is checked against
        its type's rules before any of its fields runs."""
        rules = object_type_rules(return_type)
        if rules:
            enforce(rules, info)
        return super().complete_object_value(return_type, field_details_list, info, path,
                                             result, position_context)

    def _object_list(self, item_type: Any, field_details_list: Any, path: Path,
                     items: Any) -> GraphQLObjectType | None:
        """The item type of a list of objects that ``@stream`` leaves alone, else None."""
        named = item_type.of_type if isinstance(item_type, GraphQLNonNull) else item_type
        if (not isinstance(items, list) or not isinstance(named, GraphQLObjectType)
                or self.get_stream_usage(field_details_list, path) is not None):
            return None
        return named

    def _subfields(self, parent_type: GraphQLObjectType, field_details_list: Any
                   ) -> Any | None:
        """The fields selected on objects of ``parent_type``, or None if ``@defer``
        splits them (the general path delivers those)."""
        grouped_field_set, new_defer_usages, _ = self.collect_subfields(parent_type,
                                                                          field_details_list)
        return None if new_defer_usages else grouped_field_set

    def _plain_list(self, item_type: Any, field_details_list: Any, info: Any, path: Path,
                    items: Any) -> list[dict[str, Any]] | None:
        named = self._object_list(item_type, field_details_list, path, items)
        if named is None or named.is_type_of is not None:
            return None
        rules = object_type_rules(named)
        if rules and items:
            enforce(rules, info)  # what complete_object_value checks for each item
        grouped_field_set = self._subfields(named, field_details_list)
        if grouped_field_set is None:
            return None
        leaves = self._plan(named, grouped_field_set)
        if leaves is None:
            return None
        completed = []
        for item in items:
            values = None if item is None else _plain_values(leaves, item)
            if values is None:  # a null item or a surprise: the general path reports it
                return None
            completed.append(values)
        return completed

    def _batched_list(self, item_type: Any, field_details_list: Any, info: Any, path: Path,
                      items: Any, position_context: Any) -> Awaitable[list[Any]] | None:
        """A list of objects whose selection is plain leaves and ``@batched`` fields
        (``gql_usage.graphql.batched``): each batched field computed once for the list;
        None if the list is not of that kind."""
        named = self._object_list(item_type, field_details_list, path, items)
        if named is None or not items or any(item is None for item in items):
            return None
        grouped_field_set = self._subfields(named, field_details_list)
        if grouped_field_set is None:
            return None
        plan = self._batch_plan(named, grouped_field_set)
        if plan is None:
            return None
        # What complete_object_value checks for each item (Strawberry gives a type with
        # interfaces an ``is_type_of``): anything but True goes the general way.
        is_type_of = named.is_type_of
        if is_type_of is not None and not all(is_type_of(item, info) is True
                                              for item in items):
            return None
        rules = object_type_rules(named)
        if rules:
            enforce(rules, info)  # what complete_object_value checks for each item

        async def general() -> list[Any]:
            result: Any = super(FastExecutionContext, self).complete_iterable_value(
                item_type, field_details_list, info, path, items, position_context)
            return await result if self.is_awaitable(result) else result

        async def complete() -> list[Any]:
            answers = await self._batch_answers(named, plan, path.add_key(0))
            if answers is None:
                return await general()
            completed = _batched_values(plan, answers, items)
            return await general() if completed is None else completed
        return complete()

    async def _batch_answers(self, parent_type: GraphQLObjectType, plan: _BatchPlan,
                             item_path: Path) -> dict[str, Any] | None:
        """Each batched field's per-object answer function, or None (a refused
        permission, an error) to take the general path, which reports it per object.
        The batches start together (in one loop turn, as the resolvers would: their
        loads share one dispatch)."""
        started: dict[str, Awaitable[Any]] = {}
        try:
            for entry in plan:
                if not isinstance(entry, _Batched):
                    continue
                first = entry.details[0]
                raw_info = self.build_resolve_info(
                    entry.field_def, [d.node for d in entry.details], parent_type,
                    item_path.add_key(entry.response_name))
                info = self.schema._strawberry_schema.config.info_class(  # type: ignore[attr-defined]
                    _raw_info=raw_info, _field=entry.field)
                if not batched.permitted(entry.field, info):
                    raise _Refused
                coerced = get_argument_values(entry.field_def, first.node,
                                              self.variable_values,
                                              first.fragment_variable_values,
                                              self.hide_suggestions)
                kwargs = batched.arguments(entry.field, coerced, self.schema, info)
                started[entry.response_name] = entry.batch(info, **kwargs)
        except Exception:  # noqa: BLE001 - the general path reports it, per object
            for pending in started.values():
                if inspect.iscoroutine(pending):
                    pending.close()
            return None
        names = list(started)
        if len(names) == 1:
            try:
                results: list[Any] = [await started[names[0]]]
            except Exception:  # noqa: BLE001 - the general path reports it, per object
                return None
        else:
            results = await asyncio.gather(*started.values(), return_exceptions=True)
        if not all(callable(r) and not isinstance(r, BaseException) for r in results):
            return None
        return dict(zip(names, results, strict=True))

    def _batch_plan(self, parent_type: GraphQLObjectType, grouped_field_set: Any
                    ) -> _BatchPlan | None:
        """Per field, its plain leaf or its batch (at least one batch), examined once per
        group; None if some field is neither."""
        key = id(grouped_field_set)
        cached = self._batch_plans.get(key)
        if cached is not None and cached[0] is grouped_field_set:
            return cached[1]
        plan: _BatchPlan | None = None
        middleware = self.middleware_manager
        if middleware is None or not middleware.middlewares:
            entries: list[_Leaf | _Batched] = []
            for response_name, details in grouped_field_set.items():
                entry = (_plain_leaf(self, parent_type, response_name, details)
                         or self._batched_field(parent_type, response_name, details))
                if entry is None:
                    break
                entries.append(entry)
            else:
                if any(isinstance(entry, _Batched) for entry in entries):
                    plan = tuple(entries)
        self._batch_plans[key] = (grouped_field_set, plan)
        return plan

    def _batched_field(self, parent_type: GraphQLObjectType, response_name: str,
                       details: Any) -> _Batched | None:
        field_def = self.schema.get_field(parent_type, details[0].node.name.value)
        if field_def is None:
            return None
        found = batched.batch_of(field_def)
        returned = batched.object_type(field_def)
        if found is None or returned is None or object_type_rules(returned[0]):
            return None
        sub_fields = self._subfields(returned[0], details)
        leaves = None if sub_fields is None else self._plan(returned[0], sub_fields)
        if leaves is None:
            return None
        return _Batched(response_name, details, field_def, found[0], found[1], leaves,
                        returned[1])

    def _plan(self, parent_type: GraphQLObjectType, grouped_field_set: Any
              ) -> _LeafFields | None:
        """The group's fields if all are plain leaves, else None; examined once per
        group."""
        key = id(grouped_field_set)
        cached = self._plan_by_group.get(key)
        if cached is not None and cached[0] is grouped_field_set:
            return cached[1]
        middleware = self.middleware_manager  # a schema middleware must see every field
        plan: _LeafFields | None = None
        if middleware is None or not middleware.middlewares:
            fields = [_plain_leaf(self, parent_type, response_name, field_details_list)
                      for response_name, field_details_list in grouped_field_set.items()]
            if all(leaf is not None for leaf in fields):
                plan = tuple(leaf for leaf in fields if leaf is not None)
        self._plan_by_group[key] = (grouped_field_set, plan)
        return plan


_INT = (int, -(2**31), 2**31 - 1)
_SAFE_INT = (int, scalars.MIN_SAFE_INT, scalars.MAX_SAFE_INT)
_STR = (str, 0, 0)
#: Built-in scalars whose output value is the Python value itself when it has exactly
#: this type (and, for an int, lies in the scalar's range).
_OWN_OUTPUT: dict[int, _Own] = {id(GraphQLInt): _INT, id(GraphQLString): _STR}


def _own_output(named: Any) -> _Own | None:
    """``SafeInt``'s GraphQL type is made per schema: it is known by its serializer."""
    own = _OWN_OUTPUT.get(id(named))
    if own is None and getattr(named, "serialize", None) is scalars.serialize:
        own = _SAFE_INT
    return own


def _plain_values(leaves: _LeafFields, source: Any) -> dict[str, Any] | None:
    """The object's fields read as ``leaves`` says, or None to take the general path.

    A value that is exactly an ``int`` in the scalar's range (32-bit for ``Int``,
    ±(2^53 − 1) for ``SafeInt``) or a ``str`` (for ``String``) is its own output value;
    anything else goes through the scalar's own coercion, and anything that fails it
    takes the general path, which reports the error as it always does. One loop, no call
    per field: it runs for every point of a series."""
    results: dict[str, Any] = {}
    for response_name, attribute, named, non_null, own in leaves:
        if attribute is None:  # __typename: the object type's name
            results[response_name] = named
            continue
        try:
            value: Any = getattr(source, attribute)
            if value is None:
                if non_null:
                    return None  # let the general path raise the non-null error
                results[response_name] = None
                continue
            kind = type(value)
            if own is not None and kind is own[0] and (
                    kind is str or own[1] <= value <= own[2]):
                results[response_name] = value
                continue
            coerced = named.coerce_output_value(value)
        except Exception:  # noqa: BLE001 - the general path reports it
            return None
        if coerced is Undefined or coerced is None:
            return None
        results[response_name] = coerced
    return results


def _batched_values(plan: _BatchPlan, answers: dict[str, Any], items: list[Any]
                    ) -> list[dict[str, Any]] | None:
    """Each object's answer: its plain leaves read, each batched field's object from the
    batch read as plain leaves; None (a surprise) to take the general path."""
    leaves = tuple(entry for entry in plan if not isinstance(entry, _Batched))
    completed = []
    for item in items:
        plain = _plain_values(leaves, item)
        if plain is None:
            return None
        values: dict[str, Any] = {}  # in the selection's order
        for entry in plan:
            if not isinstance(entry, _Batched):
                values[entry[0]] = plain[entry[0]]
                continue
            try:
                answer = answers[entry.response_name](item)
            except Exception:  # noqa: BLE001 - the general path reports it, per object
                return None
            if answer is None:
                if entry.non_null:
                    return None
                values[entry.response_name] = None
                continue
            fields = _plain_values(entry.leaves, answer)
            if fields is None:
                return None
            values[entry.response_name] = fields
        completed.append(values)
    return completed


def _plain_leaf(context: FastExecutionContext, parent_type: GraphQLObjectType,
                response_name: str, field_details_list: Any) -> _Leaf | None:
    node = field_details_list[0].node
    if node.name.value == "__typename":  # what graphql-core answers: the object's type
        return (response_name, None, parent_type.name, True, None)
    field_def = context.schema.get_field(parent_type, node.name.value)
    if (field_def is None or field_def.args or node.arguments
            or not getattr(field_def.resolve, "_is_default", False)):
        return None
    named = field_def.type.of_type if isinstance(field_def.type, GraphQLNonNull) \
        else field_def.type
    strawberry_field = (field_def.extensions or {}).get(_BACKREF)
    # A field extension (a permission) must run: Strawberry marks an attribute
    # field with extensions ``_is_default`` all the same.
    if not is_leaf_type(named) or strawberry_field is None or strawberry_field.extensions:
        return None
    return (response_name, strawberry_field.python_name, named,
            isinstance(field_def.type, GraphQLNonNull), _own_output(named))

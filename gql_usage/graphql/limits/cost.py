"""The static cost of an operation, computed before execution, and the argument checks
made on the way. See README, 'Limits' ("Query cost", "Arguments are checked before
execution"); the tables naming schema fields are checked against the schema by
``cost_map.validate_cost_map``."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLIncludeDirective,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLSkipDirective,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    SourceLocation,
    get_argument_values,
    get_directive_values,
    get_named_type,
    get_nullable_type,
    get_variable_values,
    is_abstract_type,
    is_leaf_type,
    is_list_type,
    is_object_type,
    type_from_ast,
)
from graphql.language import get_location

from gql_usage import calendar
from gql_usage.alerts.outbox import DEFAULT_FIRST, MAX_FIRST
from gql_usage.analytics import spikes
from gql_usage.analytics.layout import bucket_layout
from gql_usage.analytics.periods import NoPreviousPeriod, previous_period
from gql_usage.graphql.errors import BAD_USER_INPUT, BadUserInput
from gql_usage.graphql.filters import check_filter
from gql_usage.storage.catalogue import ListSizes

Field = tuple[str, str]
"""A field of the schema: (type name, field name)."""

#: Arguments the calculator reads.
FILTER = "filter"
GRANULARITY = "granularity"
BY = "by"
LIMIT = "limit"
OTHER = "other"
INCLUDE_REVOKED = "includeRevoked"
FIRST = "first"

#: Fields the calculator treats specially. ``Account.usage``'s range is the one its
#: ``series`` are counted over.
ACCOUNT_USAGE: Field = ("Account", "usage")
SERIES: Field = ("UsageReport", "series")
BREAKDOWN: Field = ("UsageReport", "breakdown")
#: The same report over the period before: priced as ``Account.usage``, over that period.
PREVIOUS: Field = ("UsageReport", "previous")
SPIKES: Field = ("UsageReport", "spikes")
SPIKE_DRIVERS: Field = ("UsageSpike", "drivers")
API_KEYS: Field = ("Account", "apiKeys")
ENDPOINTS: Field = ("Account", "endpoints")
SOURCES: Field = ("Account", "sources")
#: Priced by ``first`` (default 20, at most 100): each alert one point, plus its fields.
ALERTS: Field = ("Account", "alerts")

#: Assumed size of a list whose size is not known before execution, and the least an
#: account's list (``SIZED_LISTS``) is priced at.
ASSUMED_LIST_SIZE = 100
#: Lists priced by the account's real number of rows (``gql_usage.storage.catalogue.ListSizes``).
SIZED_LISTS: frozenset[Field] = frozenset({API_KEYS, ENDPOINTS, SOURCES, BREAKDOWN})
#: The most rows a breakdown can have, by its ``by`` value.
BREAKDOWN_ROWS: Mapping[str, Callable[[ListSizes], int]] = {
    "ENDPOINT": lambda s: s.used_endpoints, "API_KEY": lambda s: s.api_keys_all,
    "SOURCE": lambda s: s.used_sources, "USER": lambda s: s.users}
#: Surcharge of each usage aggregate.
AGGREGATE_POINTS = 5
#: Cost of ``__schema`` / ``__type`` (answered from memory).
INTROSPECTION_POINTS = 1

#: The usage aggregates: each adds ``AGGREGATE_POINTS``. ``CreditPool.forecast`` reads the
#: burn-rate window's totals, ``ApiKey.budget`` the period's totals by key.
AGGREGATES: frozenset[Field] = frozenset({ACCOUNT_USAGE, SERIES, BREAKDOWN, PREVIOUS,
                                          SPIKES, ("ApiKey", "usage"),
                                          ("Endpoint", "usage"), ("CreditPool", "forecast"),
                                          ("ApiKey", "budget")})
#: Aggregates that run a second one: ``spikes`` reads its series with the look-back,
#: then its drivers (one more statement); each adds ``AGGREGATE_POINTS`` once more.
TWICE_AGGREGATED: frozenset[Field] = frozenset({SPIKES})
#: Fields that cost nothing.
FREE: frozenset[Field] = frozenset({("Query", "rateLimit")})
#: Fields with a ``filter: UsageFilter!`` argument.
FILTERED: frozenset[Field] = frozenset({ACCOUNT_USAGE, ("ApiKey", "usage"),
                                        ("Endpoint", "usage")})
#: An operation with no maximum cost (``CostCalculator.for_operation`` in tests).
UNLIMITED = sys.maxsize


def enum_key(value: object) -> str:
    """The name a table keys an enum argument's value by (Strawberry passes members)."""
    return str(getattr(value, "value", value))


@dataclass(frozen=True)
class _Range:
    tz_name: str
    start_us: int
    end_us: int


def _range_of(usage_filter: object, default_tz: str) -> _Range | None:
    """The range of a ``UsageFilter`` argument, checked as the resolver checks it
    (``BadUserInput`` naming the argument); None when there is no filter value (execution
    then refuses the request itself)."""
    if not isinstance(usage_filter, dict):
        return None
    return _Range(*check_filter(usage_filter, default_tz))


def _previous(rng: _Range) -> _Range:
    """The range ``UsageReport.previous`` reports on (``gql_usage.analytics.periods``)."""
    start, end = previous_period(rng.start_us, rng.end_us, calendar.zone(rng.tz_name))
    return _Range(rng.tz_name, start, end)


def _granularity(granularity: object) -> calendar.Granularity | None:
    try:
        return calendar.Granularity(enum_key(granularity))
    except ValueError:
        return None


def bucket_count(rng: _Range | None, granularity: object) -> int:
    """Buckets of a series, as ``gql_usage.calendar`` lays them out; raises
    ``calendar.TooManyBuckets`` past 2,000. A range sure to be too long is refused by
    arithmetic alone (``calendar.min_buckets``); any other is counted with the layout the
    resolver and the loader then use (``bucket_layout``, kept by range: laid out once
    per request)."""
    g = _granularity(granularity)
    if rng is None or g is None:
        return 1
    calendar.check_bucket_limit(rng.start_us, rng.end_us, g)
    return len(bucket_layout(rng.tz_name, rng.start_us, rng.end_us, g).buckets)


@dataclass(frozen=True)
class ArgumentRefusal:
    """An argument known to be wrong before execution: the whole operation is refused."""

    argument: str                     # within its field: ``filter.timeZone``, ``limit``
    detail: str                       # what is wrong, what to do
    path: tuple[str, ...]             # response keys from the root (no list indices)
    locations: tuple[tuple[int, int], ...]  # of the argument in the document

    @property
    def message(self) -> str:
        return f"{'.'.join(self.path)}({self.argument}): {self.detail}"

    def error(self) -> GraphQLError:
        """A fresh error each time (error objects are changed on their way out)."""
        error = GraphQLError(self.message, path=list(self.path), extensions={
            "code": BAD_USER_INPUT, "argument": self.argument})
        error.locations = [SourceLocation(line, column)
                           for line, column in self.locations] or None
        return error


class RefusedArgument(Exception):
    """Raised by ``CostCalculator`` for an argument known to be wrong."""

    def __init__(self, refusal: ArgumentRefusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


class _TooCostly(Exception):
    """The cost passed its limit; ``at_least`` is what is known of it so far."""

    def __init__(self, at_least: int) -> None:
        super().__init__(at_least)
        self.at_least = at_least


@dataclass(frozen=True)
class Assessment:
    """What the pass before execution found: the cost, or why the operation is refused."""

    cost: int  # the exact cost; when ``too_costly``, a lower bound above the maximum
    too_costly: bool = False
    refusal: ArgumentRefusal | None = None


class CostCalculator:
    """The static cost of one operation (README, 'Limits', "Query cost")."""

    def __init__(self, schema: GraphQLSchema, document: DocumentNode,
                 variables: Any, default_time_zone: str, sizes: ListSizes | None = None) -> None:
        self.schema = schema
        self.variables = variables
        self.default_time_zone = default_time_zone
        self.sizes = sizes
        self.fragments = {d.name.value: d for d in document.definitions
                          if isinstance(d, FragmentDefinitionNode)}

    @classmethod
    def for_operation(cls, schema: GraphQLSchema, document: DocumentNode,
                      operation: OperationDefinitionNode, raw_variables: dict[str, Any] | None,
                      default_time_zone: str, sizes: ListSizes | None = None) -> int | None:
        """Cost of the operation; None when the variables do not coerce (the execution
        then refuses the request itself, before any resolver). Raises ``RefusedArgument``
        for an argument known to be wrong. Without ``sizes`` the account's lists count
        ``ASSUMED_LIST_SIZE`` each (the least they can cost)."""
        assessment = cls.assess(schema, document, operation, raw_variables,
                                default_time_zone, UNLIMITED, sizes)
        if assessment is not None and assessment.refusal is not None:
            raise RefusedArgument(assessment.refusal)
        return None if assessment is None else assessment.cost

    @classmethod
    def assess(cls, schema: GraphQLSchema, document: DocumentNode,
               operation: OperationDefinitionNode, raw_variables: dict[str, Any] | None,
               default_time_zone: str, max_cost: int,
               sizes: ListSizes | None = None) -> Assessment | None:
        """The cost, checking arguments on the way and stopping as soon as it passes
        ``max_cost``; None when the variables do not coerce."""
        variables = get_variable_values(schema, operation.variable_definitions or (),
                                        raw_variables or {})
        if isinstance(variables, list):
            return None
        calc = cls(schema, document, variables, default_time_zone, sizes)
        try:
            return Assessment(calc.operation_cost(operation, max_cost))
        except _TooCostly as exc:
            return Assessment(exc.at_least, too_costly=True)
        except RefusedArgument as exc:
            return Assessment(0, refusal=exc.refusal)

    def operation_cost(self, operation: OperationDefinitionNode, limit: int = UNLIMITED) -> int:
        """The cost; raises ``_TooCostly`` once past ``limit`` and ``RefusedArgument``."""
        root = self.schema.get_root_type(operation.operation)
        if root is None:
            return 1
        cost = max(1, self._selection_cost([operation.selection_set], root, None, (), limit))
        if cost > limit:
            raise _TooCostly(cost)
        return cost

    def _included(self, node: FieldNode | InlineFragmentNode | FragmentSpreadNode) -> bool:
        try:
            skip = get_directive_values(GraphQLSkipDirective, node, self.variables)
            include = get_directive_values(GraphQLIncludeDirective, node, self.variables)
        except GraphQLError:
            return True
        return not (skip and skip.get("if")) and not (include and not include.get("if"))

    def _applies(self, fragment: InlineFragmentNode | FragmentDefinitionNode,
                 type_: GraphQLObjectType) -> bool:
        if fragment.type_condition is None:
            return True
        condition = type_from_ast(self.schema, fragment.type_condition)
        if condition is type_:
            return True
        return is_abstract_type(condition) and self.schema.is_sub_type(
            condition, type_)  # type: ignore[arg-type]

    def _collect(self, selection_sets: Iterable[SelectionSetNode], type_: GraphQLObjectType,
                 fields: dict[str, list[FieldNode]], path: frozenset[str]) -> None:
        """Fields by response key, as execution merges them; fragments on a cycle are
        not entered twice."""
        for selection_set in selection_sets:
            for node in selection_set.selections:
                if not self._included(node):  # type: ignore[arg-type]
                    continue
                if isinstance(node, FieldNode):
                    key = node.alias.value if node.alias else node.name.value
                    fields.setdefault(key, []).append(node)
                elif isinstance(node, InlineFragmentNode):
                    if self._applies(node, type_):
                        self._collect([node.selection_set], type_, fields, path)
                elif isinstance(node, FragmentSpreadNode):
                    name = node.name.value
                    fragment = self.fragments.get(name)
                    if fragment is not None and name not in path and self._applies(
                            fragment, type_):
                        self._collect([fragment.selection_set], type_, fields, path | {name})

    def _selection_cost(self, selection_sets: list[SelectionSetNode], type_: Any,
                        scope: _Range | None, path: tuple[str, ...], limit: int) -> int:
        """At most ``limit``, else ``_TooCostly`` with what is known."""
        if is_abstract_type(type_):
            return max((self._selection_cost(selection_sets, t, scope, path, limit)
                        for t in self.schema.get_possible_types(type_)), default=0)
        if not is_object_type(type_):
            return 0
        fields: dict[str, list[FieldNode]] = {}
        self._collect(selection_sets, type_, fields, frozenset())
        total = 0
        for key, nodes in fields.items():
            try:
                total += self._field_cost(type_, nodes, scope, (*path, key), limit - total)
            except _TooCostly as exc:
                exc.at_least += total
                raise
        return total

    def _refuse(self, node: FieldNode, path: tuple[str, ...], argument: str,
                detail: str) -> RefusedArgument:
        name = argument.split(".", 1)[0].split("[", 1)[0]
        at = next((a for a in node.arguments or () if a.name.value == name), node)
        loc = at.loc
        locations = () if loc is None else (tuple(get_location(loc.source, loc.start)),)
        return RefusedArgument(ArgumentRefusal(argument, detail, path,
                                               locations))  # type: ignore[arg-type]

    def _field_cost(self, parent: GraphQLObjectType, nodes: list[FieldNode],
                    scope: _Range | None, path: tuple[str, ...], limit: int) -> int:
        name = nodes[0].name.value
        if name == "__typename":
            return 0
        if name in ("__schema", "__type"):
            if INTROSPECTION_POINTS > limit:
                raise _TooCostly(INTROSPECTION_POINTS)
            return INTROSPECTION_POINTS
        field_def = parent.fields.get(name)
        where = (parent.name, name)
        if field_def is None or where in FREE:
            return 0
        named = get_named_type(field_def.type)
        if is_leaf_type(named):
            return 0
        try:
            args = get_argument_values(field_def, nodes[0], self.variables)
        except GraphQLError:
            args = {}
        own = AGGREGATE_POINTS if where in AGGREGATES else 0
        if where in TWICE_AGGREGATED:
            own += AGGREGATE_POINTS
        if where in FILTERED:
            try:
                rng = _range_of(args.get(FILTER), self.default_time_zone)
            except BadUserInput as exc:
                argument = exc.argument or FILTER
                raise self._refuse(nodes[0], path, argument,
                                   str(exc).removeprefix(f"{argument}: ")) from None
            if where == ACCOUNT_USAGE:
                scope = rng
        if where == PREVIOUS and scope is not None:
            try:
                scope = _previous(scope)
            except NoPreviousPeriod as exc:
                raise self._refuse(nodes[0], path, f"{FILTER}.from", str(exc)) from None
        size = 1
        if where == SERIES:
            granularity = _granularity(args.get(GRANULARITY))
            if scope is not None and granularity is not None:
                # The bound first: an exact count only when it can still fit.
                least = calendar.min_buckets(scope.start_us, scope.end_us, granularity)
                if least <= calendar.MAX_BUCKETS and own + least > limit:
                    raise _TooCostly(own + least)
            try:
                size = bucket_count(scope, args.get(GRANULARITY))
            except calendar.TooManyBuckets as exc:
                raise self._refuse(nodes[0], path, GRANULARITY, str(exc)) from None
        elif where == BREAKDOWN:
            limit_arg = args.get(LIMIT)
            if limit_arg is not None and limit_arg < 0:
                raise self._refuse(nodes[0], path, LIMIT, "must be 0 or more")
            rows = self._list_size(where, args)
            # With ``other``, a cut adds its "Other" row.
            shown = None if limit_arg is None else limit_arg + (1 if args.get(OTHER) else 0)
            size = rows if shown is None else min(shown, rows)
        elif where == SPIKES:
            size = self._spikes_size(nodes[0], path, scope, args)
        elif where == SPIKE_DRIVERS:
            size = spikes.MAX_DRIVERS
        elif where == ALERTS:
            first = args.get(FIRST)
            size = DEFAULT_FIRST if first is None else first
            if not 0 <= size <= MAX_FIRST:
                raise self._refuse(nodes[0], path, FIRST, f"must be 0 to {MAX_FIRST}")
        elif is_list_type(get_nullable_type(field_def.type)):  # type: ignore[arg-type]
            size = self._list_size(where, args)
        if own + size > limit:
            raise _TooCostly(own + size)
        # Each of `size` elements may cost at most this much for the field to fit.
        child_limit = UNLIMITED if size == 0 else (limit - own) // size - 1
        children = [n.selection_set for n in nodes if n.selection_set is not None]
        try:
            child = self._selection_cost(children, named, scope, path, child_limit)
        except _TooCostly as exc:
            exc.at_least = own + size * (1 + exc.at_least)
            raise
        return own + size * (1 + child)


    def _spikes_size(self, node: FieldNode, path: tuple[str, ...], scope: _Range | None,
                     args: dict[str, Any]) -> int:
        """At most ``limit`` spikes, and no more than the range's buckets; refuses a
        negative ``limit`` and a range whose buckets, with the look-back, pass 2,000."""
        limit_arg = args.get(LIMIT)
        if not isinstance(limit_arg, int):
            return ASSUMED_LIST_SIZE
        if limit_arg < 0:
            raise self._refuse(node, path, LIMIT, "must be 0 or more")
        granularity = _granularity(args.get(GRANULARITY))
        if scope is None or granularity is None:
            return limit_arg
        try:
            spikes.look_back(scope.tz_name, scope.start_us, scope.end_us, granularity)
        except calendar.TooManyBuckets as exc:
            raise self._refuse(node, path, GRANULARITY, str(exc)) from None
        return min(limit_arg, bucket_count(scope, granularity))

    def _list_size(self, where: Field, args: dict[str, Any]) -> int:
        """Rows a list can hold: the account's real number for its lists (at least
        ``ASSUMED_LIST_SIZE``), ``ASSUMED_LIST_SIZE`` for any other."""
        s = self.sizes
        if s is None:
            return ASSUMED_LIST_SIZE
        real: int | None = None
        if where == API_KEYS:
            real = s.api_keys_all if args.get(INCLUDE_REVOKED) else s.api_keys
        elif where == ENDPOINTS:
            real = s.endpoints
        elif where == SOURCES:
            real = s.sources
        elif where == BREAKDOWN:
            rows = BREAKDOWN_ROWS.get(enum_key(args.get(BY)))
            real = None if rows is None else rows(s)
        return ASSUMED_LIST_SIZE if real is None else max(real, ASSUMED_LIST_SIZE)


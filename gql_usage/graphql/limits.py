"""Query limits, static query cost and the per-viewer rate limit.

Every limit refuses an operation *before it executes*, so a refused operation runs no
analytics SQL (authentication, which reads the viewer, has run already). Each refusal is
a GraphQL error whose ``extensions.code`` says which limit applied and whose message says
what to change.

==========================  ===========================================================
code                        refused because
==========================  ===========================================================
``QUERY_TOO_DEEP``          selections nested deeper than ``max_query_depth``
``TOO_MANY_ALIASES``        more aliases in the document than ``max_aliases``
``TOO_MANY_TOKENS``         more lexical tokens in the document than ``max_tokens``
``QUERY_TOO_COSTLY``        static cost above ``max_query_cost`` (``extensions.cost``: at
                            least this much, ``extensions.maxCost``), or fragment spreads
                            expanding to more than ``MAX_EXPANDED_FIELDS`` fields
                            (before validation)
``BAD_USER_INPUT``          an argument known to be wrong before execution (a filter's
                            time zone, range, ids or texts; a series over 2,000 buckets;
                            a negative ``limit``): ``extensions.argument``, ``path`` the
                            field's response keys, the message names both
``RATE_LIMITED``            cost above what is left of the viewer's budget this window
                            (``extensions.cost``, ``remaining``, ``limit``, ``resetAt``;
                            HTTP 429 with ``Retry-After``)
``INTROSPECTION_DISABLED``  ``__schema`` / ``__type`` while introspection is off
``TOO_MANY_OPERATIONS``     a batched HTTP request with more than
                            ``max_batch_operations`` operations (HTTP 400)
==========================  ===========================================================

Depth, aliases and introspection use Strawberry's own validation rules
(``QueryDepthLimiter``, ``MaxAliasesLimiter``, ``DisableIntrospection``) and tokens its
``MaxTokensLimiter``; this module only gives their errors a code and advice.

Cost model
----------
The cost of an operation is computed from the validated document and the request's
variables, before execution, in the spirit of GitHub's and Shopify's GraphQL limits.
Fragments and inline fragments are followed (cycle-safe), ``@skip``/``@include`` are
honoured, fields merged under one response key count once, and an abstract type (``node``
returns the ``Node`` interface) costs as much as its most expensive possible type.

* A scalar or enum field costs 0; ``__typename`` 0; ``__schema`` and ``__type`` 1.
* A field returning an object costs 1 plus the cost of its selection.
* A field returning a list of objects costs ``size x (1 + cost of its selection)``:
  each element is an object. ``size`` is

  - ``series(granularity)``: the number of buckets of the enclosing ``usage`` filter's
    range in its time zone (``gql_usage.calendar``; a DAY series over 365 days is 365 or
    366 buckets), at most 2,000 (a larger series refuses the operation, ``BAD_USER_INPUT``);
  - ``breakdown(by, limit)``: ``min(limit, rows)``, or ``rows`` without a limit, where
    ``rows`` is the most rows the breakdown can have: the account's used endpoints, used
    sources, API keys or users (``gql_usage.catalogue.ListSizes``);
  - ``apiKeys``, ``endpoints``, ``sources``: the account's real number of them;
  - any other list: ``ASSUMED_LIST_SIZE`` (100).

  A real number below ``ASSUMED_LIST_SIZE`` counts as 100: up to 100 items the cost is
  what the static formula says (predictable for a client writing queries), beyond that
  it grows with the account. The numbers are counted in one statement before the
  operation executes, only when it has such a list and its cost at 100 per list would
  not be refused anyway (``list_sizes``; a static cost without the counts is a lower
  bound, so a refusal on it stands).
* The usage aggregates ``Account.usage``, ``UsageReport.series``, ``UsageReport.breakdown``,
  ``ApiKey.usage`` and ``Endpoint.usage`` add ``AGGREGATE_POINTS`` (5) each time they are
  resolved (inside a list, once per element).
* ``rateLimit`` is free, so a client can always ask for its budget.
* Every operation costs at least 1 point.

Example: ``{ viewer { id } account { usage(filter: <7 UTC days>) { calls
series(granularity: DAY) { start } breakdown(by: ENDPOINT, limit: 3) { key endpoint
{ path } } } apiKeys { id } } }`` costs viewer 1 + account 1 + usage (5 + 1) + series
(5 + 7 x 1) + breakdown (5 + 3 x (1 + 1)) + apiKeys (100 x 1) = 131.

The pass stops as soon as the cost passes ``max_query_cost`` (the refusal reports the
cost known so far, a lower bound), and it checks arguments on the way: the first wrong
one refuses the whole operation (``data: null``) before any SQL (SPEC 6.1). A series'
buckets are bounded from below by arithmetic first (``calendar.min_buckets``: a range
sure to hold over 2,000 buckets is refused without consulting its zone, and one whose
bound already passes the maximum is too costly); only then are they counted exactly,
DAY/WEEK/MONTH without scanning the zone's offsets.

Rate limit
----------
Each viewer (account + user) may spend ``rate_limit_points`` per fixed one-minute window,
which starts with the viewer's first charged operation. An operation is charged its cost
when it executes; an operation refused by the cost pass (too costly, a wrong argument) is
charged ``REFUSAL_POINTS``, and once that no longer fits it is answered ``RATE_LIMITED``.
Refusals by validation (depth, aliases, tokens, introspection) are not charged. Budgets
are counted with the ``limits`` library's fixed-window strategy, in process memory
(``memory://``, the default: one budget per server process) or in Redis
(``rate_limit_storage_url`` ``redis://host:port/db``: one budget shared by every process
and instance using it; if Redis is down, each process counts in its own memory, with a
logged warning). Every GraphQL response carries ``X-RateLimit-Limit``,
``X-RateLimit-Remaining``, ``X-RateLimit-Used``, ``X-RateLimit-Reset`` (Unix seconds) and
``X-Query-Cost`` (the points charged for the request's operations, summed over a batch);
the ``rateLimit`` field gives the same figures for the operation that asks.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import orjson
import redis.asyncio
from cross_web import HTTPException
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
    ValidationContext,
    get_argument_values,
    get_directive_values,
    get_named_type,
    get_nullable_type,
    get_operation_ast,
    get_variable_values,
    is_abstract_type,
    is_leaf_type,
    is_list_type,
    is_object_type,
    type_from_ast,
)
from graphql import ExecutionResult as GraphQLExecutionResult
from graphql.error import GraphQLSyntaxError
from graphql.language import get_location
from graphql.validation import ASTValidationRule, NoSchemaIntrospectionCustomRule
from limits import RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import FixedWindowRateLimiter
from limits.errors import StorageError
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    SchemaExtension,
)

from gql_usage import calendar
from gql_usage.analytics.layout import bucket_layout
from gql_usage.caches import MIB, ByteLRU, digest, text_digest
from gql_usage.catalogue import ListSizes, list_sizes
from gql_usage.graphql.errors import (
    BAD_USER_INPUT,
    INTROSPECTION_DISABLED,
    QUERY_TOO_COSTLY,
    QUERY_TOO_DEEP,
    RATE_LIMITED,
    TOO_MANY_ALIASES,
    TOO_MANY_OPERATIONS,
    TOO_MANY_TOKENS,
    BadUserInput,
)
from gql_usage.graphql.filters import check_filter
from gql_usage.settings import Settings

#: Assumed size of a list whose size is not known before execution, and the least an
#: account's list (``SIZED_LISTS``) is priced at.
ASSUMED_LIST_SIZE = 100
#: Lists priced by the account's real number of rows (``gql_usage.catalogue.ListSizes``).
SIZED_LISTS = frozenset({"apiKeys", "endpoints", "sources", "breakdown"})
#: Surcharge of each usage aggregate.
AGGREGATE_POINTS = 5
#: Cost of ``__schema`` / ``__type`` (answered from memory).
INTROSPECTION_POINTS = 1
#: What an operation refused before execution (too costly, a wrong argument) is charged:
#: refusing is cheap, but not free, so a client cannot repeat refusals without limit.
REFUSAL_POINTS = 100
#: Length of a rate-limit window, in seconds.
WINDOW_SECONDS = 60
#: Most field selections a document may expand to through its fragment spreads (checked
#: before validation: Strawberry's depth and alias rules walk every expanded path).
MAX_EXPANDED_FIELDS = 10_000

AGGREGATES = frozenset({("Account", "usage"), ("UsageReport", "series"),
                        ("UsageReport", "breakdown"), ("ApiKey", "usage"),
                        ("Endpoint", "usage")})
FREE = frozenset({("Query", "rateLimit")})

Clock = Callable[[], float]
_T = TypeVar("_T")


# --- Rate limit ------------------------------------------------------------------------

#: Seconds the limiter waits for the shared store (to connect, or to answer a command)
#: before it counts the store as down.
STORE_TIMEOUT_SECONDS = 0.5
#: After the shared store failed, seconds the limiter counts in process memory before it
#: tries the store again (so an outage costs one timeout per interval, not per request).
STORE_RETRY_SECONDS = 5.0

log = logging.getLogger("gql_usage.rate_limit")


@dataclass(frozen=True)
class Budget:
    """A viewer's budget in the current window."""

    limit: int
    used: int
    reset_at: float  # Unix time the window ends

    @property
    def remaining(self) -> int:
        return max(self.limit - self.used, 0)

    def reset_datetime(self) -> datetime:
        return datetime.fromtimestamp(self.reset_at, UTC)


@dataclass(frozen=True)
class Charge:
    """What one operation cost and the budget it left."""

    cost: int
    budget: Budget


class _ClockedMemoryStorage(MemoryStorage):
    """``limits``' in-process storage for fixed windows, on the limiter's clock instead of
    ``time.time`` (tests move time): a window starts with the first increment of its key
    and ends ``expiry`` seconds later."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock

    async def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        now = self.clock()
        if self.expirations.get(key, 0.0) <= now:
            if len(self.expirations) >= 10_000:
                for old in [k for k, end in self.expirations.items() if end <= now]:
                    del self.expirations[old], self.storage[old]
            self.expirations[key] = now + expiry
            self.storage[key] = 0
        self.storage[key] += amount
        return self.storage[key]

    async def get(self, key: str) -> int:
        if self.expirations.get(key, 0.0) <= self.clock():
            return 0
        return self.storage[key]

    async def get_expiry(self, key: str) -> float:
        now = self.clock()
        return max(self.expirations.get(key, now), now)


class RateLimiter:
    """Fixed windows of ``points`` per key (a viewer), counted by the ``limits`` library's
    fixed-window strategy: in this process's memory (``memory://``), or in Redis
    (``redis://host:port/db``), one budget shared by every process using that Redis.

    While Redis cannot be reached the limiter fails open to this process's memory (each
    process then enforces the budget on its own) with a logged warning, and tries Redis
    again every ``STORE_RETRY_SECONDS``."""

    def __init__(self, points: int, *, storage_url: str = "memory://",
                 clock: Clock = time.time, window_seconds: int = WINDOW_SECONDS) -> None:
        if points <= 0:
            raise ValueError("points must be positive")
        self.points = points
        self.clock = clock
        self.window_seconds = window_seconds
        self.item = RateLimitItemPerSecond(points, window_seconds, namespace="gql_usage")
        self._local = FixedWindowRateLimiter(_ClockedMemoryStorage(clock))
        self._pool: redis.asyncio.ConnectionPool | None = None
        self._shared: FixedWindowRateLimiter | None = None
        self._store = _redacted(storage_url)
        if urlsplit(storage_url).scheme != "memory":
            # A connection the server closed (a Redis restart) is retried once, at once,
            # on a new connection; a timeout is not retried.
            self._pool = redis.asyncio.ConnectionPool.from_url(
                storage_url, socket_timeout=STORE_TIMEOUT_SECONDS,
                socket_connect_timeout=STORE_TIMEOUT_SECONDS,
                retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)))
            # The pool is redis-py's (``implementation="redispy"``), so that it can be
            # closed; ``connection_pool`` is a documented option, typed as a plain value.
            self._shared = FixedWindowRateLimiter(RedisStorage(
                "async+" + storage_url.replace("unix://", "redis+unix://", 1),
                implementation="redispy", wrap_exceptions=True,
                connection_pool=self._pool))  # type: ignore[arg-type]
        self._retry_at: float | None = None  # monotonic time; set while the store is down

    async def peek(self, key: object) -> Budget:
        ids = _identifiers(key)
        return await self._run(lambda limiter: self._budget(limiter, ids))

    async def charge(self, key: object, cost: int) -> tuple[bool, Budget]:
        """Spend ``cost`` if it fits in what is left; (charged?, budget afterwards)."""
        ids = _identifiers(key)
        return await self._run(lambda limiter: self._charge(limiter, ids, cost))

    async def check(self) -> bool:
        """Whether the shared store answers a ping (true in memory); logs if not."""
        if self._shared is None or await self._shared.storage.check():
            return True
        log.warning("rate-limit store %s unreachable; until it answers, budgets are "
                    "counted in each process's memory", self._store)
        return False

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()

    async def _charge(self, limiter: FixedWindowRateLimiter, ids: tuple[str, ...],
                      cost: int) -> tuple[bool, Budget]:
        # ``test`` refuses without writing; ``hit`` (an atomic increment) decides between
        # processes racing for the last points. A hit that overshot is given back, so a
        # refused operation is not charged.
        if await limiter.test(self.item, *ids, cost=cost):
            if await limiter.hit(self.item, *ids, cost=cost):
                return True, await self._budget(limiter, ids)
            await limiter.storage.incr(self.item.key_for(*ids), self.item.get_expiry(),
                                       amount=-cost)
        return False, await self._budget(limiter, ids)

    async def _budget(self, limiter: FixedWindowRateLimiter, ids: tuple[str, ...]) -> Budget:
        reset_at, remaining = await limiter.get_window_stats(self.item, *ids)
        used = self.points - remaining
        if used <= 0:  # no window yet: one would start now
            return Budget(self.points, 0, self.clock() + self.window_seconds)
        return Budget(self.points, used, reset_at)

    async def _run(self, op: Callable[[FixedWindowRateLimiter], Awaitable[_T]]) -> _T:
        shared = self._shared
        if shared is not None and (self._retry_at is None
                                   or time.monotonic() >= self._retry_at):
            try:
                result = await op(shared)
            except (StorageError, RedisError, OSError) as exc:
                if self._retry_at is None:
                    log.warning("rate-limit store %s unreachable (%s); counting budgets in "
                                "this process's memory, retrying every %g s", self._store,
                                exc, STORE_RETRY_SECONDS)
                self._retry_at = time.monotonic() + STORE_RETRY_SECONDS
            else:
                if self._retry_at is not None:
                    log.info("rate-limit store %s reachable again; budgets shared",
                                self._store)
                    self._retry_at = None
                return result
        return await op(self._local)


def _identifiers(key: object) -> tuple[str, ...]:
    return tuple(str(part) for part in key) if isinstance(key, tuple) else (str(key),)


def _redacted(url: str) -> str:
    """``url`` without its password (for logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username or ''}:***@{host}").geturl()


def rate_limit_headers(budget: Budget, cost: int) -> dict[str, str]:
    return {"X-RateLimit-Limit": str(budget.limit),
            "X-RateLimit-Remaining": str(budget.remaining),
            "X-RateLimit-Used": str(budget.used),
            "X-RateLimit-Reset": str(math.ceil(budget.reset_at)),
            "X-Query-Cost": str(cost)}


def viewer_key(viewer: Any) -> tuple[int, int]:
    """Rate-limit key of a viewer: account and user."""
    return (viewer.account.id, viewer.user.id)


# --- Cost ------------------------------------------------------------------------------

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


def _granularity(granularity: object) -> calendar.Granularity | None:
    try:
        return calendar.Granularity(str(getattr(granularity, "value", granularity)))
    except ValueError:
        return None


def bucket_count(rng: _Range | None, granularity: object) -> int:
    """Buckets of a series, as ``gql_usage.calendar`` lays them out; raises
    ``calendar.TooManyBuckets`` past 2,000. A range sure to be too long is refused by
    arithmetic alone (``calendar.min_buckets``); DAY/WEEK/MONTH buckets are counted without
    scanning the zone's offsets, HOUR ones (then at most ~2,000 hours) with the layout the
    resolver and the loader use."""
    g = _granularity(granularity)
    if rng is None or g is None:
        return 1
    calendar.check_bucket_limit(rng.start_us, rng.end_us, g)
    if g is calendar.Granularity.HOUR:
        return len(bucket_layout(rng.tz_name, rng.start_us, rng.end_us, g).buckets)
    tz = calendar.zone(rng.tz_name)
    return len(calendar.buckets(tz, rng.start_us, rng.end_us, g))


#: An operation with no maximum cost (``CostCalculator.for_operation`` in tests).
UNLIMITED = sys.maxsize
#: Fields with a ``filter: UsageFilter!`` argument.
FILTERED = frozenset({("Account", "usage"), ("ApiKey", "usage"), ("Endpoint", "usage")})


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
    """The static cost of one operation (see the module docstring)."""

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
        if where in FILTERED:
            try:
                rng = _range_of(args.get("filter"), self.default_time_zone)
            except BadUserInput as exc:
                argument = exc.argument or "filter"
                raise self._refuse(nodes[0], path, argument,
                                   str(exc).removeprefix(f"{argument}: ")) from None
            if where == ("Account", "usage"):
                scope = rng
        size = 1
        if where == ("UsageReport", "series"):
            granularity = _granularity(args.get("granularity"))
            if scope is not None and granularity is not None:
                # The bound first: an exact count only when it can still fit.
                least = calendar.min_buckets(scope.start_us, scope.end_us, granularity)
                if least <= calendar.MAX_BUCKETS and own + least > limit:
                    raise _TooCostly(own + least)
            try:
                size = bucket_count(scope, args.get("granularity"))
            except calendar.TooManyBuckets as exc:
                raise self._refuse(nodes[0], path, "granularity", str(exc)) from None
        elif where == ("UsageReport", "breakdown"):
            limit_arg = args.get("limit")
            if limit_arg is not None and limit_arg < 0:
                raise self._refuse(nodes[0], path, "limit", "must be 0 or more")
            rows = self._list_size(where, args)
            size = rows if limit_arg is None else min(limit_arg, rows)
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


    def _list_size(self, where: tuple[str, str], args: dict[str, Any]) -> int:
        """Rows a list can hold: the account's real number for its lists (at least
        ``ASSUMED_LIST_SIZE``), ``ASSUMED_LIST_SIZE`` for any other."""
        s = self.sizes
        if s is None:
            return ASSUMED_LIST_SIZE
        real: int | None = None
        if where == ("Account", "apiKeys"):
            real = s.api_keys_all if args.get("includeRevoked") else s.api_keys
        elif where == ("Account", "endpoints"):
            real = s.endpoints
        elif where == ("Account", "sources"):
            real = s.sources
        elif where == ("UsageReport", "breakdown"):
            by = str(getattr(args.get("by"), "value", args.get("by")))
            real = {"ENDPOINT": s.used_endpoints, "API_KEY": s.api_keys_all,
                    "SOURCE": s.used_sources, "USER": s.users}.get(by)
        return ASSUMED_LIST_SIZE if real is None else max(real, ASSUMED_LIST_SIZE)


def _assessment_bytes(assessment: Assessment | None) -> int:
    refusal = assessment.refusal if assessment is not None else None
    if refusal is None:
        return 0
    return sum(sys.getsizeof(text) for text in (refusal.argument, refusal.detail,
                                                *refusal.path)) + 64 * len(refusal.path)


#: Assessments by (schema, maximum, time zone, digests of the document text, the operation
#: name and the variables): a dashboard sends the same ones again and again.
_ASSESSMENTS: ByteLRU[tuple[object, ...], Assessment | None] = ByteLRU(
    "query costs", 4 * MIB, _assessment_bytes)


def assess_operation(schema: GraphQLSchema, document: DocumentNode,
                     operation: OperationDefinitionNode, raw_variables: dict[str, Any] | None,
                     default_time_zone: str, max_cost: int, query: str | None = None,
                     operation_name: str | None = None,
                     sizes: ListSizes | None = None) -> Assessment | None:
    """``CostCalculator.assess``, cached when the document's text ``query`` is known: the
    result is a function of the text, the operation name, the variables, the time zone,
    the maximum and the account's list sizes alone. Keyed by digests, so no client text is kept."""
    try:
        variables = orjson.dumps(raw_variables or {}, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # not JSON (never from HTTP): not cached
        query = None
    if query is None:
        return CostCalculator.assess(schema, document, operation, raw_variables,
                                     default_time_zone, max_cost, sizes)
    key = (schema, max_cost, default_time_zone, text_digest(query),
           digest(operation_name or ""), digest(variables), sizes)
    found = _ASSESSMENTS.get(key)
    if found is None:
        found = CostCalculator.assess(schema, document, operation, raw_variables,
                                      default_time_zone, max_cost, sizes)
        _ASSESSMENTS.put(key, found)
    return found


def uses_sized_lists(document: DocumentNode) -> bool:
    """Whether a field of ``document`` (any operation or fragment) has the name of a list
    priced by the account's size (``SIZED_LISTS``): then the sizes are counted."""
    def walk(selection_set: SelectionSetNode | None) -> bool:
        if selection_set is None:
            return False
        for node in selection_set.selections:
            if isinstance(node, FieldNode) and node.name.value in SIZED_LISTS:
                return True
            if isinstance(node, FieldNode | InlineFragmentNode) and walk(node.selection_set):
                return True
        return False

    return any(walk(getattr(d, "selection_set", None)) for d in document.definitions)


def expanded_fields(document: DocumentNode, cap: int = MAX_EXPANDED_FIELDS) -> int:
    """Field selections of the largest operation with every fragment spread expanded,
    counted with one pass per fragment (memoised), stopping once past ``cap``."""
    fragments = {d.name.value: d for d in document.definitions
                 if isinstance(d, FragmentDefinitionNode)}
    memo: dict[str, int] = {}

    def size(selection_set: SelectionSetNode, stack: frozenset[str]) -> int:
        total = 0
        for node in selection_set.selections:
            if isinstance(node, FieldNode):
                total += 1 + (size(node.selection_set, stack) if node.selection_set else 0)
            elif isinstance(node, InlineFragmentNode):
                total += size(node.selection_set, stack)
            elif isinstance(node, FragmentSpreadNode):
                name = node.name.value
                if name in stack or name not in fragments:  # a cycle or unknown: invalid
                    continue
                if name not in memo:
                    memo[name] = size(fragments[name].selection_set, stack | {name})
                total += memo[name]
            if total > cap:
                break
        return total

    try:
        return max((size(d.selection_set, frozenset()) for d in document.definitions
                    if isinstance(d, OperationDefinitionNode)), default=0)
    except RecursionError:
        return cap + 1


# --- Coded validation rules ------------------------------------------------------------

class _RecodingContext:
    """A validation context whose reported errors get a code and advice; a rule reports
    once per document (the depth and introspection rules would report every field)."""

    def __init__(self, context: ValidationContext, code: str,
                 advise: Callable[[GraphQLError], str]) -> None:
        self._context = context
        self._code = code
        self._advise = advise
        self._reported = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    def report_error(self, error: GraphQLError) -> None:
        if self._reported:
            return
        self._reported = True
        self._context.report_error(GraphQLError(
            self._advise(error), error.nodes, extensions={"code": self._code}))


def coded(rule: type[ASTValidationRule], code: str,
          advise: Callable[[GraphQLError], str]) -> type[ASTValidationRule]:
    """``rule`` whose errors carry ``extensions.code`` and say what to change."""

    class Coded(rule):  # type: ignore[valid-type, misc]
        def __init__(self, context: ValidationContext) -> None:
            try:
                super().__init__(_RecodingContext(context, code, advise))
            except KeyError:  # an unknown fragment: KnownFragmentNamesRule reports it
                ASTValidationRule.__init__(self, context)

    Coded.__name__ = f"Coded{rule.__name__}"
    return Coded


def _rules(extension: AddValidationRules, code: str,
           advise: Callable[[GraphQLError], str]) -> list[type[ASTValidationRule]]:
    return [coded(rule, code, advise) for rule in extension.validation_rules]


def _depth_advice(max_depth: int) -> Callable[[GraphQLError], str]:
    return lambda e: (f"Query too deep: {e.message}. Nest selections at most {max_depth} "
                      "levels below the top-level fields, or split the query.")


def _alias_advice(max_aliases: int) -> Callable[[GraphQLError], str]:
    return lambda e: (f"Too many aliases: {e.message}. Use at most {max_aliases} aliases "
                      "per document; send several operations in one batched request instead.")


def _introspection_advice(e: GraphQLError) -> str:
    return (f"Introspection is disabled on this server ({e.message}). Remove __schema and "
            "__type from the query; the schema is published as schema.graphql.")


# --- Batches ---------------------------------------------------------------------------

class CodedHTTPException(HTTPException):
    """An HTTP-level refusal (the whole request) with a GraphQL error code."""

    def __init__(self, status_code: int, reason: str, code: str) -> None:
        super().__init__(status_code, reason)
        self.code = code


_BATCH_ITEM_TYPES = (("query", str), ("operationName", str), ("variables", dict),
                     ("extensions", dict))


def check_batch(operations: list[Any], max_operations: int) -> None:
    """A batch (a JSON array of requests) is 1 to ``max_operations`` request objects."""
    if len(operations) > max_operations:
        raise CodedHTTPException(
            400, f"Too many operations in one batch: {len(operations)} sent, at most "
            f"{max_operations} accepted per request. Split the batch into several "
            "requests.", TOO_MANY_OPERATIONS)
    if not operations:
        raise CodedHTTPException(400, "Empty batch: send at least one operation "
                                 "({query, variables, operationName}).", BAD_USER_INPUT)
    for i, item in enumerate(operations):
        if not isinstance(item, dict):
            raise CodedHTTPException(
                400, f"batch[{i}] must be an object {{query, variables, operationName}}, "
                f"not {type(item).__name__}.", BAD_USER_INPUT)
        for key, expected in _BATCH_ITEM_TYPES:
            if item.get(key) is not None and not isinstance(item[key], expected):
                kind = "a string" if expected is str else "an object"
                raise CodedHTTPException(
                    400, f"batch[{i}].{key} must be {kind} or null, if provided.",
                    BAD_USER_INPUT)


# --- The extension ---------------------------------------------------------------------

class QueryCost(SchemaExtension):
    """Computes the cost after validation, refuses costly or over-budget operations before
    execution, charges the viewer's budget and sets the rate-limit headers."""

    def __init__(self, *, max_cost: int, limiter: RateLimiter, max_tokens: int) -> None:
        self.max_cost = max_cost
        self.limiter = limiter
        self.max_tokens = max_tokens
        self.rate_limited = False

    def on_parse(self) -> Iterator[None]:
        yield
        for error in self.execution_context.pre_execution_errors or ():
            if isinstance(error, GraphQLSyntaxError) and "tokens. Parsing aborted" in \
                    error.message:
                error.message = (f"Query too long: the document has more than "
                                 f"{self.max_tokens:,} tokens. Shorten it (use variables "
                                 "and fragments instead of repeated selections) or split it.")
                error.extensions = {"code": TOO_MANY_TOKENS}

    def on_validate(self) -> Iterator[None]:
        ctx = self.execution_context
        document = ctx.graphql_document
        if document is not None and expanded_fields(document) > MAX_EXPANDED_FIELDS:
            # Set before validation runs, so validation (and its limit rules) is skipped.
            ctx.pre_execution_errors = [GraphQLError(
                f"Query too costly: through its fragment spreads the document expands to "
                f"more than {MAX_EXPANDED_FIELDS:,} field selections. Spread each fragment "
                "fewer times, or split the query.", extensions={"code": QUERY_TOO_COSTLY})]
        yield

    async def on_execute(self) -> AsyncIterator[None]:
        refusal = await self._check()
        if refusal is not None:
            self.execution_context.result = GraphQLExecutionResult(data=None, errors=[refusal])
        yield

    async def on_operation(self) -> AsyncIterator[None]:
        yield
        context = self.execution_context.context
        response = getattr(context, "response", None)
        viewer = getattr(context, "viewer", None)
        if response is None or viewer is None:
            return
        # The budget now, not this operation's: in a batch the last to finish sets them.
        budget = await self.limiter.peek(viewer_key(viewer))
        for name, value in rate_limit_headers(budget, context.query_cost).items():
            response.headers[name] = value
        if self.rate_limited:
            response.status_code = 429
            response.headers["Retry-After"] = str(
                max(1, math.ceil(budget.reset_at - self.limiter.clock())))

    async def _check(self) -> GraphQLError | None:
        ctx = self.execution_context
        context = ctx.context
        viewer = getattr(context, "viewer", None)
        if viewer is None or ctx.graphql_document is None:
            return None
        operation = get_operation_ast(ctx.graphql_document, ctx.operation_name)
        if operation is None:
            return None
        assessment = assess_operation(
            ctx.schema._schema, ctx.graphql_document, operation, ctx.variables,
            viewer.account.time_zone, self.max_cost, ctx.query, ctx.operation_name)
        if assessment is None:
            return None
        # Priced at 100 per list, the cost is a lower bound: refused as it is, or priced
        # again with the account's real list sizes.
        if (assessment.refusal is None and not assessment.too_costly
                and uses_sized_lists(ctx.graphql_document)
                and assessment.cost <= (await self.limiter.peek(viewer_key(viewer))).remaining):
            sizes = await list_sizes(viewer.account.id)
            assessment = assess_operation(
                ctx.schema._schema, ctx.graphql_document, operation, ctx.variables,
                viewer.account.time_zone, self.max_cost, ctx.query, ctx.operation_name,
                sizes) or assessment
        refusal: GraphQLError | None = None
        if assessment.refusal is not None:
            refusal = assessment.refusal.error()
        elif assessment.too_costly:
            refusal = GraphQLError(
                f"Query too costly: it costs at least {assessment.cost:,} points, the "
                f"maximum is {self.max_cost:,} per operation. Ask for fewer items (a "
                "`limit` on `breakdown`, a shorter range or a coarser granularity for "
                "`series`, fewer aliased copies) or split the query.",
                extensions={"code": QUERY_TOO_COSTLY, "cost": assessment.cost,
                            "maxCost": self.max_cost})
        # A refused operation is charged a fixed fee, an accepted one its cost.
        cost = assessment.cost if refusal is None else REFUSAL_POINTS
        context.query_cost += cost
        charged, budget = await self.limiter.charge(viewer_key(viewer), cost)
        if not charged:
            self.rate_limited = True
            reset = budget.reset_datetime().isoformat(timespec="seconds").replace(
                "+00:00", "Z")
            wait = max(1, math.ceil(budget.reset_at - self.limiter.clock()))
            if refusal is not None:
                why = (f"this operation is refused ({refusal.message}), and a refused "
                       f"operation costs {cost:,} points; {budget.remaining:,} of "
                       f"{budget.limit:,} points per minute remain")
            elif cost <= budget.limit:
                why = (f"this query costs {cost:,} points and {budget.remaining:,} of "
                       f"{budget.limit:,} points per minute remain")
            else:
                why = (f"this query costs {cost:,} points, more than the whole budget of "
                       f"{budget.limit:,} points per minute; make it cheaper")
            return GraphQLError(
                f"Rate limit exceeded: {why}. The budget resets at {reset} (in {wait} s); "
                "retry then, or send cheaper queries.",
                extensions={"code": RATE_LIMITED, "cost": cost, "limit": budget.limit,
                            "remaining": budget.remaining,
                            "resetAt": budget.reset_datetime().isoformat()})
        if refusal is not None:
            return refusal
        context.charges[id(operation)] = Charge(cost, budget)
        return None


def limit_extensions(settings: Settings, limiter: RateLimiter) -> list[Any]:
    """The schema extensions enforcing ``settings``' limits, in the order they run."""
    rules = [
        *_rules(QueryDepthLimiter(max_depth=settings.max_query_depth), QUERY_TOO_DEEP,
                _depth_advice(settings.max_query_depth)),
        *_rules(MaxAliasesLimiter(max_alias_count=settings.max_aliases), TOO_MANY_ALIASES,
                _alias_advice(settings.max_aliases)),
    ]
    if not settings.introspection:
        rules.append(coded(NoSchemaIntrospectionCustomRule, INTROSPECTION_DISABLED,
                           _introspection_advice))
    max_tokens = settings.max_tokens
    max_cost = settings.max_query_cost
    return [
        lambda: AddValidationRules(rules),
        lambda: MaxTokensLimiter(max_token_count=max_tokens),
        lambda: QueryCost(max_cost=max_cost, limiter=limiter, max_tokens=max_tokens),
    ]

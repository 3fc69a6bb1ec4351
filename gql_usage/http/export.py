"""``GET /export/usage.csv`` (SPEC 6.4): a usage series, optionally by a dimension, as
RFC 4180 CSV, streamed window by window. See docs/export.md.

The same viewer (``auth.load_viewer``), access rules (those enforcing
``Account.usage``), filter checks and id resolution (``graphql.filters``), query cost and
rate limit (``graphql.limits``) as GraphQL; the figures come from
``analytics.export``, one statement per window, so memory stays flat however long the
range. Errors are JSON ``{"error", "code"}``, with ``parameter`` naming a bad one.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import math
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import strawberry
from graphql import GraphQLError, GraphQLObjectType, OperationDefinitionNode, parse
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send
from strawberry.exceptions import StrawberryInputCoercionError
from strawberry.schema.types.base_scalars import DateTimeDefinition

from gql_usage import calendar
from gql_usage.analytics import export as reads
from gql_usage.analytics.dimensions import Dimension
from gql_usage.analytics.rows import breakdown_rows
from gql_usage.analytics.specs import UsageQuery
from gql_usage.auth import AuthError, Viewer, load_viewer
from gql_usage.calendar import Granularity
from gql_usage.graphql import types
from gql_usage.graphql.context import Context, Loaders
from gql_usage.graphql.directives import enforce, ordered
from gql_usage.graphql.errors import QUERY_TOO_COSTLY, RATE_LIMITED, BadUserInput
from gql_usage.graphql.filters import UsageFilter, check_filter, resolve_filter
from gql_usage.graphql.guards import field_rules
from gql_usage.graphql.limits.cost import CostCalculator
from gql_usage.graphql.limits.rate_limit import (
    REFUSAL_POINTS,
    Budget,
    rate_limit_headers,
    viewer_key,
)
from gql_usage.graphql.schema import Schema
from gql_usage.http.errors import BAD_USER_INPUT, error_response
from gql_usage.settings import Settings
from gql_usage.storage.catalogue import ListSizes, list_sizes
from gql_usage.storage.db import replica_reads

log = logging.getLogger("gql_usage.export")

PATH = "/export/usage.csv"
COLUMNS = ("bucket_start", "bucket_end", "key", "label", "calls", "credits")
#: Query parameters: each of these at most once ...
SINGLE = ("from", "to", "timeZone", "granularity", "by")
#: ... and these repeatable (``?endpoints=/v2/person&endpoints=/v2/company``).
REPEATED = ("apiKeyIds", "endpoints", "sources", "userIds")
#: First characters that make a spreadsheet read a cell as a formula (OWASP "CSV
#: injection"): such a cell is written with a leading single quote.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
#: Key and label of the rows of an export without ``by`` (one row per bucket).
ALL_KEY = ""
ALL_LABEL = "All"


def neutralise(cell: str) -> str:
    """``cell`` as a spreadsheet shows it as text: prefixed with ``'`` when it starts
    with a character of ``FORMULA_STARTS``, as it is otherwise."""
    return "'" + cell if cell.startswith(FORMULA_STARTS) else cell


def csv_lines(rows: Sequence[Sequence[str | int]]) -> str:
    """RFC 4180 lines (CRLF, fields quoted when they hold a comma, quote, CR or LF, a
    quote doubled), every text cell neutralised."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerows([neutralise(c) if isinstance(c, str) else c for c in row]
                     for row in rows)
    return out.getvalue()


class ExportError(Exception):
    """A refused export: HTTP status, code, message, extra JSON fields."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.extra = status, code, extra
        self.headers: dict[str, str] = {}

    def response(self) -> JSONResponse:
        response = error_response(PATH, self.status, str(self), self.code, **self.extra)
        response.headers.update(self.headers)
        return response


def _bad(parameter: str, message: str) -> ExportError:
    return ExportError(400, BAD_USER_INPUT, f"{parameter}: {message}", parameter=parameter)


@dataclass(frozen=True)
class ExportRequest:
    """The parsed query parameters."""

    filter: UsageFilter
    granularity: Granularity
    by: Dimension | None


def _enum(enum: type[Granularity] | type[Dimension], name: str, value: str) -> Any:
    try:
        return enum(value)
    except ValueError:
        raise _bad(name, f"{value!r} is not one of "
                   f"{', '.join(m.value for m in enum)}") from None


def parse_request(items: Sequence[tuple[str, str]]) -> ExportRequest:
    """The parameters, or ``ExportError`` (400 ``BAD_USER_INPUT``) naming the first bad
    one: unknown, repeated when it may not be, missing, or not a value of its type."""
    single: dict[str, str] = {}
    repeated: dict[str, list[str]] = {}
    for name, value in items:
        if name in REPEATED:
            repeated.setdefault(name, []).append(value)
        elif name not in SINGLE:
            raise _bad(name[:64], "unknown parameter; expected "
                       f"{', '.join((*SINGLE, *REPEATED))}")
        elif name in single:
            raise _bad(name, "given more than once")
        else:
            single[name] = value
    for name in ("from", "to", "granularity"):
        if name not in single:
            raise _bad(name, "required")
    instants: dict[str, datetime] = {}
    for name in ("from", "to"):
        try:  # GraphQL's own DateTime parser: the same values as a UsageFilter's
            instants[name] = cast(datetime, _parse_datetime(single[name]))
        except StrawberryInputCoercionError as exc:
            raise _bad(name, str(exc)) from None
    by = single.get("by")
    return ExportRequest(
        filter=UsageFilter(from_=instants["from"], to=instants["to"],
                           time_zone=single.get("timeZone"),
                           api_key_ids=_ids(repeated.get("apiKeyIds")),
                           endpoints=repeated.get("endpoints"),
                           sources=repeated.get("sources"),
                           user_ids=_ids(repeated.get("userIds"))),
        granularity=_enum(Granularity, "granularity", single["granularity"]),
        by=None if by is None else _enum(Dimension, "by", by))


def _parse_datetime(value: str) -> object:
    parse_value = DateTimeDefinition.parse_value
    assert parse_value is not None
    return parse_value(value)


def _ids(values: list[str] | None) -> list[strawberry.ID] | None:
    return None if values is None else [strawberry.ID(v) for v in values]


def _filter_value(f: UsageFilter) -> dict[str, Any]:
    """The filter as GraphQL coerces a ``UsageFilter`` argument (its field names)."""
    return {"from": f.from_, "to": f.to, "timeZone": f.time_zone,
            "apiKeyIds": f.api_key_ids, "endpoints": f.endpoints, "sources": f.sources,
            "userIds": f.user_ids}


def _parameter_error(exc: BadUserInput) -> ExportError:
    """A ``UsageFilter`` error (``filter.apiKeyIds[0]: ...``) named by its parameter."""
    argument = exc.argument or "filter"
    detail = str(exc).removeprefix(f"{argument}: ").replace("filter.", "")
    return _bad(argument.removeprefix("filter."), detail)


@dataclass(frozen=True)
class _Info:
    """What the access rules and ``resolve_filter`` read of a resolver's ``info``."""

    context: Context


#: The GraphQL operation an export window is priced as: the same figures asked of
#: ``Account.usage`` (a window's series, and with ``by`` its breakdown).
_PRICED = parse("""
query Export($f: UsageFilter!, $g: Granularity!) { account { usage(filter: $f) {
  series(granularity: $g) { start end calls credits } } } }
query ExportBy($f: UsageFilter!, $g: Granularity!, $by: UsageDimension!) {
  account { usage(filter: $f) { series(granularity: $g) { start end calls credits }
  breakdown(by: $by) { key label calls credits } } } }""")
_OPERATIONS = {op.name.value: op for op in _PRICED.definitions
               if isinstance(op, OperationDefinitionNode) and op.name is not None}


class UsageExport:
    """The ``GET /export/usage.csv`` endpoint (an ASGI app)."""

    def __init__(self, settings: Settings, schema: Schema, *,
                 window_s: Callable[[Granularity], int] | None = None) -> None:
        self.settings = settings
        self.schema = schema
        self.limiter = schema.rate_limiter
        #: Window length per granularity (``analytics.export.WINDOW_S`` by default).
        self.window_s = window_s or (lambda g: reads.WINDOW_S[g])
        account = schema._schema.type_map["Account"]
        assert isinstance(account, GraphQLObjectType)
        usage = account.fields["usage"]
        #: The rules that enforce ``Account.usage`` (``@adminOnly``, ``@paidPlan``).
        self.rules = ordered(field_rules(usage))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            viewer = await load_viewer(str(self.settings.jwt_secret),
                                       request.headers.get("authorization"),
                                       clock=self.limiter.clock)
        except AuthError as exc:  # 401 UNAUTHENTICATED, or 403 for a token's creator
            refusal = error_response(PATH, exc.status, str(exc), exc.code)
            if exc.status == 401:
                refusal.headers["WWW-Authenticate"] = 'Bearer realm="gql_usage"'
            await refusal(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["viewer"] = viewer
        context = Context(request=request, response=None, viewer=viewer,
                          loaders=Loaders.for_account(viewer.account.id),
                          request_id=str(state.get("request_id", "-")),
                          clock=self.limiter.clock)
        with replica_reads():  # authenticated above, on the primary; the rest may lag
            response: Response
            try:
                response = await self._export(request, context)
            except ExportError as exc:
                response = exc.response()
            await response(scope, receive, send)

    def _check_access(self, context: Context) -> None:
        try:
            enforce(self.rules, _Info(context))
        except GraphQLError as exc:
            code = str((exc.extensions or {}).get("code", "FORBIDDEN"))
            raise ExportError(403, code, exc.message) from None

    async def _export(self, request: Request, context: Context) -> StreamingResponse:
        self._check_access(context)
        viewer = context.viewer
        try:
            asked = parse_request(request.query_params.multi_items())
            tz_name, start, end = check_filter(_filter_value(asked.filter),
                                               viewer.account.time_zone)
            why = reads.too_many_buckets(start, end, asked.granularity)
            if why is not None:
                raise _bad("granularity", why)
            query = await resolve_filter(cast(Any, _Info(context)), asked.filter)
        except BadUserInput as exc:
            await self._charge_refusal(viewer)
            raise _parameter_error(exc) from None
        except ExportError:
            await self._charge_refusal(viewer)
            raise
        windows = list(reads.windows(tz_name, start, end, asked.granularity,
                                     self.window_s(asked.granularity)))
        cost = await self._price(viewer, windows, asked)
        budget = await self._charge(viewer, cost)
        # The first window before the answer starts: a failing database is a JSON 503.
        first = await self._chunk(context, query, windows[0], asked)
        headers = {**rate_limit_headers(budget, cost),
                   "Content-Disposition": 'attachment; filename="usage.csv"',
                   "Cache-Control": "no-store"}
        return StreamingResponse(self._stream(context, query, windows, asked, first),
                                 media_type="text/csv; charset=utf-8", headers=headers)

    async def _stream(self, context: Context, query: UsageQuery,
                      windows: list[tuple[int, int]], asked: ExportRequest,
                      first: str) -> AsyncIterator[bytes]:
        yield (csv_lines([COLUMNS]) + first).encode()
        for window in windows[1:]:
            # The request timeout bounds each window once the answer has started: a
            # window that takes longer ends the response unfinished (no last chunk).
            try:
                async with asyncio.timeout(self.settings.request_timeout_seconds):
                    chunk = await self._chunk(context, query, window, asked)
            except TimeoutError:
                log.warning("export window timed out after %ss; response cut off",
                            self.settings.request_timeout_seconds)
                raise
            yield chunk.encode()

    async def _chunk(self, context: Context, query: UsageQuery, window: tuple[int, int],
                     asked: ExportRequest) -> str:
        """The CSV lines of one window: one row per bucket (no ``by``), or per (bucket,
        group with calls) in the breakdown's order (credits, calls, key)."""
        cells = await reads.window_cells(query, *window, asked.granularity, asked.by)
        tz = query.tz
        rows: list[tuple[str, str, str, str, int, int]] = []
        by = asked.by
        if by is None:
            for c in cells:
                t = c.groups.get(0)
                rows.append((_at(c.bucket.start_us, tz), _at(c.bucket.end_us, tz), ALL_KEY,
                             ALL_LABEL, t.calls if t else 0, t.credits if t else 0))
            return csv_lines(rows)
        ids = sorted({g for c in cells for g in c.groups})
        items, describe = await _items(context.loaders, by, ids)
        # Each item described once per window, not once per bucket.
        described = {id(item): describe(item) for item in items.values()}
        for c in cells:
            if not c.groups:
                continue
            start, end = _at(c.bucket.start_us, tz), _at(c.bucket.end_us, tz)
            for r in breakdown_rows(by, c.groups, [items.get(i) for i in c.groups],
                                    lambda item: described[id(item)]):
                rows.append((start, end, r.key, r.label, r.totals.calls, r.totals.credits))
        return csv_lines(rows)

    async def _price(self, viewer: Viewer, windows: list[tuple[int, int]],
                     asked: ExportRequest) -> int:
        """The export's cost: each window priced as the GraphQL operation reading the
        same figures (``_PRICED``), by the GraphQL cost rules; a window over the
        per-operation maximum refuses the export (``QUERY_TOO_COSTLY``)."""
        name = "Export" if asked.by is None else "ExportBy"
        sizes: ListSizes | None = None
        if asked.by is not None:
            sizes = await list_sizes(viewer.account.id)
        tz = asked.filter.time_zone or viewer.account.time_zone
        total = 0
        for lo, hi in windows:
            variables: dict[str, Any] = {
                "f": {"from": _at(lo, None), "to": _at(hi, None), "timeZone": tz},
                "g": asked.granularity.value}
            if asked.by is not None:
                variables["by"] = asked.by.value
            assessment = CostCalculator.assess(
                self.schema._schema, _PRICED, _OPERATIONS[name], variables, tz,
                self.settings.max_query_cost, sizes)
            if assessment is None or assessment.refusal is not None:
                raise RuntimeError(f"export window {lo}..{hi} not priced: {assessment}")
            if assessment.too_costly:
                await self._charge_refusal(viewer)
                raise ExportError(
                    400, QUERY_TOO_COSTLY, f"Export too costly: each window of it costs at "
                    f"least {assessment.cost:,} points, the maximum is "
                    f"{self.settings.max_query_cost:,} per operation. Choose fewer groups "
                    "(filters) or no `by`.", cost=assessment.cost,
                    maxCost=self.settings.max_query_cost)
            total += assessment.cost
        return total

    async def _charge(self, viewer: Viewer, cost: int) -> Budget:
        charged, budget = await self.limiter.charge(viewer_key(viewer), cost)
        if charged:
            return budget
        wait = max(1, math.ceil(budget.reset_at - self.limiter.clock()))
        error = ExportError(
            429, RATE_LIMITED, f"Rate limit exceeded: this export costs {cost:,} points and "
            f"{budget.remaining:,} of {budget.limit:,} points per minute remain. Retry in "
            f"{wait} s, or export a shorter range or a coarser granularity.", cost=cost,
            limit=budget.limit, remaining=budget.remaining,
            resetAt=budget.reset_datetime().isoformat())
        error.headers = {**rate_limit_headers(budget, cost), "Retry-After": str(wait)}
        raise error

    async def _charge_refusal(self, viewer: Viewer) -> None:
        """A refused export is charged the GraphQL refusal fee (and refused with 429
        once the budget is spent)."""
        await self._charge(viewer, REFUSAL_POINTS)


def _at(us: int, tz: Any) -> str:
    """An instant as GraphQL's ``DateTime`` writes it (ISO 8601, the zone's offset)."""
    return calendar.from_us(us, tz).isoformat()


async def _items(loaders: Loaders, by: Dimension, ids: list[int]
                 ) -> tuple[dict[int, Any], Callable[[Any], tuple[str, str]]]:
    """What the groups' ids name, and each one's (key, label) as ``UsageRow`` gives
    them (``graphql.types``: endpoint path; API key and user global ids; source key)."""
    describe: Callable[[Any], tuple[str, str]]
    if by is Dimension.ENDPOINT:
        found: Iterator[Any] = iter(await loaders.endpoints.load_many(ids))
        describe = _describe_endpoint
    elif by is Dimension.SOURCE:
        found = iter(await loaders.sources.load_many(ids))
        describe = _describe_source
    elif by is Dimension.API_KEY:
        found = iter(await loaders.api_keys.load_many(ids))
        describe = _describe_api_key
    else:
        found = iter(await loaders.users.load_many(ids))
        describe = _describe_user
    return {i: item for i, item in zip(ids, found, strict=True) if item is not None}, describe


def _describe_endpoint(m: Any) -> tuple[str, str]:
    e = types.Endpoint.from_model(m)
    return e.path, e.path


def _describe_source(m: Any) -> tuple[str, str]:
    s = types.Source.from_model(m)
    return s.key, s.name


def _describe_api_key(m: Any) -> tuple[str, str]:
    k = types.ApiKey.from_model(m)
    return str(k.id), k.name


def _describe_user(m: Any) -> tuple[str, str]:
    u = types.User.from_model(m)
    return str(u.id), u.name

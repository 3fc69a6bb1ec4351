"""``UsageFilter`` input and its resolution to an ``analytics.UsageQuery``.

Validation errors are ``BAD_USER_INPUT`` naming the argument. Ids and names are resolved
within the viewer's account only: another account's ids match nothing.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import strawberry

from gql_usage import calendar
from gql_usage.analytics import UsageQuery
from gql_usage.graphql import ids
from gql_usage.graphql.context import Context
from gql_usage.graphql.errors import BadUserInput


@strawberry.input(description="Which usage to count. Filters combine with AND; values "
                  "within one filter combine with OR.")
class UsageFilter:
    from_: datetime = strawberry.field(
        name="from", description="Inclusive start. Without a UTC offset it is read as "
        "wall-clock time in the filter's time zone.")
    to: datetime = strawberry.field(description="Exclusive end (same rules as `from`).")
    time_zone: str | None = strawberry.field(
        default=None, description="IANA time zone for calendar buckets; default: the "
        "account's time zone.")
    api_key_ids: list[strawberry.ID] | None = strawberry.field(
        default=None, description="API key ids; null or absent: all API keys.")
    endpoints: list[str] | None = strawberry.field(default=None,
                                                   description="Endpoint paths.")
    sources: list[str] | None = strawberry.field(default=None, description="Source keys.")
    user_ids: list[strawberry.ID] | None = strawberry.field(default=None,
                                                            description="User ids.")

    def cache_key(self) -> tuple[object, ...]:
        def t(v: list[str] | list[strawberry.ID] | None) -> tuple[str, ...] | None:
            return None if v is None else tuple(v)

        return (self.from_, self.to, self.time_zone, t(self.api_key_ids), t(self.endpoints),
                t(self.sources), t(self.user_ids))


def _aware(value: datetime, tz: object) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=tz)  # type: ignore[arg-type]
    return value.astimezone(UTC)


def _external_ids(values: list[strawberry.ID], type_name: str, argument: str) -> list[str]:
    out = []
    for i, value in enumerate(values):
        try:
            kind, external = ids.decode(str(value))
        except ValueError as exc:
            raise BadUserInput(f"{argument}[{i}]", str(exc)) from None
        if kind != type_name:
            raise BadUserInput(f"{argument}[{i}]", f"{value!r} is a {kind} id, not an "
                               f"{type_name} id")
        out.append(external)
    return out


async def resolve_filter(info: strawberry.Info[Context, None], f: UsageFilter) -> UsageQuery:
    """The ``UsageQuery`` of a filter, resolved once per request whatever asks for it."""
    context = info.context
    key = f.cache_key()
    future = context.queries.get(key)
    if future is None:
        future = asyncio.ensure_future(_resolve(context, f))
        context.queries[key] = future
    return await future


async def _resolve(context: Context, f: UsageFilter) -> UsageQuery:
    account = context.viewer.account
    tz_name = f.time_zone if f.time_zone is not None else account.time_zone
    try:
        tz = calendar.zone(tz_name)
    except ValueError as exc:
        raise BadUserInput("filter.timeZone", str(exc)) from None
    start, end = _aware(f.from_, tz), _aware(f.to, tz)
    if start >= end:
        raise BadUserInput("filter.from", "must be earlier than filter.to (the range is "
                           "[from, to), to exclusive)")
    loaders = context.loaders
    api_key_ids = user_ids = endpoint_ids = source_ids = None
    if f.api_key_ids is not None:
        keys = await loaders.api_keys_by_external.load_many(
            _external_ids(f.api_key_ids, "ApiKey", "filter.apiKeyIds"))
        api_key_ids = tuple(sorted({k.id for k in keys if k is not None}))
    if f.user_ids is not None:
        users = await loaders.users_by_external.load_many(
            _external_ids(f.user_ids, "User", "filter.userIds"))
        user_ids = tuple(sorted({u.id for u in users if u is not None}))
    if f.endpoints is not None:
        endpoints = await loaders.endpoints_by_path.load_many(list(f.endpoints))
        endpoint_ids = tuple(sorted({e.id for e in endpoints if e is not None}))
    if f.sources is not None:
        sources = await loaders.sources_by_key.load_many(list(f.sources))
        source_ids = tuple(sorted({s.id for s in sources if s is not None}))
    return UsageQuery(
        account_id=account.id, start_us=calendar.to_us(start), end_us=calendar.to_us(end),
        time_zone=tz_name, api_key_ids=api_key_ids, endpoint_ids=endpoint_ids,
        source_ids=source_ids, user_ids=user_ids)

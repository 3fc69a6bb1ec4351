"""``UsageFilter`` input and its resolution to an ``analytics.UsageQuery``.

Validation errors are ``BAD_USER_INPUT`` naming the argument. Ids and names are resolved
within the viewer's account only: another account's ids match nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import strawberry

from gql_usage import calendar
from gql_usage.analytics.specs import UsageQuery
from gql_usage.graphql import ids
from gql_usage.graphql.errors import BadUserInput
from gql_usage.graphql.inputs import plain_input
from gql_usage.untrusted import echo, text_problem

if TYPE_CHECKING:  # the context imports the limits, which check filters with this module
    from gql_usage.graphql.context import Context


@plain_input
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


def _instant_us(value: datetime, tz: ZoneInfo, tz_name: str, argument: str) -> int:
    """Microseconds since the epoch of ``value``: wall-clock time in ``tz`` without an
    offset. Never converted with ``astimezone``: an instant near year 1 or 9999 may have
    no datetime in UTC or in ``tz`` (``0001-01-01T00:00:00+05:00`` is in year 0 in UTC),
    which is refused, naming the argument, since buckets and answers need both."""
    if value.tzinfo is None or value.utcoffset() is None:
        value = value.replace(tzinfo=tz)
    us = calendar.to_us(value)
    if not calendar.representable(us, tz):
        raise BadUserInput(argument, f"{value.isoformat()} lies outside the years 1 to 9999 "
                           f"in UTC or in the time zone {tz_name!r}")
    return us


def _external_ids(values: list[strawberry.ID], type_name: str, argument: str) -> list[str]:
    out = []
    for i, value in enumerate(values):
        try:
            kind, external = ids.decode(str(value))
        except ValueError as exc:
            raise BadUserInput(f"{argument}[{i}]", f"{exc}; {ids.hint(str(value), type_name)}"
                               ) from None
        if kind != type_name:
            raise BadUserInput(f"{argument}[{i}]", f"{echo(value)} is a {kind} id, not an "
                               f"{type_name} id")
        out.append(external)
    return out


def _texts(values: list[str], argument: str) -> list[str]:
    """Paths and keys as stored: valid Unicode without NUL (no stored text has either, and
    the databases refuse to compare with them)."""
    for i, value in enumerate(values):
        problem = text_problem(value)
        if problem:
            raise BadUserInput(f"{argument}[{i}]", problem)
    return list(values)


def _range(tz_name: str, from_: datetime, to: datetime) -> tuple[int, int]:
    """The filter's ``[from, to)`` in UTC microseconds; ``BadUserInput`` naming
    ``filter.timeZone``, ``filter.from`` or ``filter.to``."""
    try:
        tz = calendar.zone(tz_name)
    except ValueError as exc:
        raise BadUserInput("filter.timeZone", str(exc)) from None
    start = _instant_us(from_, tz, tz_name, "filter.from")
    end = _instant_us(to, tz, tz_name, "filter.to")
    if start >= end:
        raise BadUserInput("filter.from", "must be earlier than filter.to (the range is "
                           "[from, to), to exclusive)")
    return start, end


def check_filter(value: Mapping[str, Any], default_time_zone: str) -> tuple[str, int, int]:
    """Everything ``resolve_filter`` checks without the database, on a coerced
    ``UsageFilter`` argument (GraphQL names): the time zone, ``from < to``, the ids and the
    texts. Returns (time zone, start, end in UTC microseconds); raises ``BadUserInput``
    naming the argument, as the resolver would. The query cost runs it on every filter of
    an operation before execution, so a bad filter refuses the whole operation."""
    tz_name = value.get("timeZone")
    tz_name = default_time_zone if tz_name is None else tz_name
    start, end = _range(tz_name, value["from"], value["to"])
    for name, type_name in (("apiKeyIds", "ApiKey"), ("userIds", "User")):
        if value.get(name) is not None:
            _external_ids(value[name], type_name, f"filter.{name}")
    for name in ("endpoints", "sources"):
        if value.get(name) is not None:
            _texts(value[name], f"filter.{name}")
    return tz_name, start, end


async def resolve_filter(info: strawberry.Info[Context, None], f: UsageFilter) -> UsageQuery:
    """The ``UsageQuery`` of a filter, resolved once per request whatever asks for it."""
    context = info.context
    key = f.cache_key()
    future = context.queries.get(key)
    if future is None:
        future = asyncio.ensure_future(_resolve(context, f))
        context.queries[key] = future
    # Shared by every field with this filter: a cancelled caller must not cancel it
    # (see ``gql_usage.loaders.base.DataLoader``).
    return await asyncio.shield(future)


async def _resolve(context: Context, f: UsageFilter) -> UsageQuery:
    account = context.viewer.account
    tz_name = f.time_zone if f.time_zone is not None else account.time_zone
    start, end = _range(tz_name, f.from_, f.to)
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
        endpoints = await loaders.endpoints_by_path.load_many(
            _texts(f.endpoints, "filter.endpoints"))
        endpoint_ids = tuple(sorted({e.id for e in endpoints if e is not None}))
    if f.sources is not None:
        sources = await loaders.sources_by_key.load_many(_texts(f.sources, "filter.sources"))
        source_ids = tuple(sorted({s.id for s in sources if s is not None}))
    return UsageQuery(
        account_id=account.id, start_us=start, end_us=end,
        time_zone=tz_name, api_key_ids=api_key_ids, endpoint_ids=endpoint_ids,
        source_ids=source_ids, user_ids=user_ids)

"""GraphQL object types. Plain data fields carry no resolver; only fields that load or
aggregate do, and only guarded fields carry the access extension. A type that may be
read only under some rules wherever it is reached (``ApiKey``) says so once, with
``@guarded_type``; every counted figure is a ``SafeInt``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any
from zoneinfo import ZoneInfo

import strawberry

from gql_usage import calendar
from gql_usage.alerts import outbox
from gql_usage.analytics import forecast as pool_forecast
from gql_usage.analytics import spikes as spike_method
from gql_usage.analytics.dimensions import Dimension
from gql_usage.analytics.layout import series_layout
from gql_usage.analytics.periods import NoPreviousPeriod, previous_period
from gql_usage.analytics.rows import BreakdownRow, breakdown_rows, with_other_row
from gql_usage.analytics.specs import (
    GroupSpec,
    RangeSeriesSpec,
    SeriesPoint,
    SeriesSpec,
    Spec,
    SpikeDriversSpec,
    Top,
    TopSpec,
    Totals,
    TotalsSpec,
    UsageQuery,
    WindowSpec,
)
from gql_usage.calendar import Granularity
from gql_usage.graphql import ids
from gql_usage.graphql.batched import batched
from gql_usage.graphql.context import Context
from gql_usage.graphql.directives import ADMIN_ONLY, ADMIN_OR_SELF, PAID_PLAN, guarded, guarded_type
from gql_usage.graphql.errors import BadUserInput
from gql_usage.graphql.filters import UsageFilter, resolve_filter
from gql_usage.graphql.limits.rate_limit import Charge
from gql_usage.graphql.scalars import SafeInt
from gql_usage.storage import catalogue, models

if TYPE_CHECKING:
    from gql_usage.graphql.access_tokens import AccessToken

Info = strawberry.Info[Context, None]

Plan = strawberry.enum(models.Plan, description="Subscription plan of an account.")
Role = strawberry.enum(models.Role, description="Role of a user within their account.")

# The analytics enums themselves are the GraphQL enums (a value's name is its member's).
strawberry.enum(Granularity, name="Granularity",
                description="Calendar bucket size, in the filter's time zone.")
strawberry.enum(Dimension, name="UsageDimension", description="What to group usage by.")


@strawberry.interface(description="An object with a global id, fetchable with `node(id:)`.")
class Node:
    id: strawberry.ID


@strawberry.type(description="Calls and credits.")
class UsageTotals:
    calls: SafeInt
    credits: SafeInt


async def _load(info: Info, query: UsageQuery, spec: Spec) -> object:
    return await info.context.loaders.aggregates.load((query, spec))


async def _group_totals(info: Info, f: UsageFilter, dim: Dimension, item_id: int) -> UsageTotals:
    """One item's usage, from the breakdown by ``dim`` (one loader answer for all items).

    The per-item ``usage`` fields are plain functions returning this coroutine, which
    graphql-core awaits: an async resolver would add two coroutine layers per item (the
    resolver's and the permission check's), for every key of the account."""
    query = await resolve_filter(info, f)
    by_id = await _load(info, query, GroupSpec(dim))
    assert isinstance(by_id, dict)
    return _item_totals(by_id, item_id)


def _item_totals(by_id: dict[int, Totals], item_id: int) -> UsageTotals:
    """One item's row of a breakdown (zero when the item has no calls)."""
    t = by_id.get(item_id, Totals())
    return UsageTotals(calls=SafeInt(t.calls), credits=SafeInt(t.credits))


def _usage_batch(dim: Dimension) -> Callable[..., Awaitable[Callable[[Any], UsageTotals]]]:
    """``_group_totals`` for a whole list of items (``gql_usage.graphql.batched``): one
    breakdown by ``dim``, each item's row read from it by its ``_pk``."""
    async def batch(info: Info, filter: UsageFilter) -> Callable[[Any], UsageTotals]:
        query = await resolve_filter(info, filter)
        by_id = await _load(info, query, GroupSpec(dim))
        assert isinstance(by_id, dict)

        return lambda item: _item_totals(by_id, item._pk)
    return batch


@strawberry.type(description="An API key's credits per billing period.")
class KeyBudget:
    limit: SafeInt = strawberry.field(description="Credits the key may use per period.")
    used: SafeInt = strawberry.field(description="Credits the key used in the current "
                                     "period.")
    remaining: SafeInt = strawberry.field(description="limit - used, never below 0.")


def period_query(account: models.Account) -> UsageQuery:
    """The account's current billing period ``[periodStart, periodEnd)``, unfiltered."""
    return UsageQuery(account_id=account.id, start_us=calendar.to_us(account.period_start),
                      end_us=calendar.to_us(account.period_end), time_zone=account.time_zone)


async def _key_budget(info: Info, key_id: int, limit: int) -> KeyBudget:
    """One key's budget: its credits come from the period's breakdown by key (one loader
    answer for every key)."""
    query = period_query(info.context.viewer.account)  # a key is of the viewer's account
    by_key = await _load(info, query, GroupSpec(Dimension.API_KEY))
    assert isinstance(by_key, dict)
    used = by_key.get(key_id, Totals()).credits
    return KeyBudget(limit=SafeInt(limit), used=SafeInt(used),
                     remaining=SafeInt(max(limit - used, 0)))


@strawberry.type(description="A member of an account.")
class User(Node):
    id: strawberry.ID
    name: str
    email: str | None = strawberry.field(
        description="Read only by admins of the account and by the user themself.",
        extensions=[guarded(ADMIN_OR_SELF)])
    role: Role  # type: ignore[valid-type]
    _pk: strawberry.Private[int]

    @classmethod
    def from_model(cls, m: models.User) -> User:
        return cls(id=strawberry.ID(ids.encode("User", m.external_id)), name=m.name,
                   email=m.email, role=m.role, _pk=m.id)


@guarded_type(ADMIN_ONLY, PAID_PLAN)
@strawberry.type(description="An API key of the account (the secret is never stored). Only "
                 "admins of paid-plan accounts read API keys, wherever they are reached: "
                 "every field returning one is `@adminOnly @paidPlan`, and so is "
                 "`node(id:)` for a key's id.")
class ApiKey(Node):
    id: strawberry.ID
    name: str
    prefix: str = strawberry.field(description="Display prefix of the key.")
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None = strawberry.field(
        default=None, description="When the key's newest event occurred (`occurredAt`); "
        "null before its first event.")
    _pk: strawberry.Private[int]
    _created_by_id: strawberry.Private[int | None]
    _credit_budget: strawberry.Private[int | None] = None

    @classmethod
    def from_model(cls, m: models.ApiKey) -> ApiKey:
        last_used = m.last_used_at_us
        return cls(id=strawberry.ID(ids.encode("ApiKey", m.external_id)), name=m.name,
                   prefix=m.prefix, created_at=m.created_at, revoked_at=m.revoked_at,
                   last_used_at=None if last_used is None else calendar.from_us(last_used),
                   _pk=m.id, _created_by_id=m.created_by_id, _credit_budget=m.credit_budget)

    @strawberry.field(description="The user who created the key.")
    async def created_by(self, info: Info) -> User | None:
        if self._created_by_id is None:
            return None
        user = await info.context.loaders.users.load(self._created_by_id)
        return User.from_model(user) if user else None

    @strawberry.field(description="This key's usage (batched with every other key's).",
                      graphql_type=UsageTotals | None,
                      extensions=[guarded(ADMIN_ONLY, PAID_PLAN)])
    @batched(_usage_batch(Dimension.API_KEY))
    def usage(self, info: Info, filter: UsageFilter) -> Awaitable[UsageTotals]:
        return _group_totals(info, filter, Dimension.API_KEY, self._pk)

    @strawberry.field(description="The key's credit budget in the account's current "
                      "billing period; null when the key has none (batched with every "
                      "other key's).",
                      graphql_type=KeyBudget | None,
                      extensions=[guarded(ADMIN_ONLY, PAID_PLAN)])
    def budget(self, info: Info) -> Awaitable[KeyBudget] | None:
        if self._credit_budget is None:
            return None
        return _key_budget(info, self._pk, self._credit_budget)


@strawberry.type(description="A billable endpoint.")
class Endpoint:
    path: str
    _pk: strawberry.Private[int]

    @classmethod
    def from_model(cls, m: models.Endpoint) -> Endpoint:
        return cls(path=m.path, _pk=m.id)

    @strawberry.field(description="This endpoint's usage (batched with every other's).",
                      graphql_type=UsageTotals | None,
                      extensions=[guarded(ADMIN_ONLY, PAID_PLAN)])
    @batched(_usage_batch(Dimension.ENDPOINT))
    def usage(self, info: Info, filter: UsageFilter) -> Awaitable[UsageTotals]:
        return _group_totals(info, filter, Dimension.ENDPOINT, self._pk)


@strawberry.type(description="Where calls come from: `api`, `chrome_extension`, ...")
class Source:
    key: str
    name: str

    @classmethod
    def from_model(cls, m: models.Source) -> Source:
        return cls(key=m.key, name=m.name)


@strawberry.type(description="One calendar bucket of a series, clipped to the range.")
class UsageBucket:
    start: datetime
    end: datetime
    calls: SafeInt
    credits: SafeInt


@strawberry.type(description="One row of a breakdown.")
class UsageRow:
    key: str = strawberry.field(description="Endpoint path, API key id, source key or user id.")
    label: str = strawberry.field(description="What a person reads: path, key name, source "
                                  "name, user name.")
    endpoint: Endpoint | None
    api_key: ApiKey | None
    source: Source | None
    user: User | None
    calls: SafeInt
    credits: SafeInt
    share_of_credits: float = strawberry.field(
        description="Percent of the report's credits, 0..100; 0 when the report has none.")
    is_other: bool = strawberry.field(
        default=False, description='The "Other" row of `breakdown(other: true)`: the rows '
        'cut by `limit`, summed (key "*", label "Other", no endpoint, key, source or user).')
    group_count: int = strawberry.field(
        default=1, description='How many groups the row stands for: 1, or the number of '
        'rows cut for the "Other" row.')


@strawberry.type(description="A group of the spike's dimension that carried part of its "
                 "excess.")
class SpikeDriver:
    row: UsageRow = strawberry.field(description="The group's calls and credits in the "
                                     "spike's bucket; `shareOfCredits` is its percent of "
                                     "the bucket's credits.")
    baseline_credits: float = strawberry.field(description="The median of the group's "
                                               "credits over the spike's window.")
    excess_credits: float = strawberry.field(description="The group's credits in the "
                                             "bucket minus its baseline.")


@strawberry.type(description="A bucket far above the baseline of the buckets before it "
                 "(README, 'Spikes').")
class UsageSpike:
    bucket: UsageBucket = strawberry.field(description="The unusual bucket.")
    baseline_credits: float = strawberry.field(description="What the bucket would hold at "
                                               "its baseline: the median of its window.")
    excess_credits: float = strawberry.field(description="Bucket credits - baseline.")
    score: float = strawberry.field(description="How unusual; higher is more unusual: "
                                    "the excess in robust standard deviations.")
    _query: strawberry.Private[UsageQuery]
    _spec: strawberry.Private[SpikeDriversSpec]
    _index: strawberry.Private[int]

    @strawberry.field(description="The rows of `by` with the largest excess in this "
                      "bucket, largest first, at most 3.")
    async def drivers(self, info: Info) -> list[SpikeDriver]:
        # Every spike of the field loads the same spec: one statement for all of them.
        values = await _load(info, self._query, self._spec)
        assert isinstance(values, list)
        own, window = self._spec.spikes[self._index]
        found = spike_method.drivers(values[self._index], own, window)
        total = self.bucket.credits
        rows = await asyncio.gather(*(_usage_rows(
            info, self._spec.dimension, {d.group: Totals(d.calls, d.credits)}, None, total)
            for d in found))
        return [SpikeDriver(row=r[0], baseline_credits=d.baseline, excess_credits=d.excess)
                for d, r in zip(found, rows, strict=True) if r]


@strawberry.type(description="Usage of the account for one filter.")
class UsageReport:
    _query: strawberry.Private[UsageQuery]

    async def _totals(self, info: Info) -> Totals:
        t = await _load(info, self._query, TotalsSpec())
        assert isinstance(t, Totals)
        return t

    @strawberry.field(description="Number of billable calls.")
    async def calls(self, info: Info) -> SafeInt:
        return SafeInt((await self._totals(info)).calls)

    @strawberry.field(description="Credits used.")
    async def credits(self, info: Info) -> SafeInt:
        return SafeInt((await self._totals(info)).credits)

    @strawberry.field(description="Every bucket of the range in order, zero-filled; at most "
                      "2,000 buckets.")
    async def series(self, info: Info, granularity: Granularity) -> list[UsageBucket]:
        try:
            series_layout(self._query, granularity)
        except calendar.TooManyBuckets as exc:
            raise BadUserInput("granularity", str(exc)) from None
        points = await _load(info, self._query, SeriesSpec(granularity))
        assert isinstance(points, list)
        tz = self._query.tz
        at = calendar.bucket_edge  # a bucket's end is the next one's start: both cached
        return [UsageBucket(start=at(p.start_us, tz), end=at(p.end_us, tz),
                            calls=SafeInt(p.calls), credits=SafeInt(p.credits))
                for p in points]

    @strawberry.field(description="Rows by credits, then calls (descending), then key; rows "
                      "without calls are left out; `limit` keeps the top rows.")
    async def breakdown(self, info: Info, by: Dimension, limit: int | None = None,
                        other: Annotated[bool, strawberry.argument(
                            description='With rows cut by `limit`, one last "Other" row '
                            "sums them (`isOther`, `groupCount`); none when nothing is "
                            "cut.")] = False) -> list[UsageRow]:
        if limit is not None and limit < 0:
            raise BadUserInput("limit", "must be 0 or more")
        if limit is None:
            groups = await _load(info, self._query, GroupSpec(by))
            assert isinstance(groups, dict)
            return await _usage_rows(info, by, groups, limit)
        top = await _load(info, self._query, TopSpec(by, limit))  # cut in SQL
        assert isinstance(top, Top)
        # The Other row comes from the same answer: every group's count and totals.
        return await _usage_rows(info, by, top.rows, limit, top.totals.credits,
                                 top if other else None)

    @strawberry.field(description="The same filter over the period just before: as long, "
                      "ending at `from`; when `from` and `to` both begin a month in the "
                      "filter's time zone, as many calendar months ending at `from`.")
    def previous(self) -> UsageReport:
        q = self._query
        try:
            start, end = previous_period(q.start_us, q.end_us, q.tz)
        except NoPreviousPeriod as exc:
            raise BadUserInput("filter.from", str(exc)) from None
        return UsageReport(_query=replace(q, start_us=start, end_us=end))

    @strawberry.field(description="Buckets far above the baseline of the buckets before "
                      "them (read before `from` too), most unusual first, at most `limit`; "
                      "`drivers` by `by`. Method, window and threshold: README, 'Spikes'.")
    async def spikes(self, info: Info, granularity: Granularity,
                     by: Dimension = Dimension.ENDPOINT, limit: int = 5) -> list[UsageSpike]:
        if limit < 0:
            raise BadUserInput("limit", "must be 0 or more")
        q = self._query
        try:
            look = spike_method.look_back(q.time_zone, q.start_us, q.end_us, granularity)
        except calendar.TooManyBuckets as exc:
            raise BadUserInput("granularity", str(exc)) from None
        # One batch: the series and its look-back join the report's statement.
        keys: list[tuple[UsageQuery, Spec]] = [(q, SeriesSpec(granularity))]
        if look.start_us < look.end_us:
            keys.append((q, RangeSeriesSpec(granularity, look.start_us, look.end_us)))
        series, *earlier = await info.context.loaders.aggregates.load_many(keys)
        before = earlier[0] if earlier else []
        assert isinstance(series, list) and isinstance(before, list)
        tz = q.tz
        pts = spike_method.points(before, series, tz, granularity, look.end_us != q.start_us)
        found = spike_method.detect(pts, granularity)[:limit]
        if not found:
            return []
        spec = spike_method.drivers_spec(pts, found, by)
        return [UsageSpike(bucket=_bucket(pts[s.point], tz), baseline_credits=s.baseline.median,
                           excess_credits=s.excess, score=s.score, _query=q, _spec=spec,
                           _index=n) for n, s in enumerate(found)]


def _bucket(p: SeriesPoint | spike_method.Point, tz: ZoneInfo) -> UsageBucket:
    return UsageBucket(start=calendar.bucket_edge(p.start_us, tz),
                       end=calendar.bucket_edge(p.end_us, tz),
                       calls=SafeInt(p.calls), credits=SafeInt(p.credits))


async def _usage_rows(info: Info, by: Dimension, groups: dict[int, Totals],
                      limit: int | None, total_credits: int | None = None,
                      other: Top | None = None) -> list[UsageRow]:
    """The breakdown rows of ``groups`` (``gql_usage.analytics.rows``), with the objects
    their ids name, loaded in one batch; with ``other`` (the ``Top`` answer the rows come
    from), the "Other" row of the groups cut, last."""
    loaders = info.context.loaders
    ids_ = list(groups)

    def build(items: list[Any], describe: Callable[[Any], tuple[str, str]]
              ) -> list[BreakdownRow[Any]]:
        rows = breakdown_rows(by, groups, items, describe, limit, total_credits)
        return rows if other is None else with_other_row(rows, other.groups, other.totals)

    if by is Dimension.ENDPOINT:
        endpoints = [None if e is None else Endpoint.from_model(e)
                     for e in await loaders.endpoints.load_many(ids_)]
        return [_usage_row(r, endpoint=r.item)
                for r in build(endpoints, lambda e: (e.path, e.path))]
    if by is Dimension.SOURCE:
        sources = [None if s is None else Source.from_model(s)
                   for s in await loaders.sources.load_many(ids_)]
        return [_usage_row(r, source=r.item)
                for r in build(sources, lambda s: (s.key, s.name))]
    if by is Dimension.API_KEY:
        keys = [None if k is None else ApiKey.from_model(k)
                for k in await loaders.api_keys.load_many(ids_)]
        return [_usage_row(r, api_key=r.item)
                for r in build(keys, lambda k: (str(k.id), k.name))]
    users = [None if u is None else User.from_model(u)
             for u in await loaders.users.load_many(ids_)]
    return [_usage_row(r, user=r.item) for r in build(users, lambda u: (str(u.id), u.name))]


def _usage_row(r: BreakdownRow[Any], *, endpoint: Endpoint | None = None,
               api_key: ApiKey | None = None, source: Source | None = None,
               user: User | None = None) -> UsageRow:
    return UsageRow(key=r.key, label=r.label, endpoint=endpoint, api_key=api_key,
                    source=source, user=user, calls=SafeInt(r.totals.calls),
                    credits=SafeInt(r.totals.credits), share_of_credits=r.share_of_credits,
                    is_other=r.is_other, group_count=r.group_count)


@strawberry.type(description="Where the credit pool is heading in the current billing "
                 "period, at the pool's recent burn rate.")
class PoolForecast:
    burn_rate_per_day: float = strawberry.field(
        description="Credits per 24 h over [max(periodStart, now - 7 days), now); 0 when "
        "that window is shorter than one hour.")
    projected_used: SafeInt = strawberry.field(
        description="used + burnRatePerDay x days left in the period, rounded down.")
    exhausts_at: datetime | None = strawberry.field(
        description="now + remaining / burnRatePerDay, if before periodEnd; null otherwise "
        "(no burn, a pool already used up, or credits lasting the period).")


@strawberry.type(description="The account's credit pool in the current billing period.")
class CreditPool:
    granted: SafeInt
    _query: strawberry.Private[UsageQuery]
    _now_us: strawberry.Private[int]

    async def _used(self, info: Info) -> int:
        t = await _load(info, self._query, TotalsSpec())
        assert isinstance(t, Totals)
        return t.credits

    @strawberry.field(description="Credits used in the period.")
    async def used(self, info: Info) -> SafeInt:
        return SafeInt(await self._used(info))

    @strawberry.field(description="granted - used, never below 0.")
    async def remaining(self, info: Info) -> SafeInt:
        return SafeInt(max(self.granted - await self._used(info), 0))

    @strawberry.field(description="Credits used beyond the grant (0 if none).")
    async def overage(self, info: Info) -> SafeInt:
        return SafeInt(max(await self._used(info) - self.granted, 0))

    period_start: datetime
    period_end: datetime

    @strawberry.field(description="The pool's burn rate over the last 7 days and where it "
                      "leads by the period's end.")
    async def forecast(self, info: Info) -> PoolForecast:
        q, now = self._query, self._now_us
        window = pool_forecast.burn_window(q.start_us, q.end_us, now)
        specs: list[Spec] = [TotalsSpec()]
        if window is not None:
            specs.append(WindowSpec(window.start_us, window.end_us))
        answers = await info.context.loaders.aggregates.load_many([(q, s) for s in specs])
        totals = [a for a in answers if isinstance(a, Totals)]
        assert len(totals) == len(specs)
        f = pool_forecast.forecast(
            granted=self.granted, used=totals[0].credits, window=window,
            window_credits=totals[1].credits if window is not None else 0,
            period_end_us=q.end_us, now_us=now)
        return PoolForecast(
            burn_rate_per_day=f.burn_rate_per_day, projected_used=SafeInt(f.projected_used),
            exhausts_at=None if f.exhausts_at_us is None else calendar.from_us(f.exhausts_at_us))


@strawberry.enum(description="What an alert is about; the webhook's `type` is the value "
                 "in parentheses.")
class AlertType(Enum):
    POOL_THRESHOLD = strawberry.enum_value(
        "pool.threshold", description="The account's used credits reached a threshold of "
        "its pool (`pool.threshold`).")
    KEY_BUDGET_THRESHOLD = strawberry.enum_value(
        "key_budget.threshold", description="A key's used credits reached a threshold of "
        "its budget (`key_budget.threshold`).")


@strawberry.enum(description="Where an alert's webhook delivery stands.")
class AlertDeliveryState(Enum):
    PENDING = strawberry.enum_value("PENDING", description="Not attempted yet (or no "
                                    "webhook URL is configured).")
    DELIVERED = strawberry.enum_value("DELIVERED", description="The receiver answered 2xx.")
    FAILING = strawberry.enum_value("FAILING", description="Attempted without a 2xx "
                                    "answer; tried again at `nextAttemptAt`.")


@strawberry.type(description="A threshold of the credit pool or of a key's budget reached "
                 "in a billing period: recorded once per (pool or key, threshold, period) "
                 "and sent to the webhook until it answers 2xx.")
class Alert:
    id: strawberry.ID = strawberry.field(description="Unique; the webhook payload's `id` "
                                         "(the same in every attempt).")
    type: AlertType
    threshold: int = strawberry.field(description="Percent of `limit`.")
    used: SafeInt = strawberry.field(description="Credits used in the period when the "
                                     "threshold was reached.")
    limit: SafeInt = strawberry.field(description="The pool's credits granted, or the key's "
                                      "budget, at that moment.")
    occurred_at: datetime = strawberry.field(description="When ingestion recorded it.")
    period_start: datetime
    period_end: datetime
    delivery_state: AlertDeliveryState
    attempts: int = strawberry.field(description="Delivery attempts that have ended.")
    last_attempt_at: datetime | None
    last_error: str | None = strawberry.field(description="Why the last failed attempt "
                                              "failed; null once delivered.")
    next_attempt_at: datetime | None = strawberry.field(description="When delivery is tried "
                                                        "next; null once delivered.")
    delivered_at: datetime | None
    _api_key_pk: strawberry.Private[int | None]

    @classmethod
    def from_stored(cls, a: outbox.StoredAlert) -> Alert:
        state = (AlertDeliveryState.DELIVERED if a.delivered_at_us is not None
                 else AlertDeliveryState.FAILING if a.attempts else AlertDeliveryState.PENDING)
        return cls(id=strawberry.ID(a.id), type=AlertType(a.type), threshold=a.threshold,
                   used=SafeInt(a.used), limit=SafeInt(a.limit), occurred_at=a.occurred_at,
                   period_start=a.period_start, period_end=a.period_end,
                   delivery_state=state, attempts=a.attempts,
                   last_attempt_at=calendar.from_us(a.last_attempt_at_us)
                   if a.last_attempt_at_us is not None else None,
                   last_error=a.last_error, next_attempt_at=a.next_attempt_at,
                   delivered_at=a.delivered_at, _api_key_pk=a.api_key_pk)

    @strawberry.field(description="The key whose budget it is about; null for a pool alert.")
    async def api_key(self, info: Info) -> ApiKey | None:
        if self._api_key_pk is None:
            return None
        key = await info.context.loaders.api_keys.load(self._api_key_pk)
        return ApiKey.from_model(key) if key else None


@strawberry.type(description="An organisation: one credit pool for all of its API keys.")
class Account(Node):
    id: strawberry.ID
    name: str
    plan: Plan  # type: ignore[valid-type]
    time_zone: str
    _model: strawberry.Private[models.Account]

    @classmethod
    def from_model(cls, m: models.Account) -> Account:
        return cls(id=strawberry.ID(ids.encode("Account", m.external_id)), name=m.name,
                   plan=m.plan, time_zone=m.time_zone, _model=m)

    @strawberry.field(extensions=[guarded(ADMIN_ONLY)])
    def credit_pool(self, info: Info) -> CreditPool | None:
        """Its figures load lazily, so that ``used`` and ``forecast`` share one statement."""
        m = self._model
        return CreditPool(granted=SafeInt(m.credits_granted), period_start=m.period_start,
                          period_end=m.period_end, _query=period_query(m),
                          _now_us=info.context.now_us())

    @strawberry.field(extensions=[guarded(ADMIN_ONLY, PAID_PLAN)])
    async def api_keys(self, info: Info, include_revoked: bool = False) -> list[ApiKey] | None:
        # The loader's list (revoked keys too) also answers the request's breakdowns by
        # key: one statement, whichever comes back first (``loaders.api_keys``).
        keys = await info.context.loaders.api_keys.listing()
        return [ApiKey.from_model(k) for k in keys if include_revoked or k.revoked_at is None]

    @strawberry.field(description="The endpoint catalogue, plus any path this account used.")
    async def endpoints(self, info: Info) -> list[Endpoint]:
        return [Endpoint.from_model(e) for e in await catalogue.endpoints(self._model.id)]

    @strawberry.field(description="Known sources, plus any this account used.")
    async def sources(self, info: Info) -> list[Source]:
        return [Source.from_model(s) for s in await catalogue.sources(self._model.id)]

    @strawberry.field(description="The account's alerts, newest first, with their "
                      f"delivery state; `first`: how many, 0 to {outbox.MAX_FIRST}.",
                      extensions=[guarded(ADMIN_ONLY, PAID_PLAN)])
    async def alerts(self, info: Info,
                     first: int | None = outbox.DEFAULT_FIRST) -> list[Alert] | None:
        count = outbox.DEFAULT_FIRST if first is None else first
        if not 0 <= count <= outbox.MAX_FIRST:
            raise BadUserInput("first", f"must be 0 to {outbox.MAX_FIRST}")
        return [Alert.from_stored(a) for a in await outbox.recent(self._model.id, count)]

    @strawberry.field(description="Usage of the account for a filter.",
                      extensions=[guarded(ADMIN_ONLY, PAID_PLAN)])
    async def usage(self, info: Info, filter: UsageFilter) -> UsageReport | None:
        return UsageReport(_query=await resolve_filter(info, filter))

    @strawberry.field(description="The account's access tokens, newest first (SPEC 6.4); "
                      "revoked ones only with `includeRevoked`.",
                      extensions=[guarded(ADMIN_ONLY, PAID_PLAN)])
    async def access_tokens(self, info: Info, include_revoked: bool = False) -> list[
            Annotated[AccessToken, strawberry.lazy("gql_usage.graphql.access_tokens")]
    ] | None:
        from gql_usage.graphql import access_tokens  # it imports this module's types

        return await access_tokens.listed(self._model.id, include_revoked)


@strawberry.type(description="The viewer's query-cost budget (per account and user, per "
                  "minute) after this operation.")
class RateLimit:
    cost: SafeInt = strawberry.field(description="Points this operation cost.")
    limit: SafeInt = strawberry.field(description="Points the viewer may spend per window.")
    remaining: SafeInt = strawberry.field(description="Points left in the current window.")
    reset_at: datetime = strawberry.field(description="When the window ends and the "
                                          "budget is full again.")
    used: SafeInt = strawberry.field(description="Points spent in the current window, this "
                                     "operation included.")

    @classmethod
    def from_charge(cls, charge: Charge) -> RateLimit:
        b = charge.budget
        return cls(cost=SafeInt(charge.cost), limit=SafeInt(b.limit),
                   remaining=SafeInt(b.remaining), reset_at=b.reset_datetime(),
                   used=SafeInt(b.used))


NodeId = Annotated[strawberry.ID, strawberry.argument(description="A global id.")]

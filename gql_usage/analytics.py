"""Analytics queries: totals, calendar series and breakdowns, exactly, in the database.

Every request for numbers is a ``UsageQuery`` (account, half-open UTC range, time zone,
resolved filters) plus a list of ``Spec``s (totals, a series, a group-by on one
dimension). ``aggregate`` answers all specs of one query with one SQL statement.

Where the numbers come from (``plan``): whole 15-minute slots inside the range are read
from ``usage_rollup``; the partial slots at the range edges, and any slot that a bucket
boundary or an offset change cuts (only in historical zones whose offsets are not whole
quarter hours), are read from ``usage_event``. The two parts never overlap and together
cover exactly ``[from, to)``, so the answer equals an aggregation of the raw events.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from zoneinfo import ZoneInfo

from gql_usage import calendar
from gql_usage.calendar import US, Bucket, Granularity, Segment
from gql_usage.db import Sql, connection, dialect, fetch_rows
from gql_usage.models import SLOT_SECONDS

SLOT_US = SLOT_SECONDS * US
#: Past this many cut slots a series reads its whole range from the raw events.
MAX_CUT_SLOTS = 64


class Dimension(StrEnum):
    """A dimension to group by; the value is the column in both usage tables."""

    ENDPOINT = "endpoint_id"
    API_KEY = "api_key_id"
    SOURCE = "source_id"
    USER = "user_id"


@dataclass(frozen=True)
class UsageQuery:
    """What to count: one account, ``[start_us, end_us)``, and filters (internal ids).

    ``None`` means "no filter on this dimension"; an empty tuple matches nothing.
    """

    account_id: int
    start_us: int
    end_us: int
    time_zone: str = "UTC"
    api_key_ids: tuple[int, ...] | None = None
    endpoint_ids: tuple[int, ...] | None = None
    source_ids: tuple[int, ...] | None = None
    user_ids: tuple[int, ...] | None = None

    @property
    def tz(self) -> ZoneInfo:
        return calendar.zone(self.time_zone)

    def filters(self) -> list[tuple[str, tuple[int, ...]]]:
        return [(dim.value, ids) for dim, ids in (
            (Dimension.API_KEY, self.api_key_ids), (Dimension.ENDPOINT, self.endpoint_ids),
            (Dimension.SOURCE, self.source_ids), (Dimension.USER, self.user_ids),
        ) if ids is not None]


@dataclass(frozen=True)
class Totals:
    calls: int = 0
    credits: int = 0


@dataclass(frozen=True)
class TotalsSpec:
    pass


@dataclass(frozen=True)
class SeriesSpec:
    granularity: Granularity


@dataclass(frozen=True)
class GroupSpec:
    dimension: Dimension


Spec = TotalsSpec | SeriesSpec | GroupSpec


@dataclass(frozen=True)
class SeriesPoint:
    start_us: int
    end_us: int
    calls: int
    credits: int


@dataclass
class _Plan:
    rollup_from_s: int | None = None  # whole slots [rollup_from_s, rollup_to_s) ...
    rollup_to_s: int | None = None
    skip_slots: list[int] = field(default_factory=list)  # ... except these
    raw_pieces: list[tuple[int, int]] = field(default_factory=list)  # [lo_us, hi_us)


def plan(query: UsageQuery, cut_points_us: Sequence[int] = ()) -> _Plan:
    """Split the range into rollup slots and raw-event pieces (see module docstring)."""
    first = -(-query.start_us // SLOT_US)  # first whole slot
    last = query.end_us // SLOT_US  # end of the last whole slot
    p = _Plan()
    if first >= last:
        p.raw_pieces.append((query.start_us, query.end_us))
        return p
    cut = sorted({c // SLOT_US for c in cut_points_us
                  if c % SLOT_US and first * SLOT_US < c < last * SLOT_US})
    if len(cut) > MAX_CUT_SLOTS:
        p.raw_pieces.append((query.start_us, query.end_us))
        return p
    p.rollup_from_s, p.rollup_to_s = first * SLOT_SECONDS, last * SLOT_SECONDS
    p.skip_slots = [c * SLOT_SECONDS for c in cut]
    pieces = [(query.start_us, first * SLOT_US)] + [
        (c * SLOT_US, (c + 1) * SLOT_US) for c in cut] + [(last * SLOT_US, query.end_us)]
    merged: list[tuple[int, int]] = []
    for lo, hi in pieces:
        if lo >= hi:
            continue
        if merged and merged[-1][1] == lo:
            merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    p.raw_pieces = merged
    return p


@dataclass
class _SeriesLayout:
    buckets: list[Bucket]
    segments: list[Segment]
    granularity: Granularity

    def key_sql(self, t: str) -> str:
        """SQL computing this series' bucket key from a UTC time in whole seconds ``t``."""
        def expr(index: int, seg: Segment) -> str:
            if self.granularity is Granularity.HOUR:
                return f"(({t} + {seg.offset_s}) / 3600) * 1024 + {index}"
            return f"({t} + {seg.offset_s}) / 86400"

        if len(self.segments) == 1:
            return expr(0, self.segments[0])
        branches = " ".join(f"WHEN {t} < {seg.end_s} THEN {expr(i, seg)}"
                            for i, seg in enumerate(self.segments[:-1]))
        last = len(self.segments) - 1
        return f"CASE {branches} ELSE {expr(last, self.segments[-1])} END"

    def bucket_key(self, sql_key: int) -> int:
        if self.granularity is Granularity.HOUR:
            return sql_key
        return calendar.day_to_bucket_start(sql_key, self.granularity)

    def cut_points(self) -> list[int]:
        points = [b.start_us for b in self.buckets[1:]]
        points += [seg.start_s * US for seg in self.segments[1:]]
        return points


def series_layout(query: UsageQuery, granularity: Granularity) -> _SeriesLayout:
    """Buckets of the range; raises ``calendar.TooManyBuckets``."""
    tz = query.tz
    segments = calendar.offset_segments(tz, query.start_us, query.end_us)
    return _SeriesLayout(calendar.buckets(tz, query.start_us, query.end_us, granularity, segments),
                         segments, granularity)


def _filters_sql(q: Sql, query: UsageQuery) -> None:
    for column, ids in query.filters():
        q.add(" AND ")
        q.in_list(column, sorted(ids))


async def aggregate(query: UsageQuery, specs: Sequence[Spec]) -> list[object]:
    """Answer every spec for one query with one SQL statement.

    Results, in spec order: ``Totals`` for ``TotalsSpec``; ``list[SeriesPoint]`` for
    ``SeriesSpec`` (every bucket, zero-filled); ``dict[int, Totals]`` (id -> totals, only
    ids with calls) for ``GroupSpec``.
    """
    if query.start_us >= query.end_us:
        raise ValueError("empty range")
    layouts: dict[int, _SeriesLayout] = {}
    cut_points: list[int] = []
    for i, spec in enumerate(specs):
        if isinstance(spec, SeriesSpec):
            layouts[i] = series_layout(query, spec.granularity)
            cut_points += layouts[i].cut_points()
    p = plan(query, cut_points)
    conn = connection()
    q = Sql(dialect(conn))
    empty = any(ids == () for _, ids in query.filters())
    rows: list[Sequence[int]] = []
    if not empty:
        _build(q, query, p, specs, layouts)
        rows = [tuple(int(v) for v in r) for r in await fetch_rows(q, conn)]
    grouped: dict[int, dict[int, tuple[int, int]]] = {i: {} for i in range(len(specs))}
    for spec_no, key, calls, credits in rows:
        grouped[spec_no][key] = (calls, credits)
    out: list[object] = []
    for i, spec in enumerate(specs):
        got = grouped[i]
        if isinstance(spec, TotalsSpec):
            calls, credits = got.get(0, (0, 0))
            out.append(Totals(calls, credits))
        elif isinstance(spec, GroupSpec):
            out.append({k: Totals(c, cr) for k, (c, cr) in got.items()})
        else:
            layout = layouts[i]
            per_bucket: dict[int, list[int]] = {}
            for key, (calls, credits) in got.items():
                acc = per_bucket.setdefault(layout.bucket_key(key), [0, 0])
                acc[0] += calls
                acc[1] += credits
            out.append([SeriesPoint(b.start_us, b.end_us, *per_bucket.get(b.key, (0, 0)))
                        for b in layout.buckets])
    return out


def _build(q: Sql, query: UsageQuery, p: _Plan, specs: Sequence[Spec],
           layouts: dict[int, _SeriesLayout]) -> None:
    dims = "api_key_id, endpoint_id, source_id, user_id"
    q.add("WITH base AS (")
    parts = 0
    if p.rollup_from_s is not None:
        q.add(f"SELECT slot AS t, {dims}, calls AS c, credits AS cr FROM usage_rollup "
              "WHERE account_id = ", query.account_id, " AND slot >= ", p.rollup_from_s,
              " AND slot < ", p.rollup_to_s)
        if p.skip_slots:
            q.add(" AND NOT ")
            q.in_list("slot", p.skip_slots)
        _filters_sql(q, query)
        parts += 1
    if p.raw_pieces:
        if parts:
            q.add(" UNION ALL ")
        q.add(f"SELECT occurred_at_us / {US} AS t, {dims}, 1 AS c, credits AS cr "
              "FROM usage_event WHERE account_id = ", query.account_id, " AND (")
        for i, (lo, hi) in enumerate(p.raw_pieces):
            q.add(" OR " if i else "", "(occurred_at_us >= ", lo, " AND occurred_at_us < ", hi, ")")
        q.add(")")
        _filters_sql(q, query)
    q.add(") ")
    for i, spec in enumerate(specs):
        if i:
            q.add(" UNION ALL ")
        if isinstance(spec, TotalsSpec):
            key = "0"
        elif isinstance(spec, GroupSpec):
            key = spec.dimension.value
        else:
            key = layouts[i].key_sql("t")
        q.add(f"SELECT {i} AS spec, {key} AS k, SUM(c), SUM(cr) FROM base GROUP BY {key}"
              if key != "0" else f"SELECT {i} AS spec, 0 AS k, SUM(c), SUM(cr) FROM base "
              "HAVING COUNT(*) > 0")

"""Analytics queries: totals, calendar series and breakdowns, exactly, in the database.

Every request for numbers is a ``UsageQuery`` (account, half-open UTC range, time zone,
resolved filters) plus a list of ``Spec``s (totals, a series, a group-by on one
dimension). ``aggregate`` answers all specs of one query with one SQL statement.

Where the numbers come from, per spec (``plan``, ``_choose_set``): the cube
(``usage_cube``, see ``gql_usage.models``) for whole UTC days that no bucket boundary
cuts, then whole 15-minute slots, read from the smallest grouping set that holds the
spec's filters and dimension; the raw events (``usage_event``) for the partial slots at
the range edges, any slot that a bucket boundary cuts (only in historical zones whose
offsets are not whole quarter hours), and questions no grouping set covers. The parts
never overlap and together cover exactly ``[from, to)``, so every answer equals an
aggregation of the raw events.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from zoneinfo import ZoneInfo

from gql_usage import calendar
from gql_usage.calendar import US, Bucket, Granularity, Segment
from gql_usage.db import Sql, dialect, fetch_rows, read_connection
from gql_usage.models import CUBE_SETS, DAY_SECONDS, DIM_BITS, SLOT_SECONDS

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
    day_ranges: list[tuple[int, int]] = field(default_factory=list)  # seconds, whole days
    slot_ranges: list[tuple[int, int]] = field(default_factory=list)  # seconds, whole slots
    raw_pieces: list[tuple[int, int]] = field(default_factory=list)  # [lo_us, hi_us)


def _merge(pieces: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for lo, hi in pieces:
        if lo >= hi:
            continue
        if merged and merged[-1][1] == lo:
            merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return merged


def plan(query: UsageQuery, cut_points_us: Sequence[int] = ()) -> _Plan:
    """Split the range into cube days, cube slots and raw-event pieces (module docstring).

    A cube unit is used only if no cut point (a bucket or offset boundary) lies strictly
    inside it, so each unit falls wholly into one bucket.
    """
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
    p.raw_pieces = _merge([(query.start_us, first * SLOT_US)] + [
        (c * SLOT_US, (c + 1) * SLOT_US) for c in cut] + [(last * SLOT_US, query.end_us)])
    cuts_s = sorted({c // US for c in cut_points_us if c % US == 0})
    days: list[tuple[int, int]] = []
    slots: list[tuple[int, int]] = []
    bounds = [first, *[x for c in cut for x in (c, c + 1)], last]
    for lo_slot, hi_slot in zip(bounds[::2], bounds[1::2], strict=True):
        lo, hi = lo_slot * SLOT_SECONDS, hi_slot * SLOT_SECONDS
        day = -(-lo // DAY_SECONDS) * DAY_SECONDS
        edge = lo
        while day + DAY_SECONDS <= hi:
            i = bisect.bisect_right(cuts_s, day)
            if i == len(cuts_s) or cuts_s[i] >= day + DAY_SECONDS:  # not cut inside
                slots.append((edge, day))
                days.append((day, day + DAY_SECONDS))
                edge = day + DAY_SECONDS
            day += DAY_SECONDS
        slots.append((edge, hi))
    p.day_ranges, p.slot_ranges = _merge(days), _merge(slots)
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


def _choose_set(query: UsageQuery, spec: Spec) -> int | None:
    """The smallest cube grouping set holding the spec's filters and dimension."""
    needed = sum(DIM_BITS[column] for column, _ in query.filters())
    if isinstance(spec, GroupSpec):
        needed |= DIM_BITS[spec.dimension.value]
    fits = [s for s in CUBE_SETS if s & needed == needed]
    return min(fits, key=lambda s: (s.bit_count(), s)) if fits else None


#: Every id an account can have in each dimension (so an index can seek value by value).
_ACCOUNT_IDS = {
    "api_key_id": "SELECT id FROM api_key WHERE account_id = ",
    "endpoint_id": "SELECT endpoint_id FROM account_endpoint WHERE account_id = ",
    "source_id": "SELECT source_id FROM account_source WHERE account_id = ",
    "user_id": "SELECT id FROM app_user WHERE account_id = ",
}


@dataclass
class Prepared:
    """The SQL answering a query's specs (``None`` when a filter matches nothing)."""

    sql: Sql | None
    layouts: dict[int, _SeriesLayout]


def prepare(query: UsageQuery, specs: Sequence[Spec], dialect_name: str) -> Prepared:
    if query.start_us >= query.end_us:
        raise ValueError("empty range")
    layouts = {i: series_layout(query, spec.granularity)
               for i, spec in enumerate(specs) if isinstance(spec, SeriesSpec)}
    if any(ids == () for _, ids in query.filters()):
        return Prepared(None, layouts)
    q = Sql(dialect_name)
    plain = plan(query)
    for i, spec in enumerate(specs):
        if i:
            q.add(" UNION ALL ")
        p = plan(query, layouts[i].cut_points()) if i in layouts else plain
        _spec_sql(q, i, query, spec, p, layouts.get(i))
    return Prepared(q, layouts)


async def aggregate(query: UsageQuery, specs: Sequence[Spec]) -> list[object]:
    """Answer every spec for one query with one SQL statement.

    Results, in spec order: ``Totals`` for ``TotalsSpec``; ``list[SeriesPoint]`` for
    ``SeriesSpec`` (every bucket, zero-filled); ``dict[int, Totals]`` (id -> totals, only
    ids with calls) for ``GroupSpec``.
    """
    conn = read_connection()
    prepared = prepare(query, specs, dialect(conn))
    rows: list[Sequence[int]] = []
    if prepared.sql is not None:
        rows = [tuple(int(v) for v in r) for r in await fetch_rows(prepared.sql, conn)]
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
            layout = prepared.layouts[i]
            per_bucket: dict[int, list[int]] = {}
            for key, (calls, credits) in got.items():
                acc = per_bucket.setdefault(layout.bucket_key(key), [0, 0])
                acc[0] += calls
                acc[1] += credits
            out.append([SeriesPoint(b.start_us, b.end_us, *per_bucket.get(b.key, (0, 0)))
                        for b in layout.buckets])
    return out


def _ranges_sql(q: Sql, column: str, ranges: Sequence[tuple[int, int]]) -> None:
    q.add(" AND (")
    for i, (lo, hi) in enumerate(ranges):
        q.add(" OR " if i else "", f"({column} >= ", lo, f" AND {column} < ", hi, ")")
    q.add(")")


def _spec_sql(q: Sql, index: int, query: UsageQuery, spec: Spec, p: _Plan,
              layout: _SeriesLayout | None) -> None:
    dims = ", ".join(DIM_BITS)
    if isinstance(spec, TotalsSpec):
        key = "0"
    elif isinstance(spec, GroupSpec):
        key = spec.dimension.value
    else:
        assert layout is not None
        key = layout.key_sql("t")
    cube_set = _choose_set(query, spec)
    units = [(DAY_SECONDS, p.day_ranges), (SLOT_SECONDS, p.slot_ranges)]
    raw = list(p.raw_pieces)
    if cube_set is None:  # no grouping set answers this: the raw events, whole range
        units, raw = [], [(query.start_us, query.end_us)]
    filters = dict(query.filters())
    parts = 0
    q.add(f"SELECT {index} AS spec, {key} AS k, SUM(c), SUM(cr) FROM (")
    for grain, ranges in units:
        if not ranges:
            continue
        assert cube_set is not None
        q.add(" UNION ALL " if parts else "",
              f"SELECT t, {dims}, calls AS c, credits AS cr FROM usage_cube WHERE account_id = ",
              query.account_id, " AND grain = ", grain, " AND dims = ", cube_set)
        for column, bit in DIM_BITS.items():
            if not cube_set & bit:
                q.add(f" AND {column} = 0")
            elif column in filters:
                q.add(" AND ").in_list(column, sorted(filters[column]))
            elif q.dialect == "postgres":  # every value, so the index seeks value by value
                q.add(f" AND {column} = ANY(ARRAY({_ACCOUNT_IDS[column]}", query.account_id, "))")
            else:
                q.add(f" AND {column} IN ({_ACCOUNT_IDS[column]}", query.account_id, ")")
        _ranges_sql(q, "t", ranges)
        parts += 1
    if raw:
        q.add(" UNION ALL " if parts else "",
              f"SELECT occurred_at_us / {US} AS t, {dims}, 1 AS c, credits AS cr "
              "FROM usage_event WHERE account_id = ", query.account_id)
        _ranges_sql(q, "occurred_at_us", raw)
        _filters_sql(q, query)
    q.add(") b")
    q.add(f" GROUP BY {key}" if key != "0" else " HAVING COUNT(*) > 0")

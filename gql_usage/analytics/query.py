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

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from zoneinfo import ZoneInfo

from gql_usage import calendar
from gql_usage.caches import MIB, byte_lru_cache
from gql_usage.calendar import US, Bucket, Granularity, Segment
from gql_usage.db import Sql, dialect, fetch_rows, read_connection
from gql_usage.models import CUBE_SETS, DIM_BITS, NO_USER

#: Past this many separate raw pieces a spec reads its whole range from the raw events.
MAX_RAW_PIECES = 64


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


@dataclass(frozen=True)
class TopSpec:
    """The first ``limit`` groups of ``dimension`` in the API's order (credits, then calls,
    both descending, then the row's key), cut in SQL; see ``Top``."""

    dimension: Dimension
    limit: int


Spec = TotalsSpec | SeriesSpec | GroupSpec | TopSpec


@dataclass(frozen=True)
class Top:
    """Answer to a ``TopSpec``: its rows (id -> totals) and, over every group with calls
    (not only the rows), how many there are and their totals."""

    rows: dict[int, Totals]
    groups: int
    totals: Totals


#: Per dimension, the table its ids point to and the SQL of the key the API orders rows
#: by (``{e}``: that table's alias): the endpoint path, the source key, and for API keys
#: and users their global id (``gql_usage.graphql.ids``: base64 of "<Type>:<external
#: id>"; PostgreSQL's base64 breaks lines every 76 characters, hence the ``translate``;
#: SQLite calls the registered ``gql_global_id``, see ``gql_usage.sqlite_backend``).
_ORDER_KEYS: dict[Dimension, tuple[str, dict[str, str]]] = {
    Dimension.ENDPOINT: ("endpoint", {"postgres": "{e}.path", "sqlite": "{e}.path"}),
    Dimension.SOURCE: ("source", {"postgres": '{e}."key"', "sqlite": '{e}."key"'}),
    Dimension.API_KEY: ("api_key", {
        "postgres": "translate(encode(convert_to('ApiKey:' || {e}.external_id, 'UTF8'), "
                    "'base64'), chr(10), '')",
        "sqlite": "gql_global_id('ApiKey', {e}.external_id)"}),
    Dimension.USER: ("app_user", {
        "postgres": "translate(encode(convert_to('User:' || {e}.external_id, 'UTF8'), "
                    "'base64'), chr(10), '')",
        "sqlite": "gql_global_id('User', {e}.external_id)"}),
}


@dataclass(frozen=True)
class SeriesPoint:
    start_us: int
    end_us: int
    calls: int
    credits: int


@dataclass
class _Plan:
    #: grain -> merged ``[lo_s, hi_s)`` ranges of whole cube units of that grain
    units: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    raw_pieces: list[tuple[int, int]] = field(default_factory=list)  # [lo_us, hi_us)


def _merge(pieces: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(pieces):
        if lo >= hi:
            continue
        if merged and merged[-1][1] == lo:
            merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return merged


def plan(query: UsageQuery, cut_points_us: Sequence[int] = (),
         grains: Sequence[int] = tuple(CUBE_SETS)) -> _Plan:
    """Cover the range with cube units of ``grains`` (coarsest first) and raw pieces.

    A unit is used only if no cut point (a bucket or offset boundary) lies strictly inside
    it, so each unit falls wholly into one bucket; between two cut points the coarsest
    units that fit are taken, then finer ones, then the raw events for what is left.
    """
    start, end = query.start_us, query.end_us
    cuts = sorted({c for c in cut_points_us if start < c < end})
    units: dict[int, list[tuple[int, int]]] = {g: [] for g in grains}
    raw: list[tuple[int, int]] = []

    def cover(lo: int, hi: int, level: int) -> None:
        if lo >= hi:
            return
        if level == len(grains):
            raw.append((lo, hi))
            return
        grain_us = grains[level] * US
        first, last = -(-lo // grain_us) * grain_us, hi // grain_us * grain_us
        if first >= last:
            cover(lo, hi, level + 1)
            return
        units[grains[level]].append((first // US, last // US))
        cover(lo, first, level + 1)
        cover(last, hi, level + 1)

    bounds = [start, *cuts, end]
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        cover(lo, hi, 0)
    raw = _merge(raw)
    if len(raw) > MAX_RAW_PIECES:
        return _Plan({}, [(start, end)])
    return _Plan({g: _merge(r) for g, r in units.items() if r}, raw)


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
    """Buckets of the query's range; raises ``calendar.TooManyBuckets``."""
    return bucket_layout(query.time_zone, query.start_us, query.end_us, granularity)


#: Bytes a laid-out bucket or offset segment holds (measured with tracemalloc: ~180).
LAYOUT_ITEM_BYTES = 200


def _layout_bytes(layout: _SeriesLayout) -> int:
    return LAYOUT_ITEM_BYTES * (len(layout.buckets) + len(layout.segments))


@byte_lru_cache("bucket layouts", 16 * MIB, _layout_bytes)
def bucket_layout(time_zone: str, start_us: int, end_us: int,
                  granularity: Granularity) -> _SeriesLayout:
    """Buckets of ``[start_us, end_us)`` in ``time_zone``; raises
    ``calendar.TooManyBuckets``.

    Cached by range alone: the query cost counts a series' buckets, the resolver checks
    the bucket limit before the loader runs, and the loader lays out the same buckets
    (immutable once built). A 2,000-bucket layout weighs ~400 KB, so the cache is bounded
    by bytes. A range sure to be too long is refused by arithmetic first, and DAY/WEEK/
    MONTH buckets (which need no offset scan) are laid out before the zone's offsets are
    scanned, so a refused series never scans."""
    calendar.check_bucket_limit(start_us, end_us, granularity)
    tz = calendar.zone(time_zone)
    if granularity is Granularity.HOUR:
        segments = calendar.offset_segments(tz, start_us, end_us)
        return _SeriesLayout(calendar.buckets(tz, start_us, end_us, granularity, segments),
                             segments, granularity)
    buckets = calendar.buckets(tz, start_us, end_us, granularity)
    return _SeriesLayout(buckets, calendar.offset_segments(tz, start_us, end_us), granularity)


def _filters_sql(q: Sql, query: UsageQuery) -> None:
    for column, ids in query.filters():
        q.add(" AND ")
        q.in_list(column, sorted(ids))


def _needed_dims(query: UsageQuery, spec: Spec) -> int:
    needed = sum(DIM_BITS[column] for column, _ in query.filters())
    if isinstance(spec, GroupSpec | TopSpec):
        needed |= DIM_BITS[spec.dimension.value]
    return needed


def _choose_sets(query: UsageQuery, spec: Spec) -> dict[int, int]:
    """Per grain (coarsest first), the smallest grouping set holding the spec's filters
    and dimension; grains with no such set are left out."""
    needed = _needed_dims(query, spec)
    chosen = {}
    for grain, sets in CUBE_SETS.items():
        fits = [s for s in sets if s & needed == needed]
        if fits:
            chosen[grain] = min(fits, key=lambda s: (s.bit_count(), s))
    return chosen


#: Every id an account can have in each dimension (so an index can seek value by value).
_ACCOUNT_IDS = {
    "api_key_id": "SELECT id FROM api_key WHERE account_id = ",
    "endpoint_id": "SELECT endpoint_id FROM account_endpoint WHERE account_id = ",
    "source_id": "SELECT source_id FROM account_source WHERE account_id = ",
    "user_id": f"SELECT {NO_USER} UNION ALL SELECT id FROM app_user WHERE account_id = ",
}
#: Raw events store a call without a user as NULL; the cube and pending events as NO_USER.
_EVENT_DIMS = ", ".join(f"coalesce({c}, {NO_USER}) AS {c}" if c == "user_id" else c
                        for c in DIM_BITS)


@dataclass(frozen=True)
class Prepared:
    """The SQL answering a query's specs (``None`` when a filter matches nothing)."""

    sql: Sql | None
    layouts: dict[int, _SeriesLayout]


def prepare(query: UsageQuery, specs: Sequence[Spec], dialect_name: str) -> Prepared:
    """The statement answering ``specs`` (cached: it depends on its arguments alone, and a
    dashboard asks the same question again and again)."""
    return _prepare(query, tuple(specs), dialect_name)


def _prepared_bytes(prepared: Prepared) -> int:
    sql = prepared.sql
    text = 0 if sql is None else (sum(sys.getsizeof(p) + 8 for p in sql.parts)
                                  + 32 * len(sql.params))
    return text + sum(_layout_bytes(layout) for layout in prepared.layouts.values())


@byte_lru_cache("analytics statements", 16 * MIB, _prepared_bytes)
def _prepare(query: UsageQuery, specs: tuple[Spec, ...], dialect_name: str) -> Prepared:
    if query.start_us >= query.end_us:
        raise ValueError("empty range")
    layouts = {i: series_layout(query, spec.granularity)
               for i, spec in enumerate(specs) if isinstance(spec, SeriesSpec)}
    if any(ids == () for _, ids in query.filters()):
        return Prepared(None, layouts)
    q = Sql(dialect_name, inline_ints=True)
    for i, spec in enumerate(specs):
        if i:
            q.add(" UNION ALL ")
        sets = _choose_sets(query, spec)
        cuts = layouts[i].cut_points() if i in layouts else []
        _spec_sql(q, i, query, spec, plan(query, cuts, tuple(sets)), sets, layouts.get(i))
    return Prepared(q, layouts)


async def aggregate(query: UsageQuery, specs: Sequence[Spec]) -> list[object]:
    """Answer every spec for one query with one SQL statement.

    Results, in spec order: ``Totals`` for ``TotalsSpec``; ``list[SeriesPoint]`` for
    ``SeriesSpec`` (every bucket, zero-filled); ``dict[int, Totals]`` (id -> totals, only
    ids with calls) for ``GroupSpec``; ``Top`` for ``TopSpec``.
    """
    conn = read_connection()
    prepared = prepare(query, specs, dialect(conn))
    rows: list[Sequence[int]] = []
    if prepared.sql is not None:
        rows = [tuple(int(v) for v in row) for row in await fetch_rows(prepared.sql, conn)]
    grouped: dict[int, dict[int, tuple[int, int]]] = {i: {} for i in range(len(specs))}
    # Per TopSpec: (groups, total calls, total credits), the same on each of its rows.
    overall: dict[int, tuple[int, int, int]] = {}
    for spec_no, key, calls, credits, groups, total_calls, total_credits in rows:
        grouped[spec_no][key] = (calls, credits)
        overall[spec_no] = (groups, total_calls, total_credits)
    out: list[object] = []
    for i, spec in enumerate(specs):
        got = grouped[i]
        if isinstance(spec, TotalsSpec):
            calls, credits = got.get(0, (0, 0))
            out.append(Totals(calls, credits))
        elif isinstance(spec, GroupSpec):
            out.append({k: Totals(c, cr) for k, (c, cr) in got.items()})
        elif isinstance(spec, TopSpec):
            groups, total_calls, total_credits = overall.get(i, (0, 0, 0))
            top = list(got.items())[:spec.limit]  # LIMIT 0 is sent as 1 (for the totals)
            out.append(Top({k: Totals(c, cr) for k, (c, cr) in top}, groups,
                           Totals(total_calls, total_credits)))
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


#: Up to this many cube units are listed (``t IN (...)``): the index then seeks each one
#: (with the dimension values), where ORed ranges would be a filter over the whole set.
MAX_LISTED_UNITS = 512


def _units_sql(q: Sql, grain: int, ranges: Sequence[tuple[int, int]]) -> None:
    units = sum((hi - lo) // grain for lo, hi in ranges)
    if len(ranges) > 1 and units <= MAX_LISTED_UNITS:
        starts = ", ".join(str(t) for lo, hi in ranges for t in range(lo, hi, grain))
        q.add(f" AND t IN ({starts})")
    else:
        _ranges_sql(q, "t", ranges)


def _spec_sql(q: Sql, index: int, query: UsageQuery, spec: Spec, p: _Plan,
              sets: dict[int, int], layout: _SeriesLayout | None) -> None:
    """One spec: cube units (plus the pending events in their time) and raw pieces."""
    dims = ", ".join(DIM_BITS)
    if isinstance(spec, TotalsSpec):
        key = "0"
    elif isinstance(spec, GroupSpec | TopSpec):
        key = spec.dimension.value
    else:
        assert layout is not None
        key = layout.key_sql("t")
    filters = dict(query.filters())
    parts = 0
    if isinstance(spec, TopSpec):
        # Every group is counted and summed (window functions, before the cut), then the
        # first ``limit`` rows in the API's order are kept: only those leave the database.
        entity, order_keys = _ORDER_KEYS[spec.dimension]
        order = f"COALESCE({order_keys[q.dialect].format(e='e')}, '')"
        if q.dialect == "postgres":
            order += ' COLLATE "C"'  # code point order, as Python compares the keys
        q.add(f"SELECT {index} AS spec, k, c, cr, n, tc, tcr FROM (SELECT g.k, g.c, g.cr, "
              "COUNT(*) OVER () AS n, SUM(g.c) OVER () AS tc, SUM(g.cr) OVER () AS tcr "
              f"FROM (SELECT {key} AS k, SUM(c) AS c, SUM(cr) AS cr FROM (")
    else:
        q.add(f"SELECT {index} AS spec, {key} AS k, SUM(c), SUM(cr), 0, 0, 0 FROM (")
    for grain, ranges in p.units.items():
        cube_set = sets[grain]
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
        _units_sql(q, grain, ranges)
        parts += 1
    covered = _merge([(lo * US, hi * US) for ranges in p.units.values() for lo, hi in ranges])
    for table, pieces in (("usage_pending", covered), ("usage_event", p.raw_pieces)):
        if not pieces:
            continue
        q.add(" UNION ALL " if parts else "",
              f"SELECT occurred_at_us / {US} AS t, "
              f"{_EVENT_DIMS if table == 'usage_event' else dims}, 1 AS c, credits AS cr "
              f"FROM {table} WHERE account_id = ", query.account_id)
        _ranges_sql(q, "occurred_at_us", pieces)
        _filters_sql(q, query)
        parts += 1
    q.add(") b")
    q.add(f" GROUP BY {key}" if key != "0" else " HAVING COUNT(*) > 0")
    if isinstance(spec, TopSpec):
        q.add(f") g LEFT JOIN {entity} e ON e.id = g.k ORDER BY g.cr DESC, g.c DESC, {order}, "
              f"g.k LIMIT {max(spec.limit, 1)}) top")

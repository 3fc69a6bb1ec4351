"""Analytics SQL: one statement answers every spec of a ``UsageQuery`` (totals, a
calendar series, a group-by on one dimension), exactly, in the database; several
queries' specs can share one statement (``aggregate_many``).

``prepare`` builds it from each spec's reads (``gql_usage.analytics.reads``), cached per
question; ``aggregate`` runs it and shapes the answers. See README, 'Architecture'
(Exactness).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from gql_usage.analytics.dimensions import ACCOUNT_IDS, ORDER_KEYS
from gql_usage.analytics.layout import SeriesLayout, bucket_layout, layout_bytes, series_layout
from gql_usage.analytics.reads import Reads, buckets_reads, merge, spec_reads
from gql_usage.analytics.specs import (
    DriverValues,
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
from gql_usage.caches import MIB, byte_lru_cache
from gql_usage.calendar import US
from gql_usage.storage.db import Sql, dialect, fetch_rows, read_connection
from gql_usage.storage.distribution import DISTRIBUTED_TABLES
from gql_usage.storage.models import DIM_BITS, NO_USER

#: Raw events store a call without a user as NULL; the cube and pending events as NO_USER.
_EVENT_DIMS = ", ".join(f"coalesce({c}, {NO_USER}) AS {c}" if c == "user_id" else c
                        for c in DIM_BITS)


def _filters_sql(q: Sql, query: UsageQuery) -> None:
    for column, ids in query.filters():
        q.add(" AND ")
        q.in_list(column, sorted(ids))


@dataclass(frozen=True)
class Prepared:
    """The SQL answering a query's specs (``None`` when a filter matches nothing)."""

    sql: Sql | None
    layouts: dict[int, SeriesLayout]


def prepare(query: UsageQuery, specs: Sequence[Spec], dialect_name: str) -> Prepared:
    """The statement answering ``specs`` (cached: it depends on its arguments alone, and a
    dashboard asks the same question again and again). A statement with a ``WindowSpec``
    is built each time: its window moves with the clock, so it is never asked twice, and
    cached it would only push the dashboards' statements out."""
    return prepare_many([(query, specs)], dialect_name)


def prepare_many(asked: Sequence[tuple[UsageQuery, Sequence[Spec]]],
                 dialect_name: str) -> Prepared:
    """One statement answering the specs of several queries (e.g. a report and its
    ``previous`` period): the specs are numbered one after the other, query by query, and
    one query alone makes exactly ``prepare``'s statement."""
    key = tuple((query, tuple(specs)) for query, specs in asked)
    if any(isinstance(spec, WindowSpec) for _, specs in key for spec in specs):
        return _prepare_uncached(key, dialect_name)
    return _prepare(key, dialect_name)


def _prepared_bytes(prepared: Prepared) -> int:
    sql = prepared.sql
    text = 0 if sql is None else (sum(sys.getsizeof(p) + 8 for p in sql.parts)
                                  + 32 * len(sql.params))
    return text + sum(layout_bytes(layout) for layout in prepared.layouts.values())


@byte_lru_cache("analytics statements", 16 * MIB, _prepared_bytes)
def _prepare(asked: tuple[tuple[UsageQuery, tuple[Spec, ...]], ...],
             dialect_name: str) -> Prepared:
    layouts: dict[int, SeriesLayout] = {}
    q = Sql(dialect_name, inline_ints=True)
    index = parts = 0
    for query, specs in asked:
        if query.start_us >= query.end_us:
            raise ValueError("empty range")
        matches_nothing = any(ids == () for _, ids in query.filters())
        for spec in specs:
            layout = None
            if isinstance(spec, SeriesSpec):
                layout = layouts[index] = series_layout(query, spec.granularity)
            elif isinstance(spec, RangeSeriesSpec):
                layout = layouts[index] = bucket_layout(query.time_zone, spec.start_us,
                                                        spec.end_us, spec.granularity)
            if not matches_nothing:
                if parts:
                    q.add(" UNION ALL ")
                if isinstance(spec, SpikeDriversSpec):
                    reads, sets = buckets_reads(query, spec, spec.buckets)
                    _drivers_sql(q, index, query, spec, reads, sets)
                else:
                    part_query, part_spec = _part(query, spec)
                    reads, sets = spec_reads(part_query, part_spec, layout)
                    _spec_sql(q, index, part_query, part_spec, reads, sets, layout)
                parts += 1
            index += 1
    return Prepared(q if parts else None, layouts)


_prepare_uncached: Callable[[tuple[tuple[UsageQuery, tuple[Spec, ...]], ...], str],
                            Prepared] = (
    _prepare.__wrapped__)  # type: ignore[attr-defined]


def _part(query: UsageQuery, spec: Spec) -> tuple[UsageQuery, Spec]:
    """What one spec reads: a ``WindowSpec`` is the totals of its window; a
    ``RangeSeriesSpec`` reads the same filter over its own range."""
    if isinstance(spec, WindowSpec):
        if not query.start_us <= spec.start_us < spec.end_us <= query.end_us:
            raise ValueError("a window must be a non-empty part of its query's range")
        return replace(query, start_us=spec.start_us, end_us=spec.end_us), TotalsSpec()
    if isinstance(spec, RangeSeriesSpec):
        return replace(query, start_us=spec.start_us, end_us=spec.end_us), spec
    return query, spec


async def aggregate(query: UsageQuery, specs: Sequence[Spec]) -> list[object]:
    """Answer every spec for one query with one SQL statement.

    Results, in spec order: ``Totals`` for ``TotalsSpec``; ``list[SeriesPoint]`` for
    ``SeriesSpec`` (every bucket, zero-filled); ``dict[int, Totals]`` (id -> totals, only
    ids with calls) for ``GroupSpec``; ``Top`` for ``TopSpec``; ``list[SeriesPoint]`` over
    its own range for ``RangeSeriesSpec``; ``DriverValues`` for ``SpikeDriversSpec``;
    ``Totals`` of its window for ``WindowSpec``.
    """
    return (await aggregate_many([(query, specs)]))[0]


async def aggregate_many(asked: Sequence[tuple[UsageQuery, Sequence[Spec]]]
                         ) -> list[list[object]]:
    """Answer the specs of several queries with one SQL statement: per query, its
    answers as ``aggregate`` gives them."""
    conn = read_connection()
    prepared = prepare_many(asked, dialect(conn))
    rows: list[Sequence[int]] = []
    if prepared.sql is not None:
        rows = await fetch_rows(prepared.sql, conn)  # integers (``_int``)
    count = sum(len(specs) for _, specs in asked)
    grouped: dict[int, dict[int, tuple[int, int]]] = {i: {} for i in range(count)}
    # Per TopSpec: (groups, total calls, total credits), the same on each of its rows.
    overall: dict[int, tuple[int, int, int]] = {}
    # Per SpikeDriversSpec: its rows are (bucket, calls, credits, group, spike).
    every = [spec for _, specs in asked for spec in specs]
    drivers: dict[int, DriverValues] = {i: [{} for _ in spec.spikes] for i, spec in
                                        enumerate(every) if isinstance(spec, SpikeDriversSpec)}
    for spec_no, key, calls, credits, groups, total_calls, total_credits in rows:
        if spec_no in drivers:
            drivers[spec_no][total_calls].setdefault(groups, {})[key] = (calls, credits)
            continue
        grouped[spec_no][key] = (calls, credits)
        overall[spec_no] = (groups, total_calls, total_credits)
    answers: list[list[object]] = []
    i = 0
    for _, specs in asked:
        out: list[object] = []
        for spec in specs:
            if isinstance(spec, SpikeDriversSpec):
                out.append(drivers[i])
            else:
                out.append(_answer(spec, grouped[i], overall.get(i), prepared.layouts.get(i)))
            i += 1
        answers.append(out)
    return answers


def _answer(spec: Spec, got: dict[int, tuple[int, int]], overall: tuple[int, int, int] | None,
            layout: SeriesLayout | None) -> object:
    """One spec's answer from its rows (``aggregate``)."""
    if isinstance(spec, TotalsSpec | WindowSpec):
        calls, credits = got.get(0, (0, 0))
        return Totals(calls, credits)
    if isinstance(spec, GroupSpec):
        return {k: Totals(c, cr) for k, (c, cr) in got.items()}
    if isinstance(spec, TopSpec):
        groups, total_calls, total_credits = overall or (0, 0, 0)
        top = list(got.items())[:spec.limit]  # LIMIT 0 is sent as 1 (for the totals)
        return Top({k: Totals(c, cr) for k, (c, cr) in top}, groups,
                   Totals(total_calls, total_credits))
    assert layout is not None
    if layout.keyed_by_sql:
        per_bucket: Mapping[int, Sequence[int]] = got
    else:
        summed: dict[int, list[int]] = {}
        for key, (calls, credits) in got.items():
            acc = summed.setdefault(layout.bucket_key(key), [0, 0])
            acc[0] += calls
            acc[1] += credits
        per_bucket = summed
    zero = (0, 0)
    return [SeriesPoint(b.start_us, b.end_us, *per_bucket.get(b.key, zero))
            for b in layout.buckets]


def _ranges_sql(q: Sql, column: str, ranges: Sequence[tuple[int, int]]) -> None:
    q.add(" AND (")
    for i, (lo, hi) in enumerate(ranges):
        q.add(" OR " if i else "", f"({column} >= ", lo, f" AND {column} < ", hi, ")")
    q.add(")")


#: Up to this many cube units are listed (``t IN (...)``): the index then seeks each one
#: (with the dimension values), where ORed ranges would be a filter over the whole set.
MAX_LISTED_UNITS = 512
#: Up to this many ranges of one grain are read each on its own when the grouping set
#: has a dimension (``_reads_sql``).
MAX_RANGE_READS = 4


def _units_sql(q: Sql, grain: int, ranges: Sequence[tuple[int, int]]) -> None:
    units = sum((hi - lo) // grain for lo, hi in ranges)
    if len(ranges) > 1 and units <= MAX_LISTED_UNITS:
        starts = ", ".join(str(t) for lo, hi in ranges for t in range(lo, hi, grain))
        q.add(f" AND t IN ({starts})")
    else:
        _ranges_sql(q, "t", ranges)


def _int(total: str) -> str:
    """A sum as an integer: PostgreSQL sums a BIGINT column as NUMERIC, which arrives as a
    ``Decimal`` (converting every value back was a tenth of a long page's Python time). A
    sum past the BIGINT range fails the statement; it is never rounded."""
    return f"CAST({total} AS BIGINT)"


def _spec_sql(q: Sql, index: int, query: UsageQuery, spec: Spec, reads: Reads,
              sets: dict[int, int], layout: SeriesLayout | None) -> None:
    """One spec: cube units (plus the pending events in their time) and raw pieces."""
    if isinstance(spec, TotalsSpec):
        key = "0"
    elif isinstance(spec, GroupSpec | TopSpec):
        key = spec.dimension.column
    else:
        assert layout is not None
        key = layout.key_sql("t")
    if isinstance(spec, TopSpec):
        # Every group is counted and summed (window functions, before the cut), then the
        # first ``limit`` rows in the API's order are kept: only those leave the database.
        entity, order_keys = ORDER_KEYS[spec.dimension]
        order = f"COALESCE({order_keys[q.dialect].format(e='e')}, '')"
        if q.dialect == "postgres":
            order += ' COLLATE "C"'  # code point order, as Python compares the keys
        q.add(f"SELECT {index} AS spec, k, c, cr, n, tc, tcr FROM (SELECT g.k, g.c, g.cr, "
              f"COUNT(*) OVER () AS n, {_int('SUM(g.c) OVER ()')} AS tc, "
              f"{_int('SUM(g.cr) OVER ()')} AS tcr "
              f"FROM (SELECT {key} AS k, {_int('SUM(c)')} AS c, {_int('SUM(cr)')} AS cr FROM (")
    else:
        q.add(f"SELECT {index} AS spec, {key} AS k, {_int('SUM(c)')}, {_int('SUM(cr)')}, 0, 0, 0"
              " FROM (")
    _reads_sql(q, query, reads, sets)
    q.add(") b")
    q.add(f" GROUP BY {key}" if key != "0" else " HAVING COUNT(*) > 0")
    if isinstance(spec, TopSpec):
        q.add(f") g LEFT JOIN {entity} e ON e.id = g.k")
        if entity in DISTRIBUTED_TABLES:  # an account's keys or users: on its shard
            q.add(" AND e.account_id = ", query.account_id)
        q.add(f" ORDER BY g.cr DESC, g.c DESC, {order}, g.k LIMIT {max(spec.limit, 1)}) top")


def _reads_sql(q: Sql, query: UsageQuery, reads: Reads, sets: dict[int, int]) -> None:
    """The rows ``(t, <dimension columns>, c, cr)`` of ``reads``: cube units (plus the
    pending events in their time) and raw pieces, joined by UNION ALL."""
    dims = ", ".join(DIM_BITS)
    filters = dict(query.filters())
    parts = 0
    for grain, ranges in reads.units.items():
        cube_set = sets[grain]
        # A set with a dimension of many values (or a filter's) is read by one index seek
        # per value and unit listed; a few ranges, each read on its own, need only one
        # range scan per value (the edges of a 30-day breakdown by key: 100 scans for
        # 1,150 seeks).
        valued = any(cube_set & bit for bit in DIM_BITS.values())
        scans = ([[r] for r in ranges] if valued and 1 < len(ranges) <= MAX_RANGE_READS
                 else [ranges])
        for scan in scans:
            q.add(" UNION ALL " if parts else "",
                  f"SELECT t, {dims}, calls AS c, credits AS cr FROM usage_cube"
                  " WHERE account_id = ", query.account_id, " AND grain = ", grain,
                  " AND dims = ", cube_set)
            for column, bit in DIM_BITS.items():
                if not cube_set & bit:
                    q.add(f" AND {column} = 0")
                elif column in filters:
                    q.add(" AND ").in_list(column, sorted(filters[column]))
                elif q.dialect == "postgres":  # every value: the index seeks value by value
                    q.add(f" AND {column} = ANY(ARRAY({ACCOUNT_IDS[column]}",
                          query.account_id, "))")
                else:
                    q.add(f" AND {column} IN ({ACCOUNT_IDS[column]}", query.account_id, ")")
            _units_sql(q, grain, scan)
            parts += 1
    covered = merge([(lo * US, hi * US) for ranges in reads.units.values() for lo, hi in ranges])
    # An account not in the cube (``gql_usage.storage.cube``: usage_cube_account) has no
    # cube rows, and its pending events are also raw: its whole range is read from the
    # raw events instead. Each piece reads the account only if it is in the cube (or
    # only if not): a one-row lookup (a one-time filter on PostgreSQL; on Citus both
    # tables name the account, so the statement stays routed to its shard) that the
    # statement's snapshot makes consistent.
    whole = merge([*covered, *reads.raw_pieces])
    for table, pieces, cubed in (("usage_pending", covered, True),
                                 ("usage_event", reads.raw_pieces, True),
                                 ("usage_event", whole, False)):
        if not pieces:
            continue
        q.add(" UNION ALL " if parts else "",
              f"SELECT occurred_at_us / {US} AS t, "
              f"{_EVENT_DIMS if table == 'usage_event' else dims}, 1 AS c, credits AS cr "
              f"FROM {table} WHERE account_id = ", query.account_id,
              f" AND {'' if cubed else 'NOT '}EXISTS (SELECT 1 FROM usage_cube_account "
              "WHERE account_id = ", query.account_id, " AND cubed = 1)")
        _ranges_sql(q, "occurred_at_us", pieces)
        _filters_sql(q, query)
        parts += 1


def _drivers_sql(q: Sql, index: int, query: UsageQuery, spec: SpikeDriversSpec, reads: Reads,
                 sets: dict[int, int]) -> None:
    """A ``SpikeDriversSpec``: per (bucket, group) sums over the spikes' buckets (``d``),
    each spike's buckets (``w``: its own with ``sp = 1``, its window's), the groups ranked
    by credits in each spike's bucket (``r``); the rows of each spike's first
    ``candidates`` groups in that spike's buckets leave the database, nothing else."""
    # Only the spikes' buckets are read, so a time's bucket is the first whose end is
    # after it (ends in whole seconds, rounded up: a range may end within a second).
    ends = [-(-hi // US) for _, hi in spec.buckets]
    if len(ends) == 1:
        bucket = "0"
    else:
        bucket = "CASE " + " ".join(f"WHEN t < {end} THEN {n}" for n, end in
                                    enumerate(ends[:-1])) + f" ELSE {len(ends) - 1} END"
    members = ", ".join(f"({s}, {k}, {int(k == own)})" for s, (own, window) in
                        enumerate(spec.spikes) for k in (own, *window))
    column = spec.dimension.column
    q.add(f"SELECT {index} AS spec, x.k, x.c, x.cr, x.g, x.s, 0 FROM (WITH d AS (SELECT "
          f"{bucket} AS k, {column} AS g, {_int('SUM(c)')} AS c, {_int('SUM(cr)')} AS cr FROM (")
    _reads_sql(q, query, reads, sets)
    q.add(f") b GROUP BY 1, 2), w(s, k, sp) AS (VALUES {members}), "
          "r AS (SELECT w.s, d.g, ROW_NUMBER() OVER (PARTITION BY w.s ORDER BY d.cr DESC, "
          "d.c DESC, d.g) AS rn FROM d JOIN w ON w.k = d.k AND w.sp = 1) "
          "SELECT w.s AS s, d.k AS k, d.g AS g, d.c AS c, d.cr AS cr FROM d "
          "JOIN w ON w.k = d.k JOIN r ON r.s = w.s AND r.g = d.g AND r.rn <= ",
          spec.candidates, ") x")

"""Analytics SQL: one statement answers every spec of a ``UsageQuery`` (totals, a
calendar series, a group-by on one dimension), exactly, in the database.

``prepare`` builds it from each spec's reads (``gql_usage.analytics.reads``), cached per
question; ``aggregate`` runs it and shapes the answers. See README, 'Architecture'
(Exactness).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from gql_usage.analytics.dimensions import ACCOUNT_IDS, ORDER_KEYS
from gql_usage.analytics.layout import SeriesLayout, layout_bytes, series_layout
from gql_usage.analytics.reads import Reads, merge, spec_reads
from gql_usage.analytics.specs import (
    GroupSpec,
    SeriesPoint,
    SeriesSpec,
    Spec,
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
    if any(isinstance(spec, WindowSpec) for spec in specs):
        return _prepare_uncached(query, tuple(specs), dialect_name)
    return _prepare(query, tuple(specs), dialect_name)


def _prepared_bytes(prepared: Prepared) -> int:
    sql = prepared.sql
    text = 0 if sql is None else (sum(sys.getsizeof(p) + 8 for p in sql.parts)
                                  + 32 * len(sql.params))
    return text + sum(layout_bytes(layout) for layout in prepared.layouts.values())


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
        part_query, part_spec = _part(query, spec)
        reads, sets = spec_reads(part_query, part_spec, layouts.get(i))
        _spec_sql(q, i, part_query, part_spec, reads, sets, layouts.get(i))
    return Prepared(q, layouts)


_prepare_uncached: Callable[[UsageQuery, tuple[Spec, ...], str], Prepared] = (
    _prepare.__wrapped__)  # type: ignore[attr-defined]


def _part(query: UsageQuery, spec: Spec) -> tuple[UsageQuery, Spec]:
    """What one spec reads: a ``WindowSpec`` is the totals of its window."""
    if isinstance(spec, WindowSpec):
        if not query.start_us <= spec.start_us < spec.end_us <= query.end_us:
            raise ValueError("a window must be a non-empty part of its query's range")
        return replace(query, start_us=spec.start_us, end_us=spec.end_us), TotalsSpec()
    return query, spec


async def aggregate(query: UsageQuery, specs: Sequence[Spec]) -> list[object]:
    """Answer every spec for one query with one SQL statement.

    Results, in spec order: ``Totals`` for ``TotalsSpec``; ``list[SeriesPoint]`` for
    ``SeriesSpec`` (every bucket, zero-filled); ``dict[int, Totals]`` (id -> totals, only
    ids with calls) for ``GroupSpec``; ``Top`` for ``TopSpec``; ``Totals`` of its window
    for ``WindowSpec``.
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
        if isinstance(spec, TotalsSpec | WindowSpec):
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


def _spec_sql(q: Sql, index: int, query: UsageQuery, spec: Spec, reads: Reads,
              sets: dict[int, int], layout: SeriesLayout | None) -> None:
    """One spec: cube units (plus the pending events in their time) and raw pieces."""
    dims = ", ".join(DIM_BITS)
    if isinstance(spec, TotalsSpec):
        key = "0"
    elif isinstance(spec, GroupSpec | TopSpec):
        key = spec.dimension.column
    else:
        assert layout is not None
        key = layout.key_sql("t")
    filters = dict(query.filters())
    parts = 0
    if isinstance(spec, TopSpec):
        # Every group is counted and summed (window functions, before the cut), then the
        # first ``limit`` rows in the API's order are kept: only those leave the database.
        entity, order_keys = ORDER_KEYS[spec.dimension]
        order = f"COALESCE({order_keys[q.dialect].format(e='e')}, '')"
        if q.dialect == "postgres":
            order += ' COLLATE "C"'  # code point order, as Python compares the keys
        q.add(f"SELECT {index} AS spec, k, c, cr, n, tc, tcr FROM (SELECT g.k, g.c, g.cr, "
              "COUNT(*) OVER () AS n, SUM(g.c) OVER () AS tc, SUM(g.cr) OVER () AS tcr "
              f"FROM (SELECT {key} AS k, SUM(c) AS c, SUM(cr) AS cr FROM (")
    else:
        q.add(f"SELECT {index} AS spec, {key} AS k, SUM(c), SUM(cr), 0, 0, 0 FROM (")
    for grain, ranges in reads.units.items():
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
                q.add(f" AND {column} = ANY(ARRAY({ACCOUNT_IDS[column]}", query.account_id, "))")
            else:
                q.add(f" AND {column} IN ({ACCOUNT_IDS[column]}", query.account_id, ")")
        _units_sql(q, grain, ranges)
        parts += 1
    covered = merge([(lo * US, hi * US) for ranges in reads.units.values() for lo, hi in ranges])
    for table, pieces in (("usage_pending", covered), ("usage_event", reads.raw_pieces)):
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

"""The CSV export's reads (``GET /export/usage.csv``): a range cut into windows that
end on bucket boundaries, each answered by ONE statement per (bucket, group).

A window holds at most a few hundred buckets (a week of HOUR buckets, a year of DAY
buckets, ...), so however long the range, what one statement returns (and what the
server holds at once) is bounded by one window's buckets times the groups. Each
statement reads cube units and raw events exactly as a ``series`` does
(``gql_usage.analytics.reads``, ``gql_usage.analytics.query``): its figures are the
GraphQL series' and breakdowns', to the unit.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

from gql_usage import calendar
from gql_usage.analytics.dimensions import Dimension
from gql_usage.analytics.layout import SeriesLayout, bucket_layout
from gql_usage.analytics.query import _reads_sql
from gql_usage.analytics.reads import spec_reads
from gql_usage.analytics.specs import GroupSpec, SeriesSpec, Totals, UsageQuery
from gql_usage.calendar import DAY_S, US, Bucket, Granularity
from gql_usage.storage.db import Sql, dialect, fetch_rows, read_connection

#: Most buckets one export may hold (checked by arithmetic, ``calendar.min_buckets``,
#: before anything runs): ten years of HOUR buckets, 274 years of DAY buckets. The
#: rate limit (priced per window) bounds what a viewer can ask for in a minute.
MAX_EXPORT_BUCKETS = 100_000

#: Per granularity, the length (seconds) of the windows a range is cut into (one
#: statement each), and the coarser calendar buckets whose boundaries they end on
#: (every one of them is a boundary of the exported buckets: a local day begins on a
#: local hour, and so does a DST change, which also cuts HOUR buckets).
WINDOW_S: dict[Granularity, int] = {Granularity.HOUR: 7 * DAY_S, Granularity.DAY: 366 * DAY_S,
                                    Granularity.WEEK: 3 * 366 * DAY_S,
                                    Granularity.MONTH: 20 * 366 * DAY_S}
_BOUNDARIES: dict[Granularity, Granularity] = {Granularity.HOUR: Granularity.DAY,
                                               Granularity.DAY: Granularity.DAY,
                                               Granularity.WEEK: Granularity.WEEK,
                                               Granularity.MONTH: Granularity.MONTH}
#: The longest local length of a boundary bucket (a day may last 48 h when a zone
#: crosses the date line); a window spans at least three of them.
_LONGEST_S = {Granularity.DAY: 2 * DAY_S, Granularity.WEEK: 8 * DAY_S,
              Granularity.MONTH: 32 * DAY_S}


def min_window_s(granularity: Granularity) -> int:
    """The shortest window a range of this granularity may be cut into."""
    return 3 * _LONGEST_S[_BOUNDARIES[granularity]]


def windows(time_zone: str, start_us: int, end_us: int, granularity: Granularity,
            window_s: int | None = None) -> Iterator[tuple[int, int]]:
    """``[start_us, end_us)`` cut into consecutive ``[lo, hi)`` windows of about
    ``window_s`` seconds (default ``WINDOW_S``), each ending on a boundary of the
    ``granularity``'s buckets in ``time_zone``: every bucket of the range lies in
    exactly one window, and each window's buckets are the range's, unclipped but for
    the range's own first and last. Lazy: a long range is never laid out at once."""
    span_s = WINDOW_S[granularity] if window_s is None else window_s
    if span_s < min_window_s(granularity):
        raise ValueError(f"a {granularity.value} window lasts at least "
                         f"{min_window_s(granularity)} s")
    tz = calendar.zone(time_zone)
    boundary = _BOUNDARIES[granularity]
    lo = start_us
    while lo < end_us:
        hi = lo + span_s * US
        if hi >= end_us:
            yield lo, end_us
            return
        # The window ends where the last boundary bucket of [lo, hi] starts: at hi itself
        # when hi is a boundary, else before it. Three of them fit, so it is after lo.
        hi = calendar.buckets(tz, lo, hi + 1, boundary)[-1].start_us
        yield lo, hi
        lo = hi


@dataclass(frozen=True)
class Cells:
    """One bucket of an export and its groups' totals (group id -> totals; only groups
    with calls; ``{}`` for a bucket without calls)."""

    bucket: Bucket
    groups: dict[int, Totals]


#: The layout of one window, not cached: an export's windows are not asked twice, and
#: cached they would push the dashboards' layouts out.
_window_layout = bucket_layout.__wrapped__  # type: ignore[attr-defined]


def window_statement(query: UsageQuery, granularity: Granularity,
                     dimension: Dimension | None, dialect_name: str
                     ) -> tuple[Sql | None, SeriesLayout]:
    """The statement of one window (``query``'s range, at most ``calendar.MAX_BUCKETS``
    buckets): rows ``(bucket key, group id, calls, credits)``, group id 0 without a
    ``dimension``; None when a filter matches nothing. Reads as a series of that
    granularity does, from the grouping set holding the filters and the dimension."""
    layout: SeriesLayout = _window_layout(query.time_zone, query.start_us, query.end_us,
                                          granularity)
    if any(ids == () for _, ids in query.filters()):
        return None, layout
    spec = SeriesSpec(granularity) if dimension is None else GroupSpec(dimension)
    reads, sets = spec_reads(query, spec, layout)
    group = "0" if dimension is None else dimension.column
    q = Sql(dialect_name, inline_ints=True)
    q.add(f"SELECT {layout.key_sql('t')} AS k, {group} AS g, SUM(c), SUM(cr) FROM (")
    _reads_sql(q, query, reads, sets)
    q.add(") b GROUP BY 1, 2")
    return q, layout


async def window_cells(query: UsageQuery, start_us: int, end_us: int,
                       granularity: Granularity, dimension: Dimension | None) -> list[Cells]:
    """Every bucket of ``[start_us, end_us)`` (a window of ``windows``) under ``query``'s
    filters, in order, with its groups by ``dimension`` (without one: the group 0, for
    every call). One statement."""
    conn = read_connection()
    window = replace(query, start_us=start_us, end_us=end_us)
    sql, layout = window_statement(window, granularity, dimension, dialect(conn))
    per_bucket: dict[int, dict[int, list[int]]] = {}
    if sql is not None:
        for key, group, calls, credits in await fetch_rows(sql, conn):
            acc = per_bucket.setdefault(layout.bucket_key(int(key)), {}).setdefault(
                int(group), [0, 0])
            acc[0] += int(calls)
            acc[1] += int(credits)
    return [Cells(b, {g: Totals(*t) for g, t in per_bucket.get(b.key, {}).items()})
            for b in layout.buckets]


def too_many_buckets(start_us: int, end_us: int, granularity: Granularity) -> str | None:
    """Why an export of this range is refused (more than ``MAX_EXPORT_BUCKETS``
    buckets, known by arithmetic alone), or None."""
    if calendar.min_buckets(start_us, end_us, granularity) <= MAX_EXPORT_BUCKETS:
        return None
    return (f"the range holds more than {MAX_EXPORT_BUCKETS:,} {granularity.value} buckets; "
            "choose a coarser granularity or a shorter range")


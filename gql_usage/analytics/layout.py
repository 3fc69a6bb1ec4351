"""A series' calendar buckets and offset segments, and the SQL that maps an instant to
its bucket (see ``gql_usage.calendar``)."""

from __future__ import annotations

from dataclasses import dataclass

from gql_usage import calendar
from gql_usage.analytics.specs import UsageQuery
from gql_usage.caches import MIB, byte_lru_cache
from gql_usage.calendar import DAY_S, HOUR_S, US, Bucket, Granularity, Segment


@dataclass
class SeriesLayout:
    """The buckets of one series and the zone's offset segments over its range."""

    buckets: list[Bucket]
    segments: list[Segment]
    granularity: Granularity

    def key_sql(self, t: str) -> str:
        """SQL computing this series' bucket key from a UTC time in whole seconds ``t``."""
        def expr(index: int, seg: Segment) -> str:
            if self.granularity is Granularity.HOUR:
                return f"(({t} + {seg.offset_s}) / {HOUR_S}) * 1024 + {index}"
            return f"({t} + {seg.offset_s}) / {DAY_S}"

        if len(self.segments) == 1:
            return expr(0, self.segments[0])
        branches = " ".join(f"WHEN {t} < {seg.end_s} THEN {expr(i, seg)}"
                            for i, seg in enumerate(self.segments[:-1]))
        last = len(self.segments) - 1
        return f"CASE {branches} ELSE {expr(last, self.segments[-1])} END"

    @property
    def keyed_by_sql(self) -> bool:
        """Whether the SQL key is the bucket's own key (HOUR; DAY: a day is its bucket)."""
        return self.granularity is Granularity.HOUR or self.granularity is Granularity.DAY

    def bucket_key(self, sql_key: int) -> int:
        if self.keyed_by_sql:
            return sql_key
        return calendar.day_to_bucket_start(sql_key, self.granularity)

    def cut_points(self) -> list[int]:
        """Instants (microseconds) where a bucket or an offset segment begins, inside the
        range: no cube unit may straddle one."""
        points = [b.start_us for b in self.buckets[1:]]
        points += [seg.start_s * US for seg in self.segments[1:]]
        return points


def series_layout(query: UsageQuery, granularity: Granularity) -> SeriesLayout:
    """Buckets of the query's range; raises ``calendar.TooManyBuckets``."""
    return bucket_layout(query.time_zone, query.start_us, query.end_us, granularity)


#: Bytes a laid-out bucket or offset segment holds (measured with tracemalloc: ~180).
LAYOUT_ITEM_BYTES = 200


def layout_bytes(layout: SeriesLayout) -> int:
    return LAYOUT_ITEM_BYTES * (len(layout.buckets) + len(layout.segments))


@byte_lru_cache("bucket layouts", 16 * MIB, layout_bytes)
def bucket_layout(time_zone: str, start_us: int, end_us: int,
                  granularity: Granularity) -> SeriesLayout:
    """Buckets of ``[start_us, end_us)`` in ``time_zone``; raises
    ``calendar.TooManyBuckets``.

    Cached by range alone (the query cost, the resolver and the loader lay out the same
    buckets), bounded by bytes. A range sure to be too long is refused by arithmetic
    first, and DAY/WEEK/MONTH buckets are laid out before the zone's offsets are scanned,
    so a refused series never scans. See README, 'Limits' (Caches)."""
    calendar.check_bucket_limit(start_us, end_us, granularity)
    tz = calendar.zone(time_zone)
    if granularity is Granularity.HOUR:
        segments = calendar.offset_segments(tz, start_us, end_us)
        return SeriesLayout(calendar.buckets(tz, start_us, end_us, granularity, segments),
                            segments, granularity)
    buckets = calendar.buckets(tz, start_us, end_us, granularity)
    return SeriesLayout(buckets, calendar.offset_segments(tz, start_us, end_us), granularity)

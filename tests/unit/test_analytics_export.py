"""The export's windows (``gql_usage.analytics.export.windows``): consecutive, each
ending on a bucket boundary, so that their buckets are exactly the range's, through
DST changes, half-hour offsets, midnight changes and a skipped day. Pure."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gql_usage import calendar
from gql_usage.analytics.export import (
    MAX_EXPORT_BUCKETS,
    WINDOW_S,
    min_window_s,
    too_many_buckets,
    windows,
)
from gql_usage.calendar import DAY_S, US, Granularity


def us(*args: int) -> int:
    return calendar.to_us(datetime(*args, tzinfo=UTC))  # type: ignore[misc]


ZONES = ["UTC", "Europe/Berlin", "America/Santiago", "Asia/Kolkata", "Australia/Lord_Howe",
         "Pacific/Apia"]
RANGES = {Granularity.HOUR: (us(2011, 12, 25, 7, 13, 5), us(2012, 1, 20, 3)),  # Apia skips
          Granularity.DAY: (us(2011, 9, 1, 1, 1), us(2013, 5, 1)),
          Granularity.WEEK: (us(2011, 1, 5, 9), us(2020, 3, 1)),
          Granularity.MONTH: (us(1990, 6, 15), us(2080, 1, 1, 5))}


def bounds(tz_name: str, lo: int, hi: int, g: Granularity) -> list[tuple[int, int]]:
    return [(b.start_us, b.end_us) for b in calendar.buckets(calendar.zone(tz_name), lo, hi, g)]


@pytest.mark.parametrize("tz_name", ZONES)
@pytest.mark.parametrize("g", list(Granularity))
@pytest.mark.parametrize("short", [True, False])
def test_windows_cut_the_range_on_bucket_boundaries(tz_name, g, short):
    start, end = RANGES[g]
    cut = list(windows(tz_name, start, end, g, min_window_s(g) if short else None))
    assert cut[0][0] == start and cut[-1][1] == end
    assert all(a[1] == b[0] for a, b in zip(cut, cut[1:], strict=False))
    assert len(cut) > (3 if short else 0)
    joined = [b for lo, hi in cut for b in bounds(tz_name, lo, hi, g)]
    if len(joined) <= calendar.MAX_BUCKETS:
        assert joined == bounds(tz_name, start, end, g)
    else:  # consecutive buckets, each a whole one but the range's first and last
        assert all(a[1] == b[0] for a, b in zip(joined, joined[1:], strict=False))
        assert joined[0][0] == start and joined[-1][1] == end
    for lo, hi in cut:
        assert len(bounds(tz_name, lo, hi, g)) <= calendar.MAX_BUCKETS
        assert hi - lo <= (min_window_s(g) if short else WINDOW_S[g]) * US


def test_a_window_shorter_than_three_boundary_buckets_is_refused():
    with pytest.raises(ValueError, match="at least"):
        list(windows("UTC", 0, 100 * DAY_S * US, Granularity.MONTH, 60 * DAY_S))


def test_a_year_of_hours_is_53_windows_and_the_limit_is_arithmetic():
    start, end = us(2025, 1, 1), us(2026, 1, 1)
    assert len(list(windows("UTC", start, end, Granularity.HOUR))) == 53
    assert too_many_buckets(start, end, Granularity.HOUR) is None
    assert too_many_buckets(us(1, 1, 1), us(9999, 1, 1), Granularity.HOUR) is not None
    assert too_many_buckets(start, start + (MAX_EXPORT_BUCKETS + 1) * 3600 * US,
                            Granularity.HOUR) is not None

"""How a range and a granularity are split into cube reads and raw-event pieces
(``gql_usage.analytics.reads``): pure arithmetic, checked against segments written by hand.

Grains: 7 days (604,800 s, from a Thursday 00:00 UTC: 1970-01-01 was one), a UTC day
(86,400 s), a UTC hour (3,600 s), a 15-minute slot (900 s). A spec reads the coarsest
whole units between cut points (bucket and offset boundaries), then finer ones, then raw
events for what is left.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

from gql_usage.analytics.dimensions import Dimension
from gql_usage.analytics.layout import series_layout
from gql_usage.analytics.reads import MAX_RAW_PIECES, Reads, spec_reads
from gql_usage.analytics.specs import GroupSpec, SeriesSpec, Spec, TotalsSpec, UsageQuery
from gql_usage.calendar import Granularity

WEEK, DAY, HOUR, SLOT = 604_800, 86_400, 3_600, 900


def s(*args: int) -> int:
    """Unix seconds of a UTC wall-clock time."""
    return int(datetime(*args, tzinfo=UTC).timestamp())  # type: ignore[misc]


def us(*args: int) -> int:
    return s(*args) * 1_000_000


def reads(start_us: int, end_us: int, spec: Spec, zone: str = "UTC",
          **filters: tuple[int, ...]) -> tuple[Reads, dict[int, int]]:
    query = UsageQuery(account_id=1, start_us=start_us, end_us=end_us, time_zone=zone,
                       **filters)
    layout = (series_layout(query, spec.granularity) if isinstance(spec, SeriesSpec)
              else None)
    return spec_reads(query, spec, layout)


def test_totals_unaligned_range_takes_days_then_hours_then_slots_then_raw():
    got, sets = reads(us(2026, 1, 1, 10, 7, 30), us(2026, 1, 3, 5), TotalsSpec())
    assert got.units == {
        DAY: [(s(2026, 1, 2), s(2026, 1, 3))],
        HOUR: [(s(2026, 1, 1, 11), s(2026, 1, 2)), (s(2026, 1, 3), s(2026, 1, 3, 5))],
        SLOT: [(s(2026, 1, 1, 10, 15), s(2026, 1, 1, 11))],
    }
    assert got.raw_pieces == [(us(2026, 1, 1, 10, 7, 30), us(2026, 1, 1, 10, 15))]
    assert sets == {WEEK: 0, DAY: 0, HOUR: 0, SLOT: 0}  # weeks: none lies inside


def test_long_breakdown_reads_whole_weeks_then_days_then_hours():
    """2026-01-03 10:00 (a Saturday) to 2026-03-10 05:00 by key, nothing cuts it: the
    weeks from Thursday 2026-01-08 to Thursday 2026-03-05 (8 weeks), whole days around
    them, hours at the ends; every grain reads its per-key set."""
    got, sets = reads(us(2026, 1, 3, 10), us(2026, 3, 10, 5), GroupSpec(Dimension.API_KEY))
    assert got.units == {
        WEEK: [(s(2026, 1, 8), s(2026, 3, 5))],
        DAY: [(s(2026, 1, 4), s(2026, 1, 8)), (s(2026, 3, 5), s(2026, 3, 10))],
        HOUR: [(s(2026, 1, 3, 10), s(2026, 1, 4)), (s(2026, 3, 10), s(2026, 3, 10, 5))],
    }
    assert got.raw_pieces == []
    assert sets == {WEEK: 1, DAY: 1, HOUR: 1, SLOT: 1}


def test_breakdown_no_week_set_holds_reads_days():
    """By endpoint for one key needs both dimensions (set 1 | 2): weeks keep single
    dimensions only, so the same range reads days (and its partial days raw)."""
    got, sets = reads(us(2026, 1, 3, 10), us(2026, 3, 10, 5), GroupSpec(Dimension.ENDPOINT),
                      api_key_ids=(7,))
    assert sets == {DAY: 1 | 2}
    assert got.units == {DAY: [(s(2026, 1, 4), s(2026, 3, 10))]}
    assert got.raw_pieces == [(us(2026, 1, 3, 10), us(2026, 1, 4)),
                              (us(2026, 3, 10), us(2026, 3, 10, 5))]


def test_day_series_in_utc_over_two_months_reads_days_not_weeks():
    """Every UTC day is a bucket, so no week unit lies inside one."""
    got, _ = reads(us(2026, 1, 3), us(2026, 3, 10), SeriesSpec(Granularity.DAY))
    assert got.units == {DAY: [(s(2026, 1, 3), s(2026, 3, 10))]}
    assert got.raw_pieces == []


def test_day_series_in_utc_with_ragged_edges():
    """Starts 9 min 50 s before midnight, ends 20 minutes after one: those edges are raw
    (and the whole slot 00:00-00:15 of the last day is a slot)."""
    got, _ = reads(us(2026, 1, 1, 23, 50, 10), us(2026, 1, 3, 0, 20),
                   SeriesSpec(Granularity.DAY))
    assert got.units == {DAY: [(s(2026, 1, 2), s(2026, 1, 3))],
                         SLOT: [(s(2026, 1, 3), s(2026, 1, 3, 0, 15))]}
    assert got.raw_pieces == [(us(2026, 1, 1, 23, 50, 10), us(2026, 1, 2)),
                              (us(2026, 1, 3, 0, 15), us(2026, 1, 3, 0, 20))]


def test_day_series_in_berlin_reads_hours():
    """Berlin's days start at 23:00 UTC in winter: no UTC day lies inside one."""
    got, _ = reads(us(2026, 1, 4, 23), us(2026, 1, 7, 23), SeriesSpec(Granularity.DAY),
                   "Europe/Berlin")
    assert got.units == {HOUR: [(s(2026, 1, 4, 23), s(2026, 1, 7, 23))]}
    assert got.raw_pieces == []


def test_breakdown_over_the_same_range_reads_whole_utc_days():
    """Without buckets nothing cuts the days: whole UTC days in the middle, hours at the
    edges."""
    got, sets = reads(us(2026, 1, 4, 23), us(2026, 1, 7, 23), GroupSpec(Dimension.ENDPOINT),
                      "Europe/Berlin")
    assert got.units == {DAY: [(s(2026, 1, 5), s(2026, 1, 7))],
                         HOUR: [(s(2026, 1, 4, 23), s(2026, 1, 5)),
                                (s(2026, 1, 7), s(2026, 1, 7, 23))]}
    assert got.raw_pieces == []
    assert sets == {WEEK: 2, DAY: 2, HOUR: 2}  # the endpoint set; slots keep none


def test_day_series_across_new_york_spring_forward():
    """2026-03-08: 02:00 EST becomes 03:00 EDT (07:00 UTC). Days start at 05:00 UTC,
    then 04:00 UTC: every piece is whole UTC hours."""
    got, _ = reads(us(2026, 3, 7, 5), us(2026, 3, 10, 4), SeriesSpec(Granularity.DAY),
                   "America/New_York")
    assert got.units == {HOUR: [(s(2026, 3, 7, 5), s(2026, 3, 10, 4))]}
    assert got.raw_pieces == []


def test_hour_series_across_lord_howe_half_hour_dst_end():
    """2026-04-05 02:00 +11:00 (15:00 UTC) becomes 01:30 +10:30: the local hours after
    it start at :30 UTC, so they are read from 15-minute slots."""
    query_start, query_end = us(2026, 4, 4, 13), us(2026, 4, 4, 17, 30)
    query = UsageQuery(account_id=1, start_us=query_start, end_us=query_end,
                       time_zone="Australia/Lord_Howe")
    layout = series_layout(query, Granularity.HOUR)
    assert [(b.start_us, b.end_us) for b in layout.buckets] == [
        (us(2026, 4, 4, 13), us(2026, 4, 4, 14)), (us(2026, 4, 4, 14), us(2026, 4, 4, 15)),
        (us(2026, 4, 4, 15), us(2026, 4, 4, 15, 30)),
        (us(2026, 4, 4, 15, 30), us(2026, 4, 4, 16, 30)),
        (us(2026, 4, 4, 16, 30), us(2026, 4, 4, 17, 30))]
    got, _ = spec_reads(query, SeriesSpec(Granularity.HOUR), layout)
    assert got.units == {HOUR: [(s(2026, 4, 4, 13), s(2026, 4, 4, 15))],
                         SLOT: [(s(2026, 4, 4, 15), s(2026, 4, 4, 17, 30))]}
    assert got.raw_pieces == []


def test_week_series_starting_mid_week():
    """Weeks start on Monday (2026-01-05, 12, 19); the range starts Wednesday noon. The
    7-day cube units start on Thursdays: a Monday cuts each, so none is read."""
    got, _ = reads(us(2026, 1, 7, 12), us(2026, 1, 21), SeriesSpec(Granularity.WEEK))
    assert got.units == {DAY: [(s(2026, 1, 8), s(2026, 1, 21))],
                         HOUR: [(s(2026, 1, 7, 12), s(2026, 1, 8))]}
    assert got.raw_pieces == []


def test_month_series_in_kolkata():
    """+05:30: months start at 18:30 UTC the day before, which cuts a UTC day and a UTC
    hour: each month edge is hours, then two slots, around 18:30. Inside each month, whole
    weeks from a Thursday (2026-01-15 to 29, 2026-02-05 to 26), days around them."""
    got, _ = reads(us(2026, 1, 14, 18, 30), us(2026, 2, 28, 18, 30),
                   SeriesSpec(Granularity.MONTH), "Asia/Kolkata")
    assert got.units == {
        WEEK: [(s(2026, 1, 15), s(2026, 1, 29)), (s(2026, 2, 5), s(2026, 2, 26))],
        DAY: [(s(2026, 1, 29), s(2026, 1, 31)), (s(2026, 2, 1), s(2026, 2, 5)),
              (s(2026, 2, 26), s(2026, 2, 28))],
        HOUR: [(s(2026, 1, 14, 19), s(2026, 1, 15)), (s(2026, 1, 31), s(2026, 1, 31, 18)),
               (s(2026, 1, 31, 19), s(2026, 2, 1)), (s(2026, 2, 28), s(2026, 2, 28, 18))],
        SLOT: [(s(2026, 1, 14, 18, 30), s(2026, 1, 14, 19)),
               (s(2026, 1, 31, 18), s(2026, 1, 31, 19)),
               (s(2026, 2, 28, 18), s(2026, 2, 28, 18, 30))],
    }
    assert got.raw_pieces == []


def test_historical_offset_not_on_a_slot_reads_the_cut_slots_raw():
    """Monrovia was at -00:44:30 in 1970: local midnight is 00:44:30 UTC, inside the slot
    00:30-00:45, which is read from the raw events on both sides of the cut."""
    got, _ = reads(us(1970, 1, 10, 0, 44, 30), us(1970, 1, 12, 0, 44, 30),
                   SeriesSpec(Granularity.DAY), "Africa/Monrovia")
    assert got.units == {
        HOUR: [(s(1970, 1, 10, 1), s(1970, 1, 11)), (s(1970, 1, 11, 1), s(1970, 1, 12))],
        SLOT: [(s(1970, 1, 10, 0, 45), s(1970, 1, 10, 1)),
               (s(1970, 1, 11), s(1970, 1, 11, 0, 30)),
               (s(1970, 1, 11, 0, 45), s(1970, 1, 11, 1)),
               (s(1970, 1, 12), s(1970, 1, 12, 0, 30))],
    }
    assert got.raw_pieces == [
        (us(1970, 1, 10, 0, 44, 30), us(1970, 1, 10, 0, 45)),
        (us(1970, 1, 11, 0, 30), us(1970, 1, 11, 0, 45)),
        (us(1970, 1, 12, 0, 30), us(1970, 1, 12, 0, 44, 30))]


def test_too_many_raw_pieces_read_the_whole_range_raw():
    """70 Monrovia hours, each cut at :44:30, would be 71 raw pieces: past
    MAX_RAW_PIECES the range is one raw piece; 10 hours keep their 11."""
    start = us(1970, 1, 10, 0, 44, 30)
    got, _ = reads(start, start + 70 * HOUR * 1_000_000, SeriesSpec(Granularity.HOUR),
                   "Africa/Monrovia")
    assert 71 > MAX_RAW_PIECES
    assert got == Reads({}, [(start, start + 70 * HOUR * 1_000_000)])
    got, _ = reads(start, start + 10 * HOUR * 1_000_000, SeriesSpec(Granularity.HOUR),
                   "Africa/Monrovia")
    assert len(got.raw_pieces) == 11
    assert got.units[SLOT][0] == (s(1970, 1, 10, 0, 45), s(1970, 1, 10, 1, 30))


def test_filters_no_fine_set_holds_read_only_days_and_raw_edges():
    """A per-key breakdown filtered by user needs the key and user dimensions: only the
    day grain keeps that set (1 | 8), so partial days are raw."""
    got, sets = reads(us(2026, 1, 1, 6), us(2026, 1, 4, 6), GroupSpec(Dimension.API_KEY),
                      user_ids=(5,))
    assert sets == {DAY: 1 | 8}
    assert got.units == {DAY: [(s(2026, 1, 2), s(2026, 1, 4))]}
    assert got.raw_pieces == [(us(2026, 1, 1, 6), us(2026, 1, 2)),
                              (us(2026, 1, 4), us(2026, 1, 4, 6))]


def test_pieces_cover_the_range_exactly_once():
    """Whatever the split, cube units and raw pieces tile [from, to) without overlap."""
    for zone, granularity in (("Asia/Kathmandu", Granularity.HOUR),
                              ("Europe/Berlin", Granularity.WEEK),
                              ("Pacific/Chatham", Granularity.DAY)):
        start, end = us(2026, 3, 27, 7, 3, 1), us(2026, 4, 9, 11, 59)
        got, _ = reads(start, end, SeriesSpec(granularity), zone)
        pieces = sorted([(lo * 1_000_000, hi * 1_000_000)
                         for ranges in got.units.values() for lo, hi in ranges]
                        + got.raw_pieces)
        assert pieces[0][0] == start and pieces[-1][1] == end
        assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:], strict=False))


def test_random_ranges_tile_with_aligned_units_that_no_bucket_edge_cuts():
    """300 random ranges (seeded), zones with DST, half- and quarter-hour offsets, every
    granularity, asked twice (the second time the intervals between bucket edges are
    remembered): the same reads; units aligned to their grain; no bucket or offset edge
    strictly inside a unit; units and raw pieces tile [from, to) exactly."""
    rng = random.Random(14)
    zones = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Kathmandu",
             "Australia/Lord_Howe", "Pacific/Chatham")
    base = us(2026, 1, 1)
    for _ in range(300):
        zone = rng.choice(zones)
        granularity = rng.choice(list(Granularity))
        span = rng.choice((3_600, 86_400, 30 * 86_400, 200 * 86_400))
        start = base + rng.randrange(400 * 86_400) * 1_000_000 + rng.randrange(1_000_000)
        end = start + rng.randrange(1, span) * 1_000_000 + rng.randrange(1_000_000)
        if granularity is Granularity.HOUR and end - start > 80 * 86_400 * 1_000_000:
            continue  # past 2,000 buckets
        spec = SeriesSpec(granularity)
        got, _ = reads(start, end, spec, zone)
        assert reads(start, end, spec, zone)[0] == got
        query = UsageQuery(account_id=1, start_us=start, end_us=end, time_zone=zone)
        edges = series_layout(query, granularity).cut_points()
        for grain, ranges in got.units.items():
            for lo, hi in ranges:
                assert lo % grain == 0 and hi % grain == 0 and lo < hi
                assert not [e for e in edges if lo * 1_000_000 < e < hi * 1_000_000
                            and e % (grain * 1_000_000)]
        pieces = sorted([(lo * 1_000_000, hi * 1_000_000)
                         for ranges in got.units.values() for lo, hi in ranges]
                        + got.raw_pieces)
        assert pieces[0][0] == start and pieces[-1][1] == end
        assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:], strict=False))

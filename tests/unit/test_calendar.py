"""``gql_usage/calendar.py`` directly: bucket starts, ends and keys for HOUR/DAY/WEEK/MONTH
in UTC and in zones with DST and odd offsets, offset segments across transitions, and the
year 1 / 9999 edges. Every expected instant is written by hand (as UTC text) from the
zone's published rules; ``us`` only turns that text into microseconds."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from gql_usage import calendar
from gql_usage.calendar import (
    US,
    Bucket,
    Granularity,
    Segment,
    TooManyBuckets,
    buckets,
    min_buckets,
    offset_segments,
    representable,
    zone,
)

HOUR, DAY, WEEK, MONTH = Granularity.HOUR, Granularity.DAY, Granularity.WEEK, Granularity.MONTH
UTC_ZONE = ZoneInfo("UTC")
NEW_YORK = ZoneInfo("America/New_York")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")
KATHMANDU = ZoneInfo("Asia/Kathmandu")
#: Days from 1970-01-01 to 2026-01-01: 56 years of 365 days and 14 leap days (1972-2024).
D2026 = 56 * 365 + 14
#: Microseconds from 0001-01-01T00:00Z to the epoch: 719,162 days.
YEAR_1_US = -719_162 * 86_400 * 10**6
#: Days from 1970-01-01 to 9999-12-31: 3,652,059 (date.max's ordinal) less 719,163.
D9999_12_31 = 2_932_896
#: The last representable microsecond, 9999-12-31T23:59:59.999999Z.
YEAR_9999_END_US = (D9999_12_31 + 1) * 86_400 * 10**6 - 1


def us(text: str) -> int:
    """A UTC timestamp written as ISO text, in microseconds since the epoch."""
    t = datetime.fromisoformat(text)
    assert t.utcoffset() is not None and t.utcoffset().total_seconds() == 0, text
    return int(t.replace(microsecond=0).timestamp()) * 10**6 + t.microsecond


def s(text: str) -> int:
    return us(text) // 10**6


def spans(found: list[Bucket]) -> list[tuple[int, int]]:
    return [(b.start_us, b.end_us) for b in found]


def test_the_hand_written_constants() -> None:
    assert us("1970-01-01T00:00:00+00:00") == 0
    assert us("2026-01-01T00:00:00+00:00") == D2026 * 86_400 * 10**6
    assert YEAR_1_US == us("0001-01-01T00:00:00+00:00")
    assert YEAR_9999_END_US == us("9999-12-31T23:59:59.999999+00:00")


# --- UTC ----------------------------------------------------------------------------------


def test_utc_days_are_clipped_to_the_range_and_keyed_by_day_number() -> None:
    found = buckets(UTC_ZONE, us("2026-01-05T10:30:00+00:00"), us("2026-01-07T06:00:00+00:00"),
                    DAY)
    assert spans(found) == [
        (us("2026-01-05T10:30:00+00:00"), us("2026-01-06T00:00:00+00:00")),
        (us("2026-01-06T00:00:00+00:00"), us("2026-01-07T00:00:00+00:00")),
        (us("2026-01-07T00:00:00+00:00"), us("2026-01-07T06:00:00+00:00"))]
    assert [b.key for b in found] == [D2026 + 4, D2026 + 5, D2026 + 6]


def test_utc_hours_key_by_hour_number_and_segment() -> None:
    found = buckets(UTC_ZONE, us("2026-01-01T22:15:00+00:00"), us("2026-01-02T01:00:00+00:00"),
                    HOUR)
    assert spans(found) == [
        (us("2026-01-01T22:15:00+00:00"), us("2026-01-01T23:00:00+00:00")),
        (us("2026-01-01T23:00:00+00:00"), us("2026-01-02T00:00:00+00:00")),
        (us("2026-01-02T00:00:00+00:00"), us("2026-01-02T01:00:00+00:00"))]
    first_hour = D2026 * 24 + 22
    assert [b.key for b in found] == [first_hour * 1024, (first_hour + 1) * 1024,
                                      (first_hour + 2) * 1024]


def test_utc_weeks_start_on_monday_and_months_on_the_first() -> None:
    # 2026-01-01 is a Thursday: its week began on Monday 2025-12-29.
    weeks = buckets(UTC_ZONE, us("2026-01-01T00:00:00+00:00"), us("2026-01-13T00:00:00+00:00"),
                    WEEK)
    assert spans(weeks) == [
        (us("2026-01-01T00:00:00+00:00"), us("2026-01-05T00:00:00+00:00")),
        (us("2026-01-05T00:00:00+00:00"), us("2026-01-12T00:00:00+00:00")),
        (us("2026-01-12T00:00:00+00:00"), us("2026-01-13T00:00:00+00:00"))]
    assert [b.key for b in weeks] == [D2026 - 3, D2026 + 4, D2026 + 11]
    months = buckets(UTC_ZONE, us("2026-01-31T12:00:00+00:00"), us("2026-03-02T00:00:00+00:00"),
                     MONTH)
    assert spans(months) == [
        (us("2026-01-31T12:00:00+00:00"), us("2026-02-01T00:00:00+00:00")),
        (us("2026-02-01T00:00:00+00:00"), us("2026-03-01T00:00:00+00:00")),
        (us("2026-03-01T00:00:00+00:00"), us("2026-03-02T00:00:00+00:00"))]
    assert [b.key for b in months] == [D2026, D2026 + 31, D2026 + 59]


def test_an_empty_range_has_no_bucket() -> None:
    t = us("2026-01-01T00:00:00+00:00")
    for granularity in Granularity:
        assert buckets(NEW_YORK, t, t, granularity) == []


# --- America/New_York: DST from 2026-03-08 02:00 EST to 2026-11-01 02:00 EDT --------------


def test_new_york_spring_forward_day_is_23_hours_and_fall_back_day_25() -> None:
    spring = buckets(NEW_YORK, us("2026-03-08T05:00:00+00:00"), us("2026-03-10T04:00:00+00:00"),
                     DAY)
    assert spans(spring) == [
        (us("2026-03-08T05:00:00+00:00"), us("2026-03-09T04:00:00+00:00")),  # 23 h
        (us("2026-03-09T04:00:00+00:00"), us("2026-03-10T04:00:00+00:00"))]
    assert [b.key for b in spring] == [D2026 + 66, D2026 + 67]
    fall = buckets(NEW_YORK, us("2026-11-01T04:00:00+00:00"), us("2026-11-03T05:00:00+00:00"),
                   DAY)
    assert spans(fall) == [
        (us("2026-11-01T04:00:00+00:00"), us("2026-11-02T05:00:00+00:00")),  # 25 h
        (us("2026-11-02T05:00:00+00:00"), us("2026-11-03T05:00:00+00:00"))]
    assert [b.key for b in fall] == [D2026 + 304, D2026 + 305]


def test_new_york_hours_skip_two_oclock_in_march_and_repeat_one_oclock_in_november() -> None:
    spring = buckets(NEW_YORK, us("2026-03-08T06:00:00+00:00"), us("2026-03-08T08:00:00+00:00"),
                     HOUR)
    # 01:00 EST, then 03:00 EDT: the local hour 02:00 does not exist.
    assert spans(spring) == [
        (us("2026-03-08T06:00:00+00:00"), us("2026-03-08T07:00:00+00:00")),
        (us("2026-03-08T07:00:00+00:00"), us("2026-03-08T08:00:00+00:00"))]
    local_day = (D2026 + 66) * 24
    assert [b.key for b in spring] == [(local_day + 1) * 1024 + 0, (local_day + 3) * 1024 + 1]
    fall = buckets(NEW_YORK, us("2026-11-01T05:00:00+00:00"), us("2026-11-01T07:00:00+00:00"),
                   HOUR)
    # 01:00 EDT and 01:00 EST: the same local hour twice, told apart by the segment.
    assert spans(fall) == [
        (us("2026-11-01T05:00:00+00:00"), us("2026-11-01T06:00:00+00:00")),
        (us("2026-11-01T06:00:00+00:00"), us("2026-11-01T07:00:00+00:00"))]
    local_day = (D2026 + 304) * 24
    assert [b.key for b in fall] == [(local_day + 1) * 1024 + 0, (local_day + 1) * 1024 + 1]


def test_new_york_week_and_month_across_the_transitions() -> None:
    # Sunday 2026-03-08 belongs to the week of Monday 2026-03-02 (EST) ending Monday
    # 2026-03-09 (EDT): 7 days less an hour.
    week = buckets(NEW_YORK, us("2026-03-02T05:00:00+00:00"), us("2026-03-09T04:00:00+00:00"),
                   WEEK)
    assert spans(week) == [(us("2026-03-02T05:00:00+00:00"), us("2026-03-09T04:00:00+00:00"))]
    assert week[0].key == D2026 + 60
    months = buckets(NEW_YORK, us("2026-03-01T05:00:00+00:00"), us("2026-12-01T05:00:00+00:00"),
                     MONTH)
    assert spans(months)[0] == (us("2026-03-01T05:00:00+00:00"), us("2026-04-01T04:00:00+00:00"))
    assert spans(months)[-1] == (us("2026-11-01T04:00:00+00:00"),
                                 us("2026-12-01T05:00:00+00:00"))
    assert len(months) == 9
    assert [b.key for b in months][:2] == [D2026 + 59, D2026 + 90]


def test_new_york_offset_segments_over_2026() -> None:
    segments = offset_segments(NEW_YORK, us("2026-01-01T00:00:00+00:00"),
                               us("2027-01-01T00:00:00+00:00"))
    assert segments == [
        Segment(s("2026-01-01T00:00:00+00:00"), s("2026-03-08T07:00:00+00:00"), -5 * 3600),
        Segment(s("2026-03-08T07:00:00+00:00"), s("2026-11-01T06:00:00+00:00"), -4 * 3600),
        Segment(s("2026-11-01T06:00:00+00:00"), s("2027-01-01T00:00:00+00:00"), -5 * 3600)]


def test_a_range_inside_one_offset_is_one_segment() -> None:
    assert offset_segments(NEW_YORK, us("2026-06-01T00:00:00+00:00"),
                           us("2026-06-01T00:00:00.500000+00:00")) == [
        Segment(s("2026-06-01T00:00:00+00:00"), s("2026-06-01T00:00:01+00:00"), -4 * 3600)]


# --- Australia/Lord_Howe: +11 (DST) to +10:30 on 2026-04-05 02:00 local -----------------


def test_lord_howe_half_hour_dst_end() -> None:
    segments = offset_segments(LORD_HOWE, us("2026-04-04T12:00:00+00:00"),
                               us("2026-04-04T18:00:00+00:00"))
    assert segments == [
        Segment(s("2026-04-04T12:00:00+00:00"), s("2026-04-04T15:00:00+00:00"), 11 * 3600),
        Segment(s("2026-04-04T15:00:00+00:00"), s("2026-04-04T18:00:00+00:00"), 37_800)]
    hours = buckets(LORD_HOWE, us("2026-04-04T14:00:00+00:00"), us("2026-04-04T16:00:00+00:00"),
                    HOUR)
    # 01:00-02:00 at +11, then 01:30-02:00 again at +10:30, then 02:00-02:30.
    assert spans(hours) == [
        (us("2026-04-04T14:00:00+00:00"), us("2026-04-04T15:00:00+00:00")),
        (us("2026-04-04T15:00:00+00:00"), us("2026-04-04T15:30:00+00:00")),
        (us("2026-04-04T15:30:00+00:00"), us("2026-04-04T16:00:00+00:00"))]
    local_day = (D2026 + 94) * 24  # 2026-04-05
    assert [b.key for b in hours] == [(local_day + 1) * 1024 + 0, (local_day + 1) * 1024 + 1,
                                      (local_day + 2) * 1024 + 1]
    day = buckets(LORD_HOWE, us("2026-04-04T13:00:00+00:00"), us("2026-04-05T13:30:00+00:00"),
                  DAY)
    assert spans(day) == [(us("2026-04-04T13:00:00+00:00"),
                           us("2026-04-05T13:30:00+00:00"))]  # 24 h 30 min
    assert day[0].key == D2026 + 94


# --- Asia/Kathmandu: +5:45 (since 1986; +5:30 before) -------------------------------------


def test_kathmandu_quarter_hour_offset() -> None:
    day = buckets(KATHMANDU, us("2026-01-04T18:15:00+00:00"), us("2026-01-06T18:15:00+00:00"),
                  DAY)
    assert spans(day) == [
        (us("2026-01-04T18:15:00+00:00"), us("2026-01-05T18:15:00+00:00")),
        (us("2026-01-05T18:15:00+00:00"), us("2026-01-06T18:15:00+00:00"))]
    assert [b.key for b in day] == [D2026 + 4, D2026 + 5]
    hours = buckets(KATHMANDU, us("2026-01-05T00:00:00+00:00"), us("2026-01-05T01:00:00+00:00"),
                    HOUR)
    # 05:45 local: the hour 05:00 ends at 00:15 UTC, 06:00 runs on past the range.
    assert spans(hours) == [
        (us("2026-01-05T00:00:00+00:00"), us("2026-01-05T00:15:00+00:00")),
        (us("2026-01-05T00:15:00+00:00"), us("2026-01-05T01:00:00+00:00"))]
    local_day = (D2026 + 4) * 24
    assert [b.key for b in hours] == [(local_day + 5) * 1024, (local_day + 6) * 1024]


def test_kathmandu_moved_from_530_to_545_at_the_start_of_1986() -> None:
    segments = offset_segments(KATHMANDU, us("1985-12-31T00:00:00+00:00"),
                               us("1986-01-01T00:00:00+00:00"))
    assert segments == [
        Segment(s("1985-12-31T00:00:00+00:00"), s("1985-12-31T18:30:00+00:00"), 19_800),
        Segment(s("1985-12-31T18:30:00+00:00"), s("1986-01-01T00:00:00+00:00"), 20_700)]


# --- the year 1 and year 9999 edges --------------------------------------------------------


def test_representable_at_the_first_and_last_microsecond() -> None:
    assert representable(YEAR_1_US, UTC_ZONE)
    assert not representable(YEAR_1_US - 1, UTC_ZONE)
    assert representable(YEAR_9999_END_US, UTC_ZONE)
    assert not representable(YEAR_9999_END_US + 1, UTC_ZONE)


def test_representable_in_a_zone_behind_and_ahead_of_utc() -> None:
    # New York before 1883 is local mean time, -4:56:02: 0001-01-01T00:00Z is a local
    # time in the year 0; local 0001-01-01T00:00 is 04:56:02 UTC.
    lmt_s = 4 * 3600 + 56 * 60 + 2
    assert not representable(YEAR_1_US, NEW_YORK)
    assert not representable(YEAR_1_US + (lmt_s - 1) * 10**6, NEW_YORK)
    assert representable(YEAR_1_US + lmt_s * 10**6, NEW_YORK)
    # Kathmandu at +5:45: 9999-12-31T18:15Z is already local year 10000.
    assert representable(us("9999-12-31T18:14:59.999999+00:00"), KATHMANDU)
    assert not representable(us("9999-12-31T18:15:00+00:00"), KATHMANDU)
    assert representable(us("9999-12-31T18:15:00+00:00"), UTC_ZONE)


def test_buckets_at_the_first_days_of_year_1() -> None:
    days = buckets(UTC_ZONE, YEAR_1_US, YEAR_1_US + 2 * 86_400 * 10**6, DAY)
    assert spans(days) == [(YEAR_1_US, YEAR_1_US + 86_400 * 10**6),
                           (YEAR_1_US + 86_400 * 10**6, YEAR_1_US + 2 * 86_400 * 10**6)]
    assert [b.key for b in days] == [-719_162, -719_161]


@pytest.mark.parametrize("granularity", [DAY, WEEK, MONTH])
def test_the_last_bucket_of_9999_ends_at_the_range_end(granularity: Granularity) -> None:
    start, end = us("9999-12-31T00:00:00+00:00"), YEAR_9999_END_US + 1
    found = buckets(UTC_ZONE, start, end, granularity)
    assert spans(found) == [(start, end)]
    # The bucket's first day: 9999-12-31 (a Friday) itself, Monday 9999-12-27, 9999-12-01.
    first_day = {DAY: D9999_12_31, WEEK: D9999_12_31 - 4, MONTH: D9999_12_31 - 30}[granularity]
    assert found[0].key == first_day


# --- the bucket limit ------------------------------------------------------------------------


def test_min_buckets_by_arithmetic() -> None:
    start = us("2026-01-01T00:00:00+00:00")
    hour_us = 3600 * 10**6
    assert min_buckets(start, start + 24 * hour_us, HOUR) == 24
    assert min_buckets(start, start + 24 * hour_us + 10**6, HOUR) == 25
    # Whole seconds only: a bound from below, 24 for what is really 25 buckets.
    assert min_buckets(start, start + 24 * hour_us + 1, HOUR) == 24
    assert min_buckets(start, start + 10 * 24 * hour_us, DAY) == 6  # less 4 days of slack
    assert min_buckets(start, start + 3 * 24 * hour_us, DAY) == 0
    assert min_buckets(start, start - hour_us, HOUR) == 0


def test_more_than_2000_buckets_are_refused() -> None:
    start = us("2026-01-01T00:00:00+00:00")
    assert len(buckets(UTC_ZONE, start, start + 2000 * 3600 * 10**6, HOUR)) == 2000
    with pytest.raises(TooManyBuckets, match="more than 2,000 HOUR buckets"):
        buckets(UTC_ZONE, start, start + 2001 * 3600 * 10**6, HOUR)
    with pytest.raises(TooManyBuckets, match="more than 2,000 DAY buckets"):
        buckets(UTC_ZONE, start, start + 2001 * 86_400 * 10**6, DAY)


@pytest.mark.parametrize("name", ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe",
                                  "Pacific/Apia", "Asia/Kathmandu", "UTC"])
def test_kept_block_segments_equal_a_scan_of_the_range_itself(name: str) -> None:
    """``offset_segments`` joins the kept segments of 48-day UTC blocks: over ranges
    that start and end anywhere (within a block, across many, at a block's edge), the
    result is the scan of that range alone, with each offset change to the second, and
    no two neighbours share an offset."""
    tz = zone(name)
    block_s = calendar._BLOCK_S
    base = (1_300_000_000 // block_s) * block_s  # 2011, Apia's skipped day among them
    starts = [base, base + 1, base + block_s - 1, base + 37 * 86_400 + 12_345]
    lengths = [1, 3_600, block_s, block_s + 1, 3 * block_s + 7, 400 * 86_400 + 7]
    for start_s in starts:
        for length in lengths:
            lo, hi = start_s * US + 250_000, (start_s + length) * US
            got = calendar.offset_segments(tz, lo, hi)
            assert got == calendar._scan_segments(tz, lo // US, -(-hi // US))
            assert all(a.end_s == b.start_s and a.offset_s != b.offset_s
                       for a, b in zip(got, got[1:], strict=False))


def test_bucket_edges_write_the_zone_offset_text_written_by_hand() -> None:
    """``bucket_edge`` keeps each edge's text: New York's repeated 01:00 on 2026-11-01
    is written with each of its two offsets, Kathmandu's with +05:45, a fraction of a
    second with its microseconds; the same instant twice is one remembered object."""
    cases = [
        (us("2026-11-01T05:00:00Z"), NEW_YORK, "2026-11-01T01:00:00-04:00"),
        (us("2026-11-01T06:00:00Z"), NEW_YORK, "2026-11-01T01:00:00-05:00"),
        (us("2026-03-08T07:00:00Z"), NEW_YORK, "2026-03-08T03:00:00-04:00"),
        (us("2026-01-01T00:00:00Z"), KATHMANDU, "2026-01-01T05:45:00+05:45"),
        (us("2026-01-01T00:00:00Z") + 250_001, UTC_ZONE, "2026-01-01T00:00:00.250001+00:00"),
    ]
    for value, tz, text in cases:
        edge = calendar.bucket_edge(value, tz)
        assert edge.isoformat() == text
        assert edge == calendar.from_us(value, tz) and edge.fold == calendar.from_us(value, tz).fold
        assert calendar.bucket_edge(value, tz) is edge
    repeated = calendar.bucket_edge(us("2026-11-01T06:00:00Z"), NEW_YORK)
    assert repeated.isoformat(" ") == "2026-11-01 01:00:00-05:00"
    assert repeated.isoformat(timespec="hours") == "2026-11-01T01-05:00"


def test_a_datetime_made_from_a_bucket_edge_writes_its_own_time() -> None:
    """Arithmetic and ``replace`` may return the subclass, without the edge's text."""
    edge = calendar.bucket_edge(us("2026-11-01T04:00:00Z"), NEW_YORK)  # 00:00-04:00
    assert (edge + timedelta(hours=2)).isoformat() == "2026-11-01T02:00:00-05:00"
    assert edge.replace(hour=3).isoformat() == "2026-11-01T03:00:00-05:00"
    assert (edge - timedelta(days=1)).isoformat() == "2026-10-31T00:00:00-04:00"

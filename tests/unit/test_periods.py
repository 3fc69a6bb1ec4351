"""``gql_usage/analytics/periods.py`` directly: the period before a range, by calendar
months when both ends begin a month in the zone, else by the range's length. Every
expected instant is written by hand (as UTC text) from the zone's published rules."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from gql_usage.analytics.periods import NoPreviousPeriod, month_start_us, previous_period
from gql_usage.calendar import Granularity, buckets

UTC_ZONE = ZoneInfo("UTC")
NEW_YORK = ZoneInfo("America/New_York")
KOLKATA = ZoneInfo("Asia/Kolkata")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")
ASUNCION = ZoneInfo("America/Asuncion")


def us(text: str) -> int:
    """A UTC timestamp written as ISO text, in microseconds since the epoch."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert value.utcoffset() is not None
    return round((value - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()) * 10**6 \
        + value.microsecond


def prev(start: str, end: str, tz: ZoneInfo) -> tuple[str, str]:
    lo, hi = previous_period(us(start), us(end), tz)
    assert hi == us(start)  # always ends at `from`
    as_text = datetime.fromtimestamp(lo // 10**6, UTC).replace(microsecond=lo % 10**6)
    return as_text.isoformat().replace("+00:00", "Z"), start


@pytest.mark.parametrize(("start", "end", "expected"), [
    # March -> February (28 days), one month of 31 days back to one of 28.
    ("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z", "2026-02-01T00:00:00Z"),
    # February -> January.
    ("2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z", "2026-01-01T00:00:00Z"),
    # January -> December of the year before.
    ("2027-01-01T00:00:00Z", "2027-02-01T00:00:00Z", "2026-12-01T00:00:00Z"),
    # January..March -> October..December of the year before.
    ("2026-01-01T00:00:00Z", "2026-04-01T00:00:00Z", "2025-10-01T00:00:00Z"),
    # 14 months back across two year ends.
    ("2026-02-01T00:00:00Z", "2027-04-01T00:00:00Z", "2024-12-01T00:00:00Z"),
    # A whole year back: 2024 (366 days) before 2025 (365 days).
    ("2025-01-01T00:00:00Z", "2026-01-01T00:00:00Z", "2024-01-01T00:00:00Z"),
])
def test_month_aligned_ranges_in_utc_go_back_whole_months(start, end, expected):
    assert prev(start, end, UTC_ZONE) == (expected, start)


def test_leap_february_is_the_month_before_march():
    assert prev("2024-03-01T00:00:00Z", "2024-04-01T00:00:00Z", UTC_ZONE) == \
        ("2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z")
    # March..April 2024 (61 days) -> January..February 2024 (60 days, leap).
    assert prev("2024-03-01T00:00:00Z", "2024-05-01T00:00:00Z", UTC_ZONE) == \
        ("2024-01-01T00:00:00Z", "2024-03-01T00:00:00Z")
    # Not aligned: the same length, 29 leap days of February 2024 back from 2024-03-01.
    assert prev("2024-03-01T00:00:00Z", "2024-03-30T00:00:00Z", UTC_ZONE) == \
        ("2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z")


def test_new_york_months_follow_local_midnights_across_dst():
    # March 2026 in New York: 05:00Z (EST) to 04:00Z (EDT, from 8 March); February is
    # EST throughout.
    assert prev("2026-03-01T05:00:00Z", "2026-04-01T04:00:00Z", NEW_YORK) == \
        ("2026-02-01T05:00:00Z", "2026-03-01T05:00:00Z")
    # November 2026 (EST from 1 November, 02:00 local) -> October (EDT).
    assert prev("2026-11-01T04:00:00Z", "2026-12-01T05:00:00Z", NEW_YORK) == \
        ("2026-10-01T04:00:00Z", "2026-11-01T04:00:00Z")
    # April..June 2026 -> January..March 2026 (EST at the start).
    assert prev("2026-04-01T04:00:00Z", "2026-07-01T04:00:00Z", NEW_YORK) == \
        ("2026-01-01T05:00:00Z", "2026-04-01T04:00:00Z")


def test_utc_month_starts_are_not_month_starts_in_new_york():
    # 2026-03-01T00:00Z is 28 February 19:00 in New York: a plain 31-day range.
    assert prev("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z", NEW_YORK) == \
        ("2026-01-29T00:00:00Z", "2026-03-01T00:00:00Z")


def test_kolkata_months_begin_at_18_30_utc():
    # April 2026 in Kolkata (+05:30) -> March.
    assert prev("2026-03-31T18:30:00Z", "2026-04-30T18:30:00Z", KOLKATA) == \
        ("2026-02-28T18:30:00Z", "2026-03-31T18:30:00Z")
    # March 2024 (leap) -> February 2024: 29 days.
    assert prev("2024-02-29T18:30:00Z", "2024-03-31T18:30:00Z", KOLKATA) == \
        ("2024-01-31T18:30:00Z", "2024-02-29T18:30:00Z")


def test_lord_howe_half_hour_dst():
    # April 2026 on Lord Howe: +11 (DST) on the 1st, +10:30 from 5 April -> March (+11).
    assert prev("2026-03-31T13:00:00Z", "2026-04-30T13:30:00Z", LORD_HOWE) == \
        ("2026-02-28T13:00:00Z", "2026-03-31T13:00:00Z")
    # Not aligned there: the same length (30 days 30 minutes) back.
    assert prev("2026-04-01T00:00:00Z", "2026-05-01T00:30:00Z", LORD_HOWE) == \
        ("2026-03-01T23:30:00Z", "2026-04-01T00:00:00Z")


def test_a_month_whose_midnight_is_skipped_begins_at_the_change():
    # Paraguay began DST at 00:00 on 1 October 2023 (to 01:00, -04 -> -03): October
    # began at 04:00Z; November at 03:00Z (-03); September at 04:00Z (-04).
    assert month_start_us(ASUNCION, 2023, 10) == us("2023-10-01T04:00:00Z")
    assert prev("2023-10-01T04:00:00Z", "2023-11-01T03:00:00Z", ASUNCION) == \
        ("2023-09-01T04:00:00Z", "2023-10-01T04:00:00Z")


@pytest.mark.parametrize("tz", [UTC_ZONE, NEW_YORK, KOLKATA, LORD_HOWE, ASUNCION])
def test_month_aligned_previous_period_is_whole_month_buckets(tz):
    """The previous period of N months is exactly N MONTH buckets of the calendar."""
    for first_month in range(1, 13):
        for months in (1, 2, 3, 7, 12, 13):
            start = month_start_us(tz, 2024, first_month)
            index = 2024 * 12 + first_month - 1 + months
            end = month_start_us(tz, index // 12, index % 12 + 1)
            lo, hi = previous_period(start, end, tz)
            got = buckets(tz, lo, hi, Granularity.MONTH)
            assert len(got) == months
            assert all(b.start_us == month_start_us(tz, *_ym(b.key)) for b in got)


def _ym(day_number: int) -> tuple[int, int]:
    d = datetime.fromtimestamp(day_number * 86400, UTC)
    return d.year, d.month


@pytest.mark.parametrize(("start", "end", "expected"), [
    # Half a month: 14 days 12 hours back.
    ("2026-03-01T00:00:00Z", "2026-03-15T12:00:00Z", "2026-02-14T12:00:00Z"),
    # Aligned at `from` only: 31 days 1 hour back.
    ("2026-03-01T00:00:00Z", "2026-04-01T01:00:00Z", "2026-01-28T23:00:00Z"),
    # Aligned at `to` only: 31 days 1 hour back.
    ("2026-02-28T23:00:00Z", "2026-04-01T00:00:00Z", "2026-01-28T22:00:00Z"),
    # One microsecond past a month start is not a month start.
    ("2026-03-01T00:00:00.000001Z", "2026-04-01T00:00:00Z", "2026-01-29T00:00:00.000002Z"),
    # The 1st, but not midnight.
    ("2026-03-01T06:00:00Z", "2026-04-01T06:00:00Z", "2026-01-29T06:00:00Z"),
    # Seven days.
    ("2026-03-05T00:00:00Z", "2026-03-12T00:00:00Z", "2026-02-26T00:00:00Z"),
    # One microsecond.
    ("2026-03-05T00:00:00Z", "2026-03-05T00:00:00.000001Z", "2026-03-04T23:59:59.999999Z"),
])
def test_other_ranges_go_back_their_own_length(start, end, expected):
    assert prev(start, end, UTC_ZONE) == (expected, start)


def test_dst_changes_do_not_stretch_a_fixed_length_range():
    # 7 days of New York local midnights across the March change (167 hours) -> 167 hours.
    assert prev("2026-03-06T05:00:00Z", "2026-03-13T04:00:00Z", NEW_YORK) == \
        ("2026-02-27T06:00:00Z", "2026-03-06T05:00:00Z")


def test_year_one_edges():
    # February of year 1 -> January of year 1.
    assert prev("0001-02-01T00:00:00Z", "0001-03-01T00:00:00Z", UTC_ZONE) == \
        ("0001-01-01T00:00:00Z", "0001-02-01T00:00:00Z")
    with pytest.raises(NoPreviousPeriod, match="before the year 1"):
        previous_period(us("0001-01-01T00:00:00Z"), us("0001-02-01T00:00:00Z"), UTC_ZONE)
    with pytest.raises(NoPreviousPeriod):
        previous_period(us("0001-01-02T00:00:00Z"), us("0001-01-04T00:00:00Z"), UTC_ZONE)
    # Kolkata kept its local mean time (+05:53:28) then: January of year 1 began at
    # 0000-12-31T18:06:32Z, before year 1 in UTC, so February has no previous month.
    assert month_start_us(KOLKATA, 1, 2) == us("0001-01-31T18:06:32Z")
    with pytest.raises(NoPreviousPeriod, match="Asia/Kolkata"):
        previous_period(us("0001-01-31T18:06:32Z"), us("0001-02-28T18:06:32Z"), KOLKATA)


def test_an_empty_range_has_no_previous_period():
    with pytest.raises(ValueError, match="empty range"):
        previous_period(us("2026-03-01T00:00:00Z"), us("2026-03-01T00:00:00Z"), UTC_ZONE)

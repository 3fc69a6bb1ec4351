"""The period just before a report's range (``UsageReport.previous``, SPEC 6.2): pure
arithmetic on UTC microseconds in the filter's time zone, no database.

A range whose ``from`` and ``to`` both begin a month in the zone (00:00 local on the 1st,
as the MONTH buckets of ``gql_usage.calendar`` begin) is followed by calendar months: its
previous period is the same number of months ending at ``from`` (March -> February,
January..March -> October..December), whatever their lengths in days or hours (DST).
Any other range is followed by its length: ``[from - (to - from), from)``.
"""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

from gql_usage import calendar


class NoPreviousPeriod(ValueError):
    """The previous period would begin before year 1 (in UTC or in the zone)."""


def month_start_us(tz: ZoneInfo, year: int, month: int) -> int:
    """When the month begins in ``tz``: local midnight on the 1st, or, when a change of
    offset skips that midnight, the instant of the change (as the MONTH buckets do)."""
    return calendar.to_us(datetime(year, month, 1, tzinfo=tz))


def _month_of(tz: ZoneInfo, instant_us: int) -> tuple[int, int] | None:
    """(year, month) when ``instant_us`` is the beginning of a month in ``tz``."""
    local = calendar.from_us(instant_us, tz)
    # A month begins at local 00:00 on the 1st, or up to a few hours later on the 1st
    # when an offset change skips that midnight; the local date is the 1st either way.
    if local.day != 1:
        return None
    if month_start_us(tz, local.year, local.month) != instant_us:
        return None
    return local.year, local.month


def months_between(start: tuple[int, int], end: tuple[int, int]) -> int:
    """Whole months from the month ``start`` to the month ``end``, as (year, month)."""
    return (end[0] - start[0]) * 12 + end[1] - start[1]


def previous_period(start_us: int, end_us: int, tz: ZoneInfo) -> tuple[int, int]:
    """``[start, end)`` of the period just before ``[start_us, end_us)`` in ``tz``.

    Month-aligned ranges (both ends begin a month in ``tz``) go back the same number of
    calendar months; any other range goes back its own length. Raises ``ValueError`` for
    an empty range and ``NoPreviousPeriod`` when the previous period would begin before
    year 1 in UTC or in ``tz``."""
    if start_us >= end_us:
        raise ValueError("empty range")
    first = _month_of(tz, start_us)
    last = _month_of(tz, end_us) if first is not None else None
    if first is not None and last is not None:
        months = months_between(first, last)
        index = first[0] * 12 + first[1] - 1 - months  # months since year 0, January
        year, month = divmod(index, 12)
        if year < date.min.year:
            raise NoPreviousPeriod(_too_early(tz))
        previous_start = month_start_us(tz, year, month + 1)
    else:
        previous_start = start_us - (end_us - start_us)
    if not calendar.representable(previous_start, tz):
        raise NoPreviousPeriod(_too_early(tz))
    return previous_start, start_us


def _too_early(tz: ZoneInfo) -> str:
    return (f"the previous period would begin before the year 1 in UTC or in the time zone "
            f"{tz.key!r}")

"""Spikes (SPEC 6.2): buckets of a series that stand far above the baseline of the
buckets before them, and the groups of a dimension that carried the excess. Pure: no
database (the series and the drivers' values come through the aggregates loader).

The method (README, 'Spikes'): a bucket's **baseline** is the median of the credits of
its **window**, the buckets of the same phase before it (``WINDOWS``: the same weekday
in the 8 weeks before a day, the same local hour on the 14 days before an hour, the 12
weeks or months before a week or month). Its **score** is the excess over the baseline
in robust standard deviations, ``(credits - median) / scale`` with
``scale = max(1.4826 x MAD, 10% of the median, 1 credit)``: a modified z-score (Iglewicz
and Hoaglin) whose floors keep steady traffic (MAD 0) and small relative changes (a
25-hour DST day, a 31-day month) from scoring. A bucket is a spike when its score is at
least ``THRESHOLD`` and at least half of its window's buckets had credits (an account or
an hour that is mostly idle has no baseline to stand above).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from gql_usage import calendar
from gql_usage.analytics.dimensions import Dimension
from gql_usage.analytics.layout import bucket_layout
from gql_usage.analytics.specs import SeriesPoint, SpikeDriversSpec
from gql_usage.calendar import EPOCH_DATE, MAX_BUCKETS, Granularity


@dataclass(frozen=True)
class Window:
    """A bucket's window: the buckets ``step``, 2 x ``step``, ... ``count`` x ``step``
    calendar slots before it (a slot: a local day, Monday-week, month or hour)."""

    step: int
    count: int


#: The baseline window per granularity. DAY: the same weekday in the 8 weeks before, so a
#: weekly rhythm (quiet weekends) is the baseline, not a spike; HOUR: the same local hour
#: on the 14 days before, so the daily rhythm is not a spike either; WEEK, MONTH: the 12
#: before.
WINDOWS: Mapping[Granularity, Window] = {
    Granularity.HOUR: Window(24, 14),
    Granularity.DAY: Window(7, 8),
    Granularity.WEEK: Window(1, 12),
    Granularity.MONTH: Window(1, 12),
}
#: A spike scores at least this (robust standard deviations above the baseline).
THRESHOLD = 3.5
#: MAD x this estimates the standard deviation of normally distributed values.
MAD_TO_SD = 1.4826
#: Floors of the scale: this share of the baseline, and this many credits.
RELATIVE_FLOOR = 0.1
ABSOLUTE_FLOOR = 1.0
#: Per spike, the groups with the most credits in its bucket that are considered as
#: drivers (the rest stay in the database), and the drivers returned.
CANDIDATES = 25
MAX_DRIVERS = 3


def min_active(granularity: Granularity) -> int:
    """Buckets of a window that must have credits for the bucket to be tested: half."""
    return -(-WINDOWS[granularity].count // 2)


# --- ranges ---------------------------------------------------------------------------

@dataclass(frozen=True)
class LookBack:
    """``[start_us, end_us)`` read before a report's range for its first buckets'
    windows. ``end_us`` is the start of the calendar bucket holding ``from``."""

    start_us: int
    end_us: int
    buckets: int  # how many buckets it holds


def _midnight_us(tz: ZoneInfo, day: date) -> int:
    # As ``gql_usage.calendar`` lays out buckets: fold=0 resolves a skipped midnight to
    # the transition, when that local day begins.
    return calendar.to_us(datetime(day.year, day.month, day.day, tzinfo=tz))


def look_back(time_zone: str, start_us: int, end_us: int, granularity: Granularity) -> LookBack:
    """The look-back of a report over ``[start_us, end_us)`` (none when it would start
    before year 1). Raises ``calendar.TooManyBuckets`` when the range's buckets and the
    look-back's together are more than ``MAX_BUCKETS`` (the limit of a series applies to
    what is read)."""
    tz = calendar.zone(time_zone)
    try:
        start, end = _look_back(tz, start_us, granularity)
    except (OverflowError, ValueError):
        start = end = start_us
    too_many = (f"the range and the look-back read before it for the baseline hold more "
                f"than {MAX_BUCKETS:,} {granularity.value} buckets")
    advice = "; choose a coarser granularity or a shorter range"
    try:
        calendar.check_bucket_limit(start, end_us, granularity)  # sure to be too long
        held = len(bucket_layout(time_zone, start, end, granularity).buckets)
        in_range = len(bucket_layout(time_zone, start_us, end_us, granularity).buckets)
    except calendar.TooManyBuckets:
        raise calendar.TooManyBuckets(too_many + advice) from None
    if held + in_range > MAX_BUCKETS:
        raise calendar.TooManyBuckets(f"{too_many} ({in_range:,} + {held:,}){advice}")
    return LookBack(start, end, held)


def _look_back(tz: ZoneInfo, start_us: int, granularity: Granularity) -> tuple[int, int]:
    local = calendar.from_us(start_us, tz)
    day = local.date()
    count = WINDOWS[granularity].count
    if granularity is Granularity.HOUR:
        floor = local.replace(minute=0, second=0, microsecond=0)
        return (_midnight_us(tz, day - timedelta(days=count)),
                min(calendar.to_us(floor), start_us))
    if granularity is Granularity.DAY:
        return (_midnight_us(tz, day - timedelta(days=7 * count)),
                min(_midnight_us(tz, day), start_us))
    if granularity is Granularity.WEEK:
        monday = day - timedelta(days=day.weekday())
        return (_midnight_us(tz, monday - timedelta(days=7 * count)),
                min(_midnight_us(tz, monday), start_us))
    months = day.year * 12 + day.month - 1 - count
    return (_midnight_us(tz, date(months // 12, months % 12 + 1, 1)),
            min(_midnight_us(tz, day.replace(day=1)), start_us))


# --- points ---------------------------------------------------------------------------

def slot(start_us: int, tz: ZoneInfo, granularity: Granularity) -> int:
    """The calendar slot of a bucket starting at ``start_us``: its local hour number,
    day number, Monday's day number / 7, or month number. The two buckets of a repeated
    local hour (a DST fall-back) share their slot."""
    local = calendar.from_us(start_us, tz)
    days = (local.date() - EPOCH_DATE).days
    if granularity is Granularity.HOUR:
        return days * 24 + local.hour
    if granularity is Granularity.DAY:
        return days
    if granularity is Granularity.WEEK:
        return (days - local.weekday()) // 7
    return local.year * 12 + local.month - 1


@dataclass(frozen=True)
class Point:
    """A bucket of the look-back or of the range. ``full``: it may be in a window (the
    look-back's buckets, and the range's but a first bucket clipped by ``from``)."""

    start_us: int
    end_us: int
    calls: int
    credits: int
    slot: int
    in_range: bool
    full: bool


def points(look: Sequence[SeriesPoint], series: Sequence[SeriesPoint], tz: ZoneInfo,
           granularity: Granularity, first_clipped: bool) -> list[Point]:
    """The look-back's buckets, then the range's, in time order."""
    out = [Point(p.start_us, p.end_us, p.calls, p.credits, slot(p.start_us, tz, granularity),
                 False, True) for p in look]
    out += [Point(p.start_us, p.end_us, p.calls, p.credits, slot(p.start_us, tz, granularity),
                  True, not (i == 0 and first_clipped)) for i, p in enumerate(series)]
    return out


# --- detection ------------------------------------------------------------------------

@dataclass(frozen=True)
class Baseline:
    median: float
    mad: float
    scale: float


def baseline(values: Sequence[float]) -> Baseline:
    """Median, median absolute deviation, and the scale a score divides by."""
    median = float(statistics.median(values))
    mad = float(statistics.median([abs(v - median) for v in values]))
    return Baseline(median, mad, max(MAD_TO_SD * mad, RELATIVE_FLOOR * median, ABSOLUTE_FLOOR))


@dataclass(frozen=True)
class Spike:
    point: int              # index in the points
    window: tuple[int, ...]  # indexes of its window's points
    baseline: Baseline
    excess: float
    score: float


def windows(pts: Sequence[Point], granularity: Granularity) -> dict[int, tuple[int, ...]]:
    """Per point of the range, the indexes of its window's points (earlier, full, in
    the window's slots)."""
    w = WINDOWS[granularity]
    by_slot: dict[int, list[int]] = {}
    out: dict[int, tuple[int, ...]] = {}
    for i, p in enumerate(pts):
        if p.in_range:
            out[i] = tuple(j for k in range(w.count, 0, -1)
                           for j in by_slot.get(p.slot - k * w.step, ()))
        if p.full:
            by_slot.setdefault(p.slot, []).append(i)
    return out


def detect(pts: Sequence[Point], granularity: Granularity) -> list[Spike]:
    """The range's spikes, most unusual first (score, then time)."""
    found = []
    for i, window in windows(pts, granularity).items():
        values = [pts[j].credits for j in window]
        if sum(1 for v in values if v > 0) < min_active(granularity):
            continue
        base = baseline(values)
        excess = pts[i].credits - base.median
        score = excess / base.scale
        if score >= THRESHOLD:
            found.append(Spike(i, window, base, excess, score))
    found.sort(key=lambda s: (-s.score, pts[s.point].start_us))
    return found


# --- drivers --------------------------------------------------------------------------

def drivers_spec(pts: Sequence[Point], spikes: Sequence[Spike],
                 dimension: Dimension) -> SpikeDriversSpec:
    """What the drivers of ``spikes`` read: their buckets and their windows' buckets."""
    used = sorted({j for s in spikes for j in (s.point, *s.window)})
    index = {j: n for n, j in enumerate(used)}
    return SpikeDriversSpec(
        dimension, tuple((pts[j].start_us, pts[j].end_us) for j in used),
        tuple((index[s.point], tuple(index[j] for j in s.window)) for s in spikes),
        CANDIDATES)


@dataclass(frozen=True)
class Driver:
    group: int       # the dimension's id
    calls: int       # in the spike's bucket
    credits: int
    baseline: float  # median of the group's credits over the spike's window
    excess: float


def drivers(values: Mapping[int, Mapping[int, tuple[int, int]]], own: int,
            window: Sequence[int]) -> list[Driver]:
    """The groups with the largest positive excess in bucket ``own`` over the median of
    their credits in the ``window`` buckets (0 where absent), largest first, at most
    ``MAX_DRIVERS``. ``values``: group -> bucket -> (calls, credits)."""
    found = []
    for group, by_bucket in values.items():
        calls, credits = by_bucket.get(own, (0, 0))
        base = float(statistics.median([by_bucket.get(k, (0, 0))[1] for k in window]))
        if credits - base > 0:
            found.append(Driver(group, calls, credits, base, credits - base))
    found.sort(key=lambda d: (-d.excess, -d.credits, -d.calls, d.group))
    return found[:MAX_DRIVERS]


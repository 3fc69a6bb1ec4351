"""Calendar buckets in an IANA time zone, as exact UTC instants (microseconds).

Pure Python, no database: ``analytics/layout.py`` turns these buckets into SQL.
``min_buckets`` bounds a series' size by arithmetic alone, so a range far too long is
refused before any zone lookup. See README, 'Architecture' (Exactness) and 'Limits'.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gql_usage.untrusted import echo

US = 1_000_000
DAY_S = 86_400
HOUR_S = 3_600
#: Seven days: the coarsest cube grain (``gql_usage.storage.models.CUBE_SETS``). Its units are
#: epoch-aligned like the others, so they start on Thursdays 00:00 UTC (1970-01-01 was
#: one), not on the Mondays a ``WEEK`` bucket starts on: a week series cuts them.
WEEK_S = 7 * DAY_S
MAX_BUCKETS = 2_000
EPOCH_DATE = date(1970, 1, 1)
_SCAN_STEP_S = 6 * HOUR_S
#: Local midnights kept (``_local_midnight_us``): 16,384 (zone, day) pairs, about 3.5 MB:
#: 45 years of days in one zone, or the last year in 45 zones.
MIDNIGHTS_CACHED = 16_384
#: Offset segments are scanned a UTC block of 2^22 s (48.5 days) at a time and kept
#: (``_block_segments``): a dashboard's range moves by seconds from one request to the
#: next, its blocks not at all. 4,096 blocks (about 400 bytes each, 1.6 MB):
#: 545 years in one zone, or the last year in 500 zones.
_BLOCK_S = 1 << 22
SEGMENT_BLOCKS_CACHED = 4_096
#: DAY buckets read local midnights a block of 64 days at a time (``_midnight_block``):
#: 1,024 blocks, about 3 MB: 180 years in one zone, or the last year in 170 zones.
_DAYS_PER_BLOCK = 64
MIDNIGHT_BLOCKS_CACHED = 1_024


class Granularity(StrEnum):
    HOUR = "HOUR"
    DAY = "DAY"
    WEEK = "WEEK"
    MONTH = "MONTH"


class TooManyBuckets(ValueError):
    pass


#: Longest bucket of each granularity, in seconds, as local calendar time: a local hour is
#: cut at every offset change, so an HOUR bucket is never longer than 3,600 s.
_LONGEST_S = {Granularity.HOUR: HOUR_S, Granularity.DAY: DAY_S,
              Granularity.WEEK: WEEK_S, Granularity.MONTH: 31 * DAY_S}
#: What offset changes can add to a range beyond its calendar buckets: UTC offsets lie
#: within +-16 h (so the offsets at its two ends differ by under 32 h), and a day skipped
#: by a date-line change (Samoa 2011, Kwajalein 1993) is an empty bucket, at most one per
#: change of side. Four days cover both with room to spare.
_SLACK_S = 4 * DAY_S


def min_buckets(start_us: int, end_us: int, granularity: Granularity) -> int:
    """A lower bound on ``len(buckets(...))`` in any zone, without looking at the zone.

    HOUR: every bucket is at most an hour, so there are at least ``ceil(length / 1 h)``.
    DAY/WEEK/MONTH: the calendar buckets touched span the range plus at most the offset
    change, each at most its longest local length (31 days for MONTH)."""
    length_s = max(end_us - start_us, 0) // US
    if granularity is Granularity.HOUR:
        return -(-length_s // HOUR_S)
    return max((length_s - _SLACK_S) // _LONGEST_S[granularity], 0)


def check_bucket_limit(start_us: int, end_us: int, granularity: Granularity) -> None:
    """``TooManyBuckets`` when the range is certain to hold more than ``MAX_BUCKETS``
    buckets: arithmetic only, before any zone is consulted."""
    if min_buckets(start_us, end_us, granularity) > MAX_BUCKETS:
        raise TooManyBuckets(_too_many(granularity))


def zone(name: str) -> ZoneInfo:
    """The IANA zone of that name; ``ValueError`` for anything else."""
    if (not name or name != name.strip() or name.startswith(("/", ".")) or ".." in name
            or name in ("localtime", "posixrules") or name.startswith(("posix/", "right/"))):
        raise ValueError(f"unknown time zone {echo(name)}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {echo(name)} (use an IANA name such as "
                         "'Europe/Berlin')") from None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
#: Kept blocks (segments, midnights) cover years 2 to 9998 only: a block at either end
#: of ``datetime``'s range would reach past it. Ranges there are scanned as asked.
_FIRST_DAY_US = (datetime(2, 1, 1, tzinfo=UTC) - _EPOCH) // _ONE_US
_LAST_DAY_US = (datetime(9998, 1, 1, tzinfo=UTC) - _EPOCH) // _ONE_US
_FIRST_BLOCK = -(-(_FIRST_DAY_US // US) // _BLOCK_S)
_LAST_BLOCK = _LAST_DAY_US // US // _BLOCK_S - 1


def to_us(value: datetime) -> int:
    """Microseconds since the epoch, exactly (integer arithmetic, no float)."""
    return (value - _EPOCH) // _ONE_US


def from_us(value: int, tz: ZoneInfo | None = None) -> datetime:
    """The instant ``value`` (microseconds since the epoch) in ``tz`` (default UTC).

    Whole seconds go through ``fromtimestamp`` (exact for integers, and it picks the
    right fold); offsets change on whole seconds, so the microseconds are simply set."""
    seconds, micro = divmod(value, US)
    dt = datetime.fromtimestamp(seconds, tz or UTC)
    return dt.replace(microsecond=micro) if micro else dt


class BucketEdge(datetime):
    """A bucket edge: a datetime that keeps its ISO 8601 text, which ``isoformat()``
    (no arguments: how the ``DateTime`` scalar and the exports write it) returns. An
    aware datetime looks its offset up in the zone each time it is formatted (~2 µs);
    a 365-day series writes 732 edges, the same from one request to the next. Edges are
    shared by every request (``bucket_edge``): never set ``_iso`` elsewhere. orjson does
    not write datetime subclasses: write an edge with ``isoformat()``."""

    __slots__ = ("_iso",)
    _iso: str

    def isoformat(self, sep: str = "T", timespec: str = "auto") -> str:
        if sep == "T" and timespec == "auto":
            # Made by ``bucket_edge`` alone; a datetime derived from an edge (arithmetic
            # and ``replace`` may return the subclass) has no text and is formatted.
            iso: str | None = getattr(self, "_iso", None)
            if iso is not None:
                return iso
        return super().isoformat(sep, timespec)


#: Bucket edges remembered by ``bucket_edge``: a series' inner edges (midnights, hours)
#: are the same instants from one request to the next; only its two ends move. An entry
#: is a datetime, its text and its key (~300 bytes): a few MB at most.
BUCKET_EDGE_CACHE_SIZE = 16_384


@functools.lru_cache(maxsize=BUCKET_EDGE_CACHE_SIZE)
def bucket_edge(value: int, tz: ZoneInfo) -> BucketEdge:
    """``from_us(value, tz)`` as a ``BucketEdge``, remembered (datetimes are immutable:
    one may be shared)."""
    dt = from_us(value, tz)
    edge = BucketEdge(dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second,
                      dt.microsecond, dt.tzinfo, fold=dt.fold)
    edge._iso = dt.isoformat()
    return edge


def representable(value: int, tz: ZoneInfo) -> bool:
    """Whether the instant ``value`` (microseconds) has a datetime (years 1 to 9999) both
    in UTC and in ``tz``: what ``from_us`` and the bucket layout need."""
    try:
        from_us(value, tz)
    except (OverflowError, ValueError, OSError):
        return False
    return True


def _offset_s(tz: ZoneInfo, t_s: int) -> int:
    off = datetime.fromtimestamp(t_s, tz=tz).utcoffset()
    assert off is not None
    return int(off.total_seconds())


@dataclass(frozen=True)
class Segment:
    """``[start_s, end_s)`` (whole seconds) during which the zone's offset is constant."""

    start_s: int
    end_s: int
    offset_s: int


def offset_segments(tz: ZoneInfo, start_us: int, end_us: int) -> list[Segment]:
    """``[start_us, end_us)`` split into pieces of constant UTC offset in ``tz``: the
    kept segments of the UTC blocks it touches, clipped and joined."""
    start_s = start_us // US
    end_s = -(-end_us // US)
    first, last = start_s // _BLOCK_S, (end_s - 1) // _BLOCK_S
    if end_s <= start_s or first < _FIRST_BLOCK or last > _LAST_BLOCK:
        return _scan_segments(tz, start_s, end_s)
    segments: list[Segment] = []
    for block in range(first, last + 1):
        for seg in _block_segments(tz, block):
            lo, hi = max(seg.start_s, start_s), min(seg.end_s, end_s)
            if lo >= hi:
                continue
            if segments and segments[-1].offset_s == seg.offset_s:
                segments[-1] = Segment(segments[-1].start_s, hi, seg.offset_s)
            else:
                segments.append(Segment(lo, hi, seg.offset_s))
    return segments


@functools.lru_cache(maxsize=SEGMENT_BLOCKS_CACHED)
def _block_segments(tz: ZoneInfo, block: int) -> tuple[Segment, ...]:
    return tuple(_scan_segments(tz, block * _BLOCK_S, (block + 1) * _BLOCK_S))


def _scan_segments(tz: ZoneInfo, start_s: int, end_s: int) -> list[Segment]:
    """``[start_s, end_s)`` split into pieces of constant offset: the offset is read
    every 6 hours, and each change is found to the second by bisection."""
    segments: list[Segment] = []
    seg_start = start_s
    current = _offset_s(tz, start_s)
    t = start_s
    while t < end_s:
        nxt = min(t + _SCAN_STEP_S, end_s - 1)
        if nxt <= t:
            break
        if _offset_s(tz, nxt) != current:
            lo, hi = t, nxt  # offset(lo) == current, offset(hi) != current
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if _offset_s(tz, mid) == current:
                    lo = mid
                else:
                    hi = mid
            segments.append(Segment(seg_start, hi, current))
            seg_start, current = hi, _offset_s(tz, hi)
            t = hi
            continue
        t = nxt
    segments.append(Segment(seg_start, end_s, current))
    return segments


class Bucket(NamedTuple):
    """A bucket clipped to its range (a tuple: a series lays out hundreds per request)."""

    start_us: int
    end_us: int
    key: int


@functools.lru_cache(maxsize=MIDNIGHTS_CACHED)
def _local_midnight_us(tz: ZoneInfo, day: date) -> int:
    """When ``day`` begins in ``tz`` (µs). Cached for WEEK and MONTH buckets (DAY buckets
    keep whole blocks of days, ``_midnight_block``): dashboards ask for the same days
    again and again."""
    # In a gap (midnight skipped by a DST change) fold=0 resolves to the transition
    # instant, which is when that local day begins.
    return to_us(datetime(day.year, day.month, day.day, tzinfo=tz))


@functools.lru_cache(maxsize=MIDNIGHT_BLOCKS_CACHED)
def _midnight_block(tz: ZoneInfo, block: int) -> tuple[int, ...]:
    """When each local day of day numbers ``64 * block`` to ``64 * block + 63`` begins."""
    first = EPOCH_DATE + timedelta(days=block * _DAYS_PER_BLOCK)
    midnight = _local_midnight_us.__wrapped__  # the block is what is kept
    return tuple(midnight(tz, first + timedelta(days=i)) for i in range(_DAYS_PER_BLOCK))


def _day_buckets(tz: ZoneInfo, start_us: int, end_us: int) -> list[Bucket]:
    """DAY buckets from kept blocks of local midnights (``buckets``, without a date or a
    lookup per day)."""
    day = (from_us(start_us, tz).date() - EPOCH_DATE).days
    block_no, index = divmod(day, _DAYS_PER_BLOCK)
    block = _midnight_block(tz, block_no)
    midnight = block[index]
    out: list[Bucket] = []
    while True:
        index += 1
        if index == _DAYS_PER_BLOCK:
            block_no, index = block_no + 1, 0
            block = _midnight_block(tz, block_no)
        next_midnight = block[index]
        b_start = midnight if midnight > start_us else start_us
        b_end = next_midnight if next_midnight < end_us else end_us
        if b_start < b_end:
            if len(out) == MAX_BUCKETS:
                raise TooManyBuckets(_too_many(Granularity.DAY))
            out.append(Bucket(b_start, b_end, day))
        if b_end >= end_us:
            return out
        day, midnight = day + 1, next_midnight


def _next_start(day: date, granularity: Granularity) -> date | None:
    """The first day of the next bucket; None past 9999-12-31 (no ``date`` holds it)."""
    try:
        if granularity is Granularity.DAY:
            return day + timedelta(days=1)
        if granularity is Granularity.WEEK:
            return day + timedelta(days=7)
        return date(day.year + day.month // 12, day.month % 12 + 1, 1)
    except (OverflowError, ValueError):
        return None


def _floor_date(day: date, granularity: Granularity) -> date:
    if granularity is Granularity.WEEK:
        return day - timedelta(days=day.weekday())
    if granularity is Granularity.MONTH:
        return day.replace(day=1)
    return day


def buckets(tz: ZoneInfo, start_us: int, end_us: int, granularity: Granularity,
            segments: list[Segment] | None = None) -> list[Bucket]:
    """Every bucket intersecting ``[start_us, end_us)``, in order, clipped to the range.

    For DAY/WEEK/MONTH the key is the local day number (days since 1970-01-01 in local
    time) of the bucket's first local day; ``day_to_bucket`` maps any local day to it.
    For HOUR the key is ``local_hour_number * 1024 + segment_index``.
    Raises ``TooManyBuckets`` past ``MAX_BUCKETS``: at once when ``min_buckets`` is past
    it, else after at most ``MAX_BUCKETS + 1`` steps (an HOUR range that gets this far is
    at most 2,000 hours, so scanning its offsets is cheap).
    """
    check_bucket_limit(start_us, end_us, granularity)
    if granularity is Granularity.HOUR:
        return _hour_buckets(segments or offset_segments(tz, start_us, end_us), start_us, end_us)
    if granularity is Granularity.DAY and _FIRST_DAY_US <= start_us and end_us <= _LAST_DAY_US:
        return _day_buckets(tz, start_us, end_us)
    first_local = from_us(start_us, tz).date()
    day = _floor_date(first_local, granularity)
    midnight = _local_midnight_us(tz, day)
    out: list[Bucket] = []
    while True:
        nxt = _next_start(day, granularity)
        # A bucket starting after 9999-12-31 local starts after any representable end.
        next_midnight = None if nxt is None else _local_midnight_us(tz, nxt)
        b_start = max(midnight, start_us)
        b_end = end_us if next_midnight is None else min(next_midnight, end_us)
        if b_start < b_end:
            if len(out) == MAX_BUCKETS:
                raise TooManyBuckets(_too_many(granularity))
            out.append(Bucket(b_start, b_end, (day - EPOCH_DATE).days))
        if b_end >= end_us or nxt is None or next_midnight is None:
            return out
        day, midnight = nxt, next_midnight


#: The longest a bucket lasts: its calendar length plus a day (an offset change, such as
#: a zone crossing the date line, lengthens a local day by up to 24 hours). HOUR buckets
#: are cut at every offset change, so never last more than an hour.
def _too_many(granularity: Granularity) -> str:
    return (f"the range holds more than {MAX_BUCKETS:,} {granularity.value} buckets; "
            "choose a coarser granularity or a shorter range")


def _hour_buckets(segments: list[Segment], start_us: int, end_us: int) -> list[Bucket]:
    out: list[Bucket] = []
    for index, seg in enumerate(segments):
        lo = max(seg.start_s * US, start_us)
        hi = min(seg.end_s * US, end_us)
        t = lo
        while t < hi:
            t_s = t // US
            hour = (t_s + seg.offset_s) // HOUR_S
            nxt_s = (hour + 1) * HOUR_S - seg.offset_s
            b_end = min(nxt_s * US, hi)
            if len(out) == MAX_BUCKETS:
                raise TooManyBuckets(_too_many(Granularity.HOUR))
            out.append(Bucket(t, b_end, hour * 1024 + index))
            t = b_end
    return out


def day_to_bucket_start(day_number: int, granularity: Granularity) -> int:
    """Local day number of the first day of the DAY/WEEK/MONTH bucket holding that day."""
    day = EPOCH_DATE + timedelta(days=day_number)
    return (_floor_date(day, granularity) - EPOCH_DATE).days

"""The spike method (``gql_usage.analytics.spikes``) on series built here from calendar
buckets: steady traffic, MAD = 0, sparse accounts, weekly and daily rhythms, DST days,
planted spikes, drivers and the look-back. Expected numbers are worked out by hand in
the comments (or with ``statistics`` over the test's own values)."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from gql_usage import calendar
from gql_usage.analytics import spikes
from gql_usage.analytics.dimensions import Dimension
from gql_usage.analytics.specs import SeriesPoint
from gql_usage.calendar import Granularity

UTC_ZONE = ZoneInfo("UTC")
BERLIN = ZoneInfo("Europe/Berlin")


def us(*args: int, tz: ZoneInfo = UTC_ZONE) -> int:
    return calendar.to_us(datetime(*args, tzinfo=tz))  # type: ignore[misc]


def series(tz: ZoneInfo, start_us: int, end_us: int, granularity: Granularity,
           credits: Callable[[datetime, datetime], int]) -> list[SeriesPoint]:
    """Buckets of ``[start, end)`` with ``credits(local start, local end)`` each."""
    out = []
    for b in calendar.buckets(tz, start_us, end_us, granularity):
        c = credits(calendar.from_us(b.start_us, tz), calendar.from_us(b.end_us, tz))
        out.append(SeriesPoint(b.start_us, b.end_us, c, c))
    return out


def run(tz: ZoneInfo, start_us: int, end_us: int, granularity: Granularity,
        credits: Callable[[datetime, datetime], int]) -> tuple[list[spikes.Point],
                                                               list[spikes.Spike]]:
    """Detection as the resolver runs it: the look-back, then the range."""
    look = spikes.look_back(tz.key, start_us, end_us, granularity)
    before = series(tz, look.start_us, look.end_us, granularity, credits)
    during = series(tz, start_us, end_us, granularity, credits)
    pts = spikes.points(before, during, tz, granularity, look.end_us != start_us)
    return pts, spikes.detect(pts, granularity)


def at(pts: list[spikes.Point], spike: spikes.Spike, tz: ZoneInfo) -> datetime:
    return calendar.from_us(pts[spike.point].start_us, tz)


# --- the baseline ---------------------------------------------------------------------

def test_baseline_is_median_and_mad_with_floors() -> None:
    b = spikes.baseline([10, 12, 11, 50, 9, 10, 13, 11])
    assert b.median == 11.0  # sorted 9 10 10 11 11 12 13 50
    assert b.mad == 1.0  # deviations 1 1 0 39 2 1 2 0 -> sorted 0 0 1 1 1 2 2 39
    assert b.scale == pytest.approx(1.4826)  # max(1.4826, 1.1, 1)
    assert spikes.baseline([200] * 8).scale == 20.0  # MAD 0: 10% of the median
    assert spikes.baseline([3] * 8).scale == 1.0  # MAD 0, median 3: one credit


# --- steady traffic and MAD = 0 -------------------------------------------------------

def test_steady_traffic_has_no_spike_and_a_jump_on_steady_traffic_is_one() -> None:
    start, end = us(2026, 3, 1), us(2026, 5, 1)
    _, found = run(UTC_ZONE, start, end, Granularity.DAY, lambda s, e: 100)
    assert found == []
    pts, found = run(UTC_ZONE, start, end, Granularity.DAY,
                     lambda s, e: 250 if s.date() == datetime(2026, 4, 9).date() else 100)
    assert len(found) == 1
    spike = found[0]
    assert at(pts, spike, UTC_ZONE) == datetime(2026, 4, 9, tzinfo=UTC)
    # MAD 0: the scale is 10% of the median 100 -> (250 - 100) / 10
    assert (spike.baseline.median, spike.excess, spike.score) == (100.0, 150.0, 15.0)
    assert len(spike.window) == 8  # the 8 Thursdays before


def test_small_relative_change_on_steady_traffic_is_not_a_spike() -> None:
    # +30% on MAD-0 traffic scores 3 (< 3.5): the 10% floor asks for +35%.
    _, found = run(UTC_ZONE, us(2026, 3, 1), us(2026, 5, 1), Granularity.DAY,
                   lambda s, e: 130 if s.day == 15 else 100)
    assert found == []
    _, found = run(UTC_ZONE, us(2026, 3, 1), us(2026, 5, 1), Granularity.DAY,
                   lambda s, e: 136 if (s.month, s.day) == (4, 15) else 100)
    assert len(found) == 1 and found[0].score == pytest.approx(3.6)


# --- sparse accounts ------------------------------------------------------------------

def test_sparse_account_has_no_spike_without_baseline_history() -> None:
    # Credits on a few days only: no window has half of its buckets with credits.
    busy = {(3, 2): 5, (3, 20): 40, (4, 7): 9, (4, 14): 500, (4, 21): 3}
    _, found = run(UTC_ZONE, us(2026, 3, 1), us(2026, 5, 1), Granularity.DAY,
                   lambda s, e: busy.get((s.month, s.day), 0))
    assert found == []


def test_half_of_the_window_with_credits_is_enough_history() -> None:
    # Every other week of Tuesdays is busy: 4 of the 8 Tuesdays before have credits.
    def credits(s: datetime, e: datetime) -> int:
        if (s.month, s.day) == (5, 12):
            return 600
        return 100 if s.weekday() == 1 and s.isocalendar().week % 2 == 0 else 0

    pts, found = run(UTC_ZONE, us(2026, 5, 1), us(2026, 5, 20), Granularity.DAY, credits)
    assert [at(pts, s, UTC_ZONE).day for s in found] == [12]
    window = [pts[j].credits for j in found[0].window]
    assert sorted(window) == [0, 0, 0, 0, 100, 100, 100, 100]
    assert found[0].baseline.median == 50.0  # statistics.median of those


# --- rhythms --------------------------------------------------------------------------

def test_weekly_rhythm_is_no_spike_at_day_granularity() -> None:
    quiet_weekends = lambda s, e: 40 if s.weekday() >= 5 else 1000  # noqa: E731
    busy_weekends = lambda s, e: 1000 if s.weekday() >= 5 else 40  # noqa: E731
    for credits in (quiet_weekends, busy_weekends):
        _, found = run(UTC_ZONE, us(2026, 1, 5), us(2026, 6, 1), Granularity.DAY, credits)
        assert found == []


def test_a_weekend_at_weekday_level_is_a_spike() -> None:
    def credits(s: datetime, e: datetime) -> int:
        if (s.month, s.day) == (3, 14):  # a Saturday
            return 1000
        return 40 if s.weekday() >= 5 else 1000

    pts, found = run(UTC_ZONE, us(2026, 3, 1), us(2026, 4, 1), Granularity.DAY, credits)
    assert [at(pts, s, UTC_ZONE).date().isoformat() for s in found] == ["2026-03-14"]
    assert found[0].baseline.median == 40.0 and found[0].excess == 960.0


def test_daily_rhythm_is_no_spike_at_hour_granularity_and_a_night_burst_is() -> None:
    office = lambda s, e: 300 if 9 <= s.hour < 18 else 5  # noqa: E731
    start, end = us(2026, 3, 2, tz=BERLIN), us(2026, 3, 6, tz=BERLIN)
    _, found = run(BERLIN, start, end, Granularity.HOUR, office)
    assert found == []

    def burst(s: datetime, e: datetime) -> int:
        return 200 if (s.day, s.hour) == (4, 3) else office(s, e)

    pts, found = run(BERLIN, start, end, Granularity.HOUR, burst)
    assert [at(pts, s, BERLIN) for s in found] == [datetime(2026, 3, 4, 3, tzinfo=BERLIN)]
    assert len(found[0].window) == 14  # 03:00 on each of the 14 days before
    assert found[0].baseline.median == 5.0 and found[0].score == 195.0  # scale: 1 credit


# --- DST ------------------------------------------------------------------------------

def test_dst_days_are_not_spikes_by_their_length_alone() -> None:
    # 10 credits per hour: Berlin's 2026-03-29 holds 230, 2026-10-25 holds 250. (Aware
    # datetimes of one zone subtract as wall-clock times, hence the timestamps.)
    per_hour = lambda s, e: 10 * round((e.timestamp() - s.timestamp()) / 3600)  # noqa: E731
    for start, end in ((us(2026, 3, 1, tz=BERLIN), us(2026, 4, 10, tz=BERLIN)),
                       (us(2026, 10, 1, tz=BERLIN), us(2026, 11, 10, tz=BERLIN))):
        pts, found = run(BERLIN, start, end, Granularity.DAY, per_hour)
        assert {p.credits for p in pts} == {230, 240} or {p.credits for p in pts} == {240, 250}
        assert found == []
        for p in pts:  # the DST day is compared with the Sundays before it
            if p.credits != 240:
                assert calendar.from_us(p.start_us, BERLIN).weekday() == 6


def test_hour_buckets_across_dst_are_real_hours() -> None:
    # 2026-10-25 Berlin: 02:00 twice. Every hour holds 10 credits: no spike; the repeated
    # hour's two buckets share the slot "02:00" and are each compared with 02:00 before.
    start, end = us(2026, 10, 24, tz=BERLIN), us(2026, 10, 27, tz=BERLIN)
    pts, found = run(BERLIN, start, end, Granularity.HOUR, lambda s, e: 10)
    assert found == []
    twos = [i for i, p in enumerate(pts) if p.in_range
            and calendar.from_us(p.start_us, BERLIN).replace(tzinfo=None)
            == datetime(2026, 10, 25, 2)]
    assert len(twos) == 2 and pts[twos[0]].slot == pts[twos[1]].slot
    windows = spikes.windows(pts, Granularity.HOUR)
    assert len(windows[twos[0]]) == len(windows[twos[1]]) == 14
    # The repeated hour's second bucket is a burst: a spike over its own window.
    pts, found = run(BERLIN, start, end, Granularity.HOUR,
                     lambda s, e: 90 if s.fold == 1 and s.hour == 2 else 10)
    assert len(found) == 1 and found[0].point == twos[1] and found[0].excess == 80.0


# --- the look-back --------------------------------------------------------------------

def test_the_first_bucket_gets_its_baseline_from_before_from() -> None:
    start = us(2026, 4, 1)
    pts, found = run(UTC_ZONE, start, us(2026, 4, 10), Granularity.DAY,
                     lambda s, e: 500 if (s.month, s.day) == (4, 1) else 100)
    assert len(found) == 1 and pts[found[0].point].start_us == start
    assert all(not pts[j].in_range for j in found[0].window)


def test_look_back_per_granularity() -> None:
    lb = spikes.look_back("UTC", us(2026, 4, 1, 12), us(2026, 4, 10), Granularity.DAY)
    assert (lb.start_us, lb.end_us, lb.buckets) == (us(2026, 2, 4), us(2026, 4, 1), 56)
    lb = spikes.look_back("Europe/Berlin", us(2026, 4, 1, 12, 30, tz=BERLIN),
                          us(2026, 4, 2, tz=BERLIN), Granularity.HOUR)
    assert lb.end_us == us(2026, 4, 1, 12, tz=BERLIN)
    assert lb.start_us == us(2026, 3, 18, tz=BERLIN)  # midnight 14 days before
    assert lb.buckets == 14 * 24 + 12 - 1  # 2026-03-29 has 23 hours
    lb = spikes.look_back("UTC", us(2026, 4, 1), us(2026, 5, 1), Granularity.WEEK)
    assert (lb.start_us, lb.end_us) == (us(2026, 1, 5), us(2026, 3, 30))  # Mondays
    lb = spikes.look_back("UTC", us(2026, 4, 1), us(2026, 5, 1), Granularity.MONTH)
    assert (lb.start_us, lb.end_us, lb.buckets) == (us(2025, 4, 1), us(2026, 4, 1), 12)


def test_the_bucket_limit_counts_the_look_back() -> None:
    start = us(2020, 1, 1)
    ok_end = start + (2000 - 56) * 86_400 * 1_000_000
    assert spikes.look_back("UTC", start, ok_end, Granularity.DAY).buckets == 56
    with pytest.raises(calendar.TooManyBuckets, match=r"look-back .* \(1,945 \+ 56\)"):
        spikes.look_back("UTC", start, ok_end + 86_400 * 1_000_000, Granularity.DAY)


# --- drivers --------------------------------------------------------------------------

def test_drivers_are_the_largest_positive_excesses_over_each_groups_median() -> None:
    window = [1, 2, 3, 4, 5]
    values = {
        7: {0: (3, 90), 1: (1, 10), 2: (1, 10), 3: (1, 10), 4: (1, 10), 5: (1, 10)},
        8: {0: (2, 50), 1: (1, 40), 3: (1, 40), 5: (1, 40)},  # median of 40,0,40,0,40 = 40
        9: {0: (9, 60)},                                     # new: median 0
        10: {0: (1, 5), 1: (1, 20), 2: (1, 20), 3: (1, 20)},  # below its baseline
        11: {0: (1, 11), 2: (1, 1)},                          # median 0, excess 11
    }
    found = spikes.drivers(values, 0, window)
    assert [(d.group, d.baseline, d.excess) for d in found] == [
        (7, 10.0, 80.0), (9, 0.0, 60.0), (11, 0.0, 11.0)]
    assert (found[1].calls, found[1].credits) == (9, 60)
    for d in found:
        own = values[d.group][0][1]
        assert d.baseline == statistics.median(values[d.group].get(k, (0, 0))[1]
                                               for k in window)
        assert d.excess == own - d.baseline


def test_drivers_spec_lists_each_bucket_once() -> None:
    start = us(2026, 3, 1)
    pts, found = run(UTC_ZONE, start, us(2026, 4, 1), Granularity.DAY,
                     lambda s, e: 400 if s.day in (10, 17) else 100)
    assert [at(pts, s, UTC_ZONE).day for s in found] == [10, 17]
    spec = spikes.drivers_spec(pts, found, Dimension.SOURCE)
    assert spec.dimension is Dimension.SOURCE and spec.candidates == spikes.CANDIDATES
    starts = [lo for lo, _ in spec.buckets]
    assert starts == sorted(set(starts)) and len(starts) == 10  # 9 Tuesdays + the 17th
    for (own, window), s in zip(spec.spikes, found, strict=True):
        assert spec.buckets[own][0] == pts[s.point].start_us
        assert [spec.buckets[k][0] for k in window] == [pts[j].start_us for j in s.window]


def test_spikes_are_ordered_by_score() -> None:
    big = {(3, 10): 900, (3, 11): 300, (3, 12): 500}
    pts, found = run(UTC_ZONE, us(2026, 3, 1), us(2026, 4, 1), Granularity.DAY,
                     lambda s, e: big.get((s.month, s.day), 100))
    assert [at(pts, s, UTC_ZONE).day for s in found] == [10, 12, 11]
    assert [s.score for s in found] == [80.0, 40.0, 20.0]

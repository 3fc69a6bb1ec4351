"""The credit pool's forecast (``gql_usage.analytics.forecast``): pure integer arithmetic,
checked against values worked out here with exact fractions (``Fraction``), never floats.

Times are microseconds since the epoch; ``NOW`` is 2026-01-20 12:00 UTC."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from fractions import Fraction

import pytest

from gql_usage.analytics.forecast import (
    MAX_PROJECTION,
    Window,
    burn_window,
    forecast,
)

US = 1_000_000
HOUR = 3_600 * US
DAY = 24 * HOUR
NOW = int(datetime(2026, 1, 20, 12, tzinfo=UTC).timestamp()) * US
MONTH_START = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp()) * US
MONTH_END = int(datetime(2026, 2, 1, tzinfo=UTC).timestamp()) * US


def expected(granted: int, used: int, window: Window | None, credits: int,
             end: int, now: int) -> tuple[float, int, int | None]:
    """The contract, in exact fractions: rate per day, projected (floor), exhaustion."""
    if window is None or credits == 0:
        return 0.0, min(used, MAX_PROJECTION), None
    rate = Fraction(credits) * DAY / (window.end_us - window.start_us)  # credits per day
    days_left = Fraction(max(end - now, 0), DAY)
    projected = math.floor(used + rate * days_left)
    remaining = granted - used
    at = None
    if remaining > 0:
        instant = now + math.ceil(Fraction(remaining) / rate * DAY)
        at = instant if instant < end else None
    return float(rate), min(projected, MAX_PROJECTION), at


def check(granted: int, used: int, credits: int, *, start: int = MONTH_START,
          end: int = MONTH_END, now: int = NOW) -> tuple[float, int, int | None]:
    window = burn_window(start, end, now)
    f = forecast(granted=granted, used=used, window=window, window_credits=credits,
                 period_end_us=end, now_us=now)
    want = expected(granted, used, window, credits, end, now)
    assert (f.burn_rate_per_day, f.projected_used, f.exhausts_at_us) == want
    return want


def test_the_window_is_the_last_seven_days_when_the_period_began_earlier() -> None:
    assert burn_window(MONTH_START, MONTH_END, NOW) == Window(NOW - 7 * DAY, NOW)
    # 700 credits in 7 days: 100 a day; 11.5 days left: 1,150 more.
    rate, projected, at = check(10_000, 2_000, 700)
    assert rate == 100.0 and projected == 3_150
    # 8,000 credits left at 100 a day: 80 days, past the period's end.
    assert at is None


def test_a_period_that_began_within_seven_days_is_the_window() -> None:
    start = NOW - 3 * DAY
    assert burn_window(start, MONTH_END, NOW) == Window(start, NOW)
    rate, projected, at = check(1_000, 300, 300, start=start)  # 100 a day over 3 days
    assert rate == 100.0 and projected == 300 + 1_150
    assert at == NOW + 7 * DAY  # 700 left at 100 a day


def test_a_window_shorter_than_an_hour_measures_nothing() -> None:
    start = NOW - HOUR + 1
    assert burn_window(start, MONTH_END, NOW) is None
    assert check(1_000, 999, 999, start=start) == (0.0, 999, None)
    # One hour exactly is a window: 24 credits in it is 576 a day.
    assert burn_window(NOW - HOUR, MONTH_END, NOW) == Window(NOW - HOUR, NOW)
    assert check(1_000_000, 24, 24, start=NOW - HOUR)[0] == 576.0
    # Not begun yet, or over for a week: no window either.
    assert burn_window(NOW + DAY, NOW + 30 * DAY, NOW) is None
    assert burn_window(NOW - 40 * DAY, NOW - 7 * DAY, NOW) is None


def test_no_credits_in_the_window_is_a_rate_of_zero() -> None:
    assert check(1_000, 10, 0) == (0.0, 10, None)


def test_a_pool_already_used_up_never_exhausts() -> None:
    _, projected, at = check(1_000, 1_000, 700)  # remaining 0
    assert at is None and projected == 1_000 + 1_150
    _, _, at = check(1_000, 1_500, 700)  # overage
    assert at is None
    assert check(0, 0, 0) == (0.0, 0, None)  # nothing granted, nothing used


def test_exhaustion_after_or_at_the_period_end_is_null_before_it_an_instant() -> None:
    left = MONTH_END - NOW  # 11.5 days
    # At 100 a day, 1,150 remaining last exactly until the end: not "before periodEnd".
    assert check(3_150, 2_000, 700)[2] is None
    # One credit less lasts 11.49 days: before the end.
    at = check(3_149, 2_000, 700)[2]
    assert at is not None and at == NOW + left - DAY // 100


def test_projection_and_exhaustion_round_the_right_way() -> None:
    # 10 credits in 7 days; 11.5 days left: 10 * 11.5 / 7 = 16.43 -> 16 (down).
    _, projected, at = check(100, 0, 10)
    assert projected == 16
    # 1 credit remaining at 10 per 7 days: 0.7 days = 60,480 s, exactly.
    _, _, at = check(1, 0, 10)
    assert at == NOW + 60_480 * US
    # 11 credits in the window, 1 remaining: 7/11 days, not a whole microsecond: rounded
    # up to the first microsecond the credits are used up.
    _, _, at = check(1, 0, 11)
    assert (7 * DAY) % 11 != 0
    assert at == NOW + 7 * DAY // 11 + 1


def test_the_period_already_over_projects_what_was_used() -> None:
    end = NOW - DAY  # the vendor has not yet rolled the period over
    window = burn_window(MONTH_START, end, NOW)
    assert window == Window(NOW - 7 * DAY, end)  # measured up to the end, not now
    rate, projected, at = check(10_000, 600, 600, end=end)
    assert rate == 100.0 and projected == 600 and at is None


@pytest.mark.parametrize("credits", [2**53 - 1, 2**53 - 3, 2**31 + 7, 9_007_199_254_740_001])
def test_huge_numbers_are_exact(credits: int) -> None:
    # Over a 7-day window with 7 days minus a microsecond left, a float computation of
    # credits * left / length is off by one or more; the integer one is exact.
    end = NOW + 7 * DAY - 1
    used = 5
    _, projected, _ = check(2**53 - 1, used, credits, end=end)
    exact = used + credits * (7 * DAY - 1) // (7 * DAY)
    assert projected == min(exact, MAX_PROJECTION)


def test_a_projection_beyond_safe_int_saturates() -> None:
    _, projected, _ = check(2**53 - 1, 2**53 - 10, 2**52)
    assert projected == MAX_PROJECTION == 2**53 - 1

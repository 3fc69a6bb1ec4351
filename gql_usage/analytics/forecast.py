"""A credit pool's forecast (SPEC 6.3, ``CreditPool.forecast``): pure arithmetic on
integers, no database.

The burn rate is measured over the window ``[max(periodStart, now - 7 days), min(now,
periodEnd))``: the last seven days, or the period so far when it began less than seven days
ago (and never past the period's end). A window shorter than one hour measures nothing:
rate 0, no exhaustion. Projections are exact integer arithmetic on microseconds, so that
totals past 2^53 stay exact and rounding happens once, where the contract says.
"""

from __future__ import annotations

from dataclasses import dataclass

from gql_usage.calendar import DAY_S, HOUR_S, US

DAY_US = DAY_S * US
#: How far back the burn rate looks.
WINDOW_US = 7 * DAY_US
#: A shorter window gives no burn rate (0) and no exhaustion instant.
MIN_WINDOW_US = HOUR_S * US
#: The largest ``SafeInt``: a projection beyond it is reported as this (saturated).
MAX_PROJECTION = 2**53 - 1


@dataclass(frozen=True)
class Window:
    """``[start_us, end_us)``: where the burn rate is measured."""

    start_us: int
    end_us: int

    @property
    def length_us(self) -> int:
        return self.end_us - self.start_us


def burn_window(period_start_us: int, period_end_us: int, now_us: int) -> Window | None:
    """The burn-rate window of a period at ``now_us``; None when shorter than an hour
    (the period began less than an hour ago, has not begun, or ``now`` is past its end
    by more than six days and 23 hours)."""
    start = max(period_start_us, now_us - WINDOW_US)
    end = min(now_us, period_end_us)
    if end - start < MIN_WINDOW_US:
        return None
    return Window(start, end)


@dataclass(frozen=True)
class Forecast:
    burn_rate_per_day: float
    projected_used: int
    exhausts_at_us: int | None


def forecast(*, granted: int, used: int, window: Window | None, window_credits: int,
             period_end_us: int, now_us: int) -> Forecast:
    """The pool's forecast at ``now_us``.

    - ``burn_rate_per_day``: ``window_credits`` per 24 hours of the window (0 without one).
    - ``projected_used``: ``used`` plus the burn rate times the days left in the period
      (``periodEnd - now``, fractional, none once the period is over), rounded down;
      saturated at 2^53 - 1.
    - ``exhausts_at_us``: when the remaining credits (``granted - used``) run out at the
      burn rate, rounded up to the microsecond (the first instant they are used up), if
      strictly before the period's end; None for a pool already used up, a rate of 0, or a
      later instant.
    """
    if window is None or window_credits <= 0:
        return Forecast(0.0, min(used, MAX_PROJECTION), None)
    length = window.length_us
    rate = window_credits * DAY_US / length
    left_us = max(period_end_us - now_us, 0)
    # used + (credits / length) * left, rounded down: exact in integers.
    projected = used + window_credits * left_us // length
    remaining = granted - used
    exhausts: int | None = None
    if remaining > 0:
        at = now_us - (-remaining * length // window_credits)  # ceiling division
        if at < period_end_us:
            exhausts = at
    return Forecast(rate, min(projected, MAX_PROJECTION), exhausts)

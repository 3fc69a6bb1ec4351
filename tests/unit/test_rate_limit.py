"""The rate limiter (``gql_usage/graphql/limits/rate_limit.py``) on its in-memory storage,
with a settable clock: no database, no server, no Redis."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from gql_usage.graphql.limits.rate_limit import (
    REFUSAL_POINTS,
    Budget,
    RateLimiter,
    _ClockedMemoryStorage,
    _redacted,
    rate_limit_headers,
    viewer_key,
)

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z
VIEWER = (7, 42)


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_a_fresh_budget_is_whole_and_would_start_now() -> None:
    clock = Clock()
    limiter = RateLimiter(100, clock=clock)
    assert await limiter.peek(VIEWER) == Budget(100, 0, T0 + 60)
    clock.now += 10  # no window yet: it would still start now
    assert await limiter.peek(VIEWER) == Budget(100, 0, T0 + 70)
    assert await limiter.check() is True


async def test_charges_spend_the_budget_until_it_no_longer_fits() -> None:
    clock = Clock()
    limiter = RateLimiter(100, clock=clock)
    assert await limiter.charge(VIEWER, 30) == (True, Budget(100, 30, T0 + 60))
    clock.now += 5
    assert await limiter.peek(VIEWER) == Budget(100, 30, T0 + 60)  # the window started at T0
    # 80 does not fit in the 70 left: refused, and nothing is spent.
    assert await limiter.charge(VIEWER, 80) == (False, Budget(100, 30, T0 + 60))
    assert await limiter.charge(VIEWER, 70) == (True, Budget(100, 100, T0 + 60))
    charged, budget = await limiter.charge(VIEWER, 1)
    assert (charged, budget.used, budget.remaining) == (False, 100, 0)
    assert await limiter.charge(VIEWER, 0) == (True, Budget(100, 100, T0 + 60))


async def test_a_cost_above_the_whole_budget_is_refused_even_when_fresh() -> None:
    limiter = RateLimiter(100, clock=Clock())
    assert await limiter.charge(VIEWER, 101) == (False, Budget(100, 0, T0 + 60))
    assert await limiter.charge(VIEWER, 100) == (True, Budget(100, 100, T0 + 60))


async def test_the_window_resets_60_seconds_after_its_first_charge() -> None:
    clock = Clock()
    limiter = RateLimiter(100, clock=clock)
    clock.now = T0 + 10
    await limiter.charge(VIEWER, 90)
    clock.now = T0 + 69.5
    assert await limiter.peek(VIEWER) == Budget(100, 90, T0 + 70)
    assert (await limiter.charge(VIEWER, 20))[0] is False
    clock.now = T0 + 70  # the window has ended
    assert await limiter.peek(VIEWER) == Budget(100, 0, T0 + 130)
    assert await limiter.charge(VIEWER, 20) == (True, Budget(100, 20, T0 + 130))
    clock.now = T0 + 129
    assert await limiter.peek(VIEWER) == Budget(100, 20, T0 + 130)


async def test_viewers_have_budgets_of_their_own() -> None:
    limiter = RateLimiter(100, clock=Clock())
    await limiter.charge((7, 42), 100)
    assert await limiter.charge((7, 43), 60) == (True, Budget(100, 60, T0 + 60))
    assert await limiter.charge((8, 42), 60) == (True, Budget(100, 60, T0 + 60))
    assert (await limiter.peek((7, 42))).remaining == 0
    viewer = SimpleNamespace(account=SimpleNamespace(id=7), user=SimpleNamespace(id=42))
    assert viewer_key(viewer) == (7, 42)


async def test_refusals_pay_a_fixed_fee_until_it_no_longer_fits() -> None:
    assert REFUSAL_POINTS == 100  # README, 'Limits': "charged a fixed 100 points"
    limiter = RateLimiter(250, clock=Clock())
    assert (await limiter.charge(VIEWER, REFUSAL_POINTS))[0] is True
    assert (await limiter.charge(VIEWER, REFUSAL_POINTS))[0] is True
    charged, budget = await limiter.charge(VIEWER, REFUSAL_POINTS)
    assert (charged, budget.used, budget.remaining) == (False, 200, 50)


async def test_a_custom_window_length() -> None:
    clock = Clock()
    limiter = RateLimiter(10, clock=clock, window_seconds=5)
    assert await limiter.charge(VIEWER, 10) == (True, Budget(10, 10, T0 + 5))
    clock.now = T0 + 5
    assert await limiter.charge(VIEWER, 10) == (True, Budget(10, 10, T0 + 10))


def test_points_must_be_positive() -> None:
    for points in (0, -1):
        with pytest.raises(ValueError, match="points must be positive"):
            RateLimiter(points)


def test_headers_and_budget_figures() -> None:
    budget = Budget(limit=100, used=30, reset_at=T0 + 60.2)
    assert rate_limit_headers(budget, 7) == {
        "X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "70",
        "X-RateLimit-Used": "30", "X-RateLimit-Reset": "1800000061", "X-Query-Cost": "7"}
    assert budget.reset_datetime() == datetime(2027, 1, 15, 8, 1, 0, 200_000, tzinfo=UTC)
    assert Budget(100, 130, T0).remaining == 0  # never negative


async def test_the_memory_storage_drops_ended_windows_once_it_holds_10000() -> None:
    clock = Clock()
    storage = _ClockedMemoryStorage(clock)
    for i in range(10_000):
        assert await storage.incr(f"k{i}", 60, 3) == 3
    assert len(storage.expirations) == 10_000
    clock.now = T0 + 30
    await storage.incr("late", 60)  # full, but no window has ended: none dropped
    assert len(storage.expirations) == 10_001
    clock.now = T0 + 60
    assert await storage.get("k0") == 0
    assert await storage.get("late") == 1
    assert await storage.incr("new", 60, 2) == 2
    assert set(storage.expirations) == {"late", "new"}
    assert await storage.get_expiry("late") == T0 + 90
    assert await storage.get_expiry("gone") == T0 + 60  # no window: it ends now


def test_store_urls_are_logged_without_their_password() -> None:
    assert _redacted("redis://:s3cret@cache:6379/0") == "redis://:***@cache:6379/0"
    assert _redacted("redis://app:s3cret@cache:6379/0") == "redis://app:***@cache:6379/0"
    assert _redacted("redis://cache:6379/0") == "redis://cache:6379/0"
    assert _redacted("memory://") == "memory://"

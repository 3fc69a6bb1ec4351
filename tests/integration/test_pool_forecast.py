"""``CreditPool.forecast`` (SPEC 6.3) on both databases, at a fixed "now" (the app's clock):
burn rate, projection and exhaustion checked against values this test computes from the
events it sent (plain Python, exact fractions)."""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

import httpx
from support.config import make_settings
from support.helpers import event, gql, ingest, make_account

from gql_usage.app import create_app
from gql_usage.storage.db import StatementCounter

US = 1_000_000
DAY_US = 86_400 * US
NOW = datetime(2026, 1, 20, 12, 0, tzinfo=UTC)
POOL = """{ account { creditPool { granted used remaining overage periodStart periodEnd
  forecast { burnRatePerDay projectedUsed exhaustsAt } } } }"""


def us(value: datetime) -> int:
    return (value - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


@contextlib.asynccontextmanager
async def app_at(db_url: str, now: datetime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(db_url), manage_db=False, clock=lambda: now.timestamp())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as client:
        yield client


async def pool_at(client: httpx.AsyncClient, events: Sequence[dict[str, Any]], *,
                  start: datetime, end: datetime, granted: int) -> dict[str, Any]:
    await make_account(client, "acme", users=[("admin", "ADMIN")], keys=["k1", "k2"],
                       granted=granted, period=(start.isoformat(), end.isoformat()))
    for i in range(0, len(events), 40):  # several batches: cube and pending rows mixed
        assert (await ingest(client, events[i:i + 40]))["accepted"] == len(events[i:i + 40])
    body = await gql(client, POOL)
    assert "errors" not in body, body
    pool: dict[str, Any] = body["data"]["account"]["creditPool"]
    return pool


def expected(events: Sequence[dict[str, Any]], *, start: datetime, end: datetime,
             now: datetime, granted: int) -> dict[str, Any]:
    """The contract over the raw events: [max(start, now - 7 days), now) is the window."""
    def credits(lo: datetime, hi: datetime) -> int:
        return sum(e["credits"] for e in events
                   if lo <= datetime.fromisoformat(e["occurredAt"]) < hi)

    used = credits(start, end)
    lo, hi = max(start, now - timedelta(days=7)), min(now, end)
    if hi - lo < timedelta(hours=1) or credits(lo, hi) == 0:
        rate, exhausts = Fraction(0), None
    else:
        rate = Fraction(credits(lo, hi) * DAY_US, us(hi) - us(lo))
        exhausts = None
        if granted > used:
            at = us(now) + math.ceil(Fraction(granted - used) / rate * DAY_US)
            exhausts = at if at < us(end) else None
    days_left = Fraction(max(us(end) - us(now), 0), DAY_US)
    return {"used": used, "remaining": max(granted - used, 0),
            "overage": max(used - granted, 0), "burnRatePerDay": float(rate),
            "projectedUsed": math.floor(used + rate * days_left), "exhaustsAt": exhausts}


def actual(pool: dict[str, Any]) -> dict[str, Any]:
    f = pool["forecast"]
    at = f["exhaustsAt"]
    return {"used": pool["used"], "remaining": pool["remaining"], "overage": pool["overage"],
            "burnRatePerDay": f["burnRatePerDay"], "projectedUsed": f["projectedUsed"],
            "exhaustsAt": None if at is None else us(datetime.fromisoformat(at))}


def spread(rng: random.Random, n: int, lo: datetime, hi: datetime, prefix: str,
           max_credits: int = 50) -> list[dict[str, Any]]:
    """``n`` events at random microseconds of [lo, hi)."""
    span = us(hi) - us(lo)
    return [event(f"{prefix}{i}", "acme", rng.choice(["k1", "k2"]), "admin", "/v2/person",
                  "api", rng.randrange(max_credits),
                  lo + timedelta(microseconds=rng.randrange(span))) for i in range(n)]


async def test_burn_rate_counts_the_last_seven_days_only(db_url: str) -> None:
    rng = random.Random(61)
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
    window = NOW - timedelta(days=7)
    events = (spread(rng, 120, start, window, "before-window-")      # in the period, not window
              + spread(rng, 150, window, NOW, "in-window-")
              + spread(rng, 20, NOW, end, "after-now-")              # later than "now"
              + spread(rng, 30, start - timedelta(days=20), start, "before-period-")
              # right at the window's edges, to the microsecond
              + [event("edge-in", "acme", "k1", "admin", "/v2/x", "api", 1000, window),
                 event("edge-out", "acme", "k1", "admin", "/v2/x", "api", 2000,
                       window - timedelta(microseconds=1)),
                 event("at-now", "acme", "k2", "admin", "/v2/x", "api", 4000, NOW)])
    in_period = sum(e["credits"] for e in events if not e["id"].startswith("before-period"))
    granted = in_period + 3_000  # a few days' worth left: runs out before the end
    async with app_at(db_url, NOW) as client:
        pool = await pool_at(client, events, start=start, end=end, granted=granted)
    want = expected(events, start=start, end=end, now=NOW, granted=granted)
    assert actual(pool) == want
    assert want["burnRatePerDay"] > 0 and want["exhaustsAt"] is not None


async def test_a_period_begun_within_seven_days_is_the_window(db_url: str) -> None:
    rng = random.Random(62)
    start, end = NOW - timedelta(days=2, hours=5), NOW + timedelta(days=20)
    events = (spread(rng, 100, start, NOW, "in-")
              + spread(rng, 40, start - timedelta(days=6), start, "last-period-"))
    granted = 1_000_000  # lasts well past the period's end: no exhaustion
    async with app_at(db_url, NOW) as client:
        pool = await pool_at(client, events, start=start, end=end, granted=granted)
    want = expected(events, start=start, end=end, now=NOW, granted=granted)
    assert actual(pool) == want
    assert want["exhaustsAt"] is None and want["projectedUsed"] > want["used"]
    # Computed by hand for once: the window is the 2 days 5 hours of the period.
    in_period = sum(e["credits"] for e in events if e["id"].startswith("in-"))
    assert pool["forecast"]["burnRatePerDay"] == in_period * 24 / 53


async def test_exhaustion_null_cases(db_url: str) -> None:
    rng = random.Random(63)
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
    events = spread(rng, 80, start, NOW, "e-", max_credits=100)
    total = sum(e["credits"] for e in events)
    async with app_at(db_url, NOW) as client:
        # Used up (overage): no exhaustion instant, though credits still burn.
        pool = await pool_at(client, events, start=start, end=end, granted=total - 7)
        assert actual(pool) == expected(events, start=start, end=end, now=NOW,
                                        granted=total - 7)
        assert pool["remaining"] == 0 and pool["overage"] == 7
        assert pool["forecast"]["exhaustsAt"] is None
        assert pool["forecast"]["burnRatePerDay"] > 0
        # Exactly used up: remaining 0, no overage, still null.
        pool = await pool_at(client, [], start=start, end=end, granted=total)
        assert (pool["remaining"], pool["overage"]) == (0, 0)
        assert pool["forecast"]["exhaustsAt"] is None


async def test_a_window_shorter_than_an_hour_has_no_rate(db_url: str) -> None:
    start, end = NOW - timedelta(minutes=59, seconds=59), NOW + timedelta(days=30)
    events = [event(f"e{i}", "acme", "k1", "admin", "/v2/person", "api", 100,
                    start + timedelta(minutes=i)) for i in range(50)]
    async with app_at(db_url, NOW) as client:
        pool = await pool_at(client, events, start=start, end=end, granted=6_000)
    assert pool["used"] == 5_000
    assert pool["forecast"] == {"burnRatePerDay": 0.0, "projectedUsed": 5_000,
                                "exhaustsAt": None}


async def test_forecast_shares_the_pool_statement(db_url: str) -> None:
    rng = random.Random(64)
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
    events = spread(rng, 60, start, NOW, "e-")
    async with app_at(db_url, NOW) as client:
        await pool_at(client, events, start=start, end=end, granted=10)
        counts = []
        for query in ("{ account { creditPool { used } } }",
                      "{ account { creditPool { used remaining overage "
                      "forecast { burnRatePerDay projectedUsed exhaustsAt } } } }",
                      "{ account { creditPool { forecast { projectedUsed } } } }"):
            with StatementCounter() as counter:
                body = await gql(client, query)
            assert "errors" not in body, body
            counts.append(counter.count)
    assert counts[0] == counts[1] == counts[2], counts

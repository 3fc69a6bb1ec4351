"""Rollups always equal an aggregation of the stored raw events, whatever the order,
duplication, lateness or concurrency of the batches that brought them."""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import pytest
import support.events
from support.events import KEYS, USERS
from support.helpers import ingest, make_account

from gql_usage.storage.cube import compact_all
from gql_usage.storage.db import connection
from gql_usage.storage.models import CUBE_SETS

pytestmark = pytest.mark.citus

THURSDAY = 3  # datetime.weekday()


def random_events(rng: random.Random, n: int) -> list[dict]:
    return support.events.random_events(rng, n, start=datetime(2025, 1, 1, tzinfo=UTC),
                                        days=400, credits=20)


def expected_cells(events: list[dict]) -> dict[tuple, tuple[int, int]]:
    """Calls and credits per cube row, by hand: for each grain (15-minute slot, UTC hour,
    UTC day and 7 days from a Thursday, as 1970-01-01 was one) and each of its grouping
    sets, per (unit start, key, endpoint, source, user), with "" standing for a dimension
    summed over."""
    cells: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    for e in events:
        t = datetime.fromisoformat(e["occurredAt"]).astimezone(UTC)
        slot = t.replace(minute=t.minute - t.minute % 15, second=0, microsecond=0)
        day = t.replace(hour=0, minute=0, second=0, microsecond=0)
        values = (e["apiKeyId"], e["endpoint"], e["source"], e["userId"])
        hour = t.replace(minute=0, second=0, microsecond=0)
        week = day - timedelta(days=(day.weekday() - THURSDAY) % 7)
        for grain, start in ((900, slot), (3600, hour), (86400, day), (604800, week)):
            for dims in CUBE_SETS[grain]:
                kept = tuple(v if dims & (1 << i) else "" for i, v in enumerate(values))
                cell = cells[(grain, dims, int(start.timestamp()), *kept)]
                cell[0] += 1
                cell[1] += e["credits"]
    return {k: (v[0], v[1]) for k, v in cells.items()}


async def stored_cells() -> dict[tuple, tuple[int, int]]:
    """The cube after folding in every pending event."""
    await compact_all(cube_after_events=0)
    _, rows = await connection().execute_query(
        "SELECT c.grain, c.dims, c.t, COALESCE(k.external_id, ''), COALESCE(e.path, ''), "
        "COALESCE(s.key, ''), COALESCE(u.external_id, ''), c.calls, c.credits "
        "FROM usage_cube c"
        # Joins of per-account tables name the account (Citus joins them shard by shard).
        " LEFT JOIN api_key k ON k.account_id = c.account_id AND k.id = c.api_key_id"
        " LEFT JOIN endpoint e ON e.id = c.endpoint_id LEFT JOIN source s ON s.id = c.source_id"
        " LEFT JOIN app_user u ON u.account_id = c.account_id AND u.id = c.user_id")
    return {(int(r[0]), int(r[1]), int(r[2]), r[3], r[4], r[5], r[6]): (int(r[7]), int(r[8]))
            for r in rows}


async def test_rollups_equal_the_raw_events_under_duplicates_lateness_and_concurrency(client):
    await make_account(client, "acme", users=USERS, keys=KEYS)
    rng = random.Random(20261125)
    events = random_events(rng, 4000)
    # Deliveries: every event at least once, 25% twice; shuffled, so old events arrive
    # late after newer ones; sent as concurrent batches of varying size.
    deliveries = events + rng.sample(events, len(events) // 4)
    rng.shuffle(deliveries)
    batches = []
    i = 0
    while i < len(deliveries):
        size = rng.randrange(50, 700)
        batches.append(deliveries[i:i + size])
        i += size
    results = []
    for wave in range(0, len(batches), 4):
        results += await asyncio.gather(*(ingest(client, b) for b in batches[wave:wave + 4]))
    assert sum(r["accepted"] for r in results) == len(events)
    assert sum(r["duplicates"] for r in results) == len(deliveries) - len(events)
    assert all(r["rejected"] == [] for r in results)
    assert await stored_cells() == expected_cells(events)


async def test_racing_requests_with_the_same_events_count_each_once(client):
    await make_account(client, "acme", users=USERS, keys=KEYS)
    events = random_events(random.Random(7), 600)
    results = await asyncio.gather(*(ingest(client, events) for _ in range(6)))
    assert sum(r["accepted"] for r in results) == 600
    assert sum(r["duplicates"] for r in results) == 5 * 600
    assert await stored_cells() == expected_cells(events)
    _, rows = await connection().execute_query("SELECT COUNT(*) FROM usage_event")
    assert int(rows[0][0]) == 600
    per_id = Counter(e["id"] for e in events)
    assert set(per_id.values()) == {1}

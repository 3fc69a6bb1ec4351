"""The adaptive cube (``gql_usage.storage.cube``): an account enters the cube only after
``cube_after_events`` events; before, its questions are answered from its raw events and
compaction only counts and drops its pending copies. Answers are exact on both databases
while the account is raw with events pending, at the round that brings it in, and after
(cube rows plus pending events); the cube then holds exactly its hand-computed cells."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import pytest
import support.events
from support.events import KEYS, USERS, when
from support.helpers import SERVICE, gid, gql, make_account
from test_exactness import expected_cells, stored_cells

from gql_usage.storage.cube import compact
from gql_usage.storage.db import connection

pytestmark = pytest.mark.citus

START = datetime(2025, 3, 1, tzinfo=UTC)
FROM, TO = "2025-03-01T05:03:00Z", "2025-04-20T07:03:00Z"  # partial days at both ends
QUERY = """query($f: UsageFilter!) { account { usage(filter: $f) {
  calls credits
  series(granularity: DAY) { start calls credits }
  byKey: breakdown(by: API_KEY) { key calls credits }
  byEndpoint: breakdown(by: ENDPOINT) { key calls credits }
} } }"""


def _events(rng: random.Random, n: int, prefix: str) -> list[dict[str, Any]]:
    return support.events.random_events(rng, n, start=START, days=50, credits=20,
                                        prefix=prefix)


def expected(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The answer to ``QUERY``, by hand from the events sent."""
    lo, hi = datetime.fromisoformat(FROM), datetime.fromisoformat(TO)
    inside = [e for e in events if lo <= when(e) < hi]
    days: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    keys: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    endpoints: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for e in inside:
        for table, k in ((days, when(e).date().isoformat()), (keys, gid("ApiKey", e["apiKeyId"])),
                         (endpoints, e["endpoint"])):
            table[k][0] += 1
            table[k][1] += e["credits"]
    return {"calls": len(inside), "credits": sum(e["credits"] for e in inside),
            "days": {k: tuple(v) for k, v in days.items()},
            "byKey": {k: tuple(v) for k, v in keys.items()},
            "byEndpoint": {k: tuple(v) for k, v in endpoints.items()}}


async def answer(client: Any) -> dict[str, Any]:
    body = await gql(client, QUERY, {"f": {"from": FROM, "to": TO}})
    assert "errors" not in body, body
    usage = body["data"]["account"]["usage"]
    return {"calls": usage["calls"], "credits": usage["credits"],
            "days": {p["start"][:10]: (p["calls"], p["credits"]) for p in usage["series"]
                     if p["calls"]},
            "byKey": {r["key"]: (r["calls"], r["credits"]) for r in usage["byKey"]},
            "byEndpoint": {r["key"]: (r["calls"], r["credits"]) for r in usage["byEndpoint"]}}


async def post(client: Any, events: list[dict[str, Any]]) -> None:
    """The batch through the service API, without the test helper's compaction."""
    r = await client.post("/v1/usage-events", json=events, headers=SERVICE)
    assert r.status_code == 200 and r.json()["accepted"] == len(events), r.text


async def scalar(sql: str) -> int:
    _, rows = await connection().execute_query(sql)
    return int(rows[0][0])


async def account_state() -> tuple[int, int] | None:
    _, rows = await connection().execute_query(
        "SELECT c.events, c.cubed FROM usage_cube_account c JOIN account a "
        "ON a.id = c.account_id WHERE a.external_id = 'acme'")
    return (int(rows[0][0]), int(rows[0][1])) if rows else None


async def test_a_small_account_is_answered_from_raw_events_until_it_enters_the_cube(client):
    await make_account(client, "acme", users=USERS, keys=KEYS)
    rng = random.Random(1414)
    first, second, third = (_events(rng, n, p) for n, p in ((150, "a"), (120, "b"), (90, "c")))
    threshold = 200

    await post(client, first)
    assert await account_state() is None           # never compacted: raw, all pending
    assert await answer(client) == expected(first)
    assert await compact(threshold) == 150         # counted and dropped, not folded
    assert await account_state() == (150, 0)
    assert await scalar("SELECT COUNT(*) FROM usage_cube") == 0
    assert await scalar("SELECT COUNT(*) FROM usage_pending") == 0
    assert await answer(client) == expected(first)

    await post(client, second)                     # raw, with pending copies: not twice
    assert await answer(client) == expected(first + second)
    assert await compact(threshold) == 120         # 270 events: the account enters
    assert await account_state() == (270, 1)
    assert await scalar("SELECT COUNT(*) FROM usage_pending") == 0
    assert await stored_cells() == expected_cells(first + second)
    assert await answer(client) == expected(first + second)

    await post(client, third)                      # in the cube, with pending events
    assert await answer(client) == expected(first + second + third)
    assert await compact(threshold) == 90
    assert await account_state() == (270, 1)       # counted only while raw
    assert await stored_cells() == expected_cells(first + second + third)
    assert await answer(client) == expected(first + second + third)


async def test_an_account_entering_the_cube_with_events_still_pending_counts_each_once(client):
    """Events stored after the round's first statement took its rows are still pending
    when the account enters: they are deleted with its other pending copies and built
    from the raw events (one snapshot), never folded again."""
    await make_account(client, "acme", users=USERS, keys=KEYS)
    rng = random.Random(99)
    events = _events(rng, 300, "x")
    for i in range(0, 300, 60):
        await post(client, events[i:i + 60])
        await compact(100)
        assert await answer(client) == expected(events[:i + 60])
    assert await account_state() == (120, 1)
    assert await stored_cells() == expected_cells(events)

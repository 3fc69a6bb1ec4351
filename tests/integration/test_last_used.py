"""``ApiKey.lastUsedAt`` (SPEC 6.3): the ``occurredAt`` of the key's newest event, kept in
``api_key.last_used_at_us`` by ingestion (one more statement per batch on SQLite, none on
PostgreSQL), on both databases: out-of-order batches, resent duplicates, conflicting
resends, keys without events and concurrent batches, checked against the newest instant
this test computes from the events it sent; and the migration's backfill of old keys."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.database import connect
from support.helpers import event, gid, gql, ingest, make_account
from support.pg_server import create_database, drop_database
from tortoise import Tortoise
from tortoise.migrations.api import migrate

from gql_usage.storage.db import StatementCounter, connection, dialect, tortoise_config
from gql_usage.storage.distribution import distributed

pytestmark = pytest.mark.citus

KEYS = ["k1", "k2", "k3", "k4", "k5"]
T0 = datetime(2026, 1, 1, tzinfo=UTC)
LAST_USED = "{ account { apiKeys { name lastUsedAt } } }"


def at(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


async def last_used(client: httpx.AsyncClient) -> dict[str, datetime | None]:
    body = await gql(client, LAST_USED)
    assert "errors" not in body, body
    return {k["name"]: at(k["lastUsedAt"]) for k in body["data"]["account"]["apiKeys"]}


def newest(events: list[dict[str, Any]]) -> dict[str, datetime | None]:
    """Per key, the newest ``occurredAt`` of the events (first version of each id)."""
    first: dict[str, dict[str, Any]] = {}
    for e in events:
        first.setdefault(e["id"], e)
    out: dict[str, datetime | None] = {f"Key {k}": None for k in KEYS}
    for e in first.values():
        when = datetime.fromisoformat(e["occurredAt"])
        name = f"Key {e['apiKeyId']}"
        if out[name] is None or when > out[name]:  # type: ignore[operator]
            out[name] = when
    return out


def random_events(rng: random.Random, n: int, prefix: str, keys: list[str]) -> list[dict]:
    return [event(f"{prefix}{i}", "acme", rng.choice(keys), "admin", "/v2/person", "api",
                  rng.randrange(10), T0 + timedelta(microseconds=rng.randrange(60 * 86400 * 10**6)))
            for i in range(n)]


async def test_newest_event_wins_in_any_order(client: httpx.AsyncClient) -> None:
    rng = random.Random(81)
    await make_account(client, "acme", users=[("admin", "ADMIN")], keys=KEYS)
    events = random_events(rng, 600, "e", KEYS[:4])  # k5 never used
    sent: list[dict[str, Any]] = []
    for i in range(0, 600, 60):  # batches in random time order, each one shuffled
        batch = events[i:i + 60]
        rng.shuffle(batch)
        await ingest(client, batch)
        sent += batch
        assert await last_used(client) == newest(sent)
    assert (await last_used(client))["Key k5"] is None
    # An older batch arriving late changes nothing.
    late = [event(f"late{i}", "acme", k, "admin", "/v2/person", "api", 1, T0 - timedelta(days=1))
            for i, k in enumerate(KEYS[:4])]
    await ingest(client, late)
    assert await last_used(client) == newest(sent + late)
    # The same through node(id:).
    body = await gql(client, 'query($id: ID!) { node(id: $id) { ... on ApiKey { lastUsedAt } } }',
                     {"id": gid("ApiKey", "k1")})
    assert at(body["data"]["node"]["lastUsedAt"]) == newest(sent)["Key k1"]


async def test_resent_and_conflicting_events_do_not_move_it(client: httpx.AsyncClient) -> None:
    rng = random.Random(82)
    await make_account(client, "acme", users=[("admin", "ADMIN")], keys=KEYS)
    events = random_events(rng, 300, "e", KEYS)
    await ingest(client, events)
    before = await last_used(client)
    assert before == newest(events)
    # Resent whole, and again with each event twice in the batch: all duplicates.
    result = await ingest(client, events)
    assert (result["accepted"], result["duplicates"]) == (0, 300)
    result = await ingest(client, events[:50] + events[:50])
    assert (result["accepted"], result["duplicates"]) == (0, 100)
    assert await last_used(client) == before
    # The same ids with a later occurredAt (or another key): rejected, never counted.
    later = [{**e, "occurredAt": (T0 + timedelta(days=400)).isoformat()} for e in events[:20]]
    moved = [{**e, "apiKeyId": "k5", "occurredAt": (T0 + timedelta(days=401)).isoformat()}
             for e in events[20:40]]
    result = await ingest(client, later + moved)
    assert result["accepted"] == 0 and len(result["rejected"]) == 40
    assert await last_used(client) == before
    # A batch mixing new events and resent ones: only the new ones count.
    fresh = random_events(rng, 30, "fresh", ["k2"])
    await ingest(client, events[:100] + fresh)
    assert await last_used(client) == newest(events + fresh)


async def test_concurrent_batches_keep_the_newest(client: httpx.AsyncClient) -> None:
    rng = random.Random(83)
    await make_account(client, "acme", users=[("admin", "ADMIN")], keys=KEYS)
    # 24 batches at once (on PostgreSQL over several pooled connections), every one
    # touching every key in its own order, with overlapping ids (resends racing their
    # first delivery).
    events = random_events(rng, 2_400, "c", KEYS)
    batches = []
    for b in range(24):
        batch = events[b * 100:(b + 1) * 100] + rng.sample(events, 20)
        rng.shuffle(batch)
        batches.append(batch)
    results = await asyncio.gather(*(client.post(
        "/v1/usage-events", json=batch, headers={"Authorization": "Bearer test-service-token"})
        for batch in batches))
    assert all(r.status_code == 200 for r in results), [r.text for r in results]
    assert sum(r.json()["accepted"] for r in results) == 2_400
    assert await last_used(client) == newest(events)


async def test_it_costs_no_statement_on_postgres_and_one_on_sqlite(
        client: httpx.AsyncClient) -> None:
    rng = random.Random(84)
    await make_account(client, "acme", users=[("admin", "ADMIN")], keys=KEYS)
    await ingest(client, random_events(rng, 10, "warm", KEYS))  # id caches warm
    with StatementCounter() as counter:
        await client.post("/v1/usage-events", json=random_events(rng, 1_000, "e", KEYS),
                          headers={"Authorization": "Bearer test-service-token"})
    updates = [s for s in counter.statements if "last_used_at_us" in s]
    if await distributed(connection()):
        # Citus: the keys' router statement of the batch's one account (docs/citus.md).
        assert len(updates) == 1 and "touched AS (UPDATE api_key" in updates[0]
    elif dialect(connection()) == "postgres":
        assert len(updates) == 1 and "INSERT INTO usage_event" in updates[0]
    else:
        assert len(updates) == 1 and updates[0].lstrip().startswith("UPDATE api_key")


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_the_migration_fills_it_for_old_keys(backend: str, tmp_path: Path,
                                                   request: pytest.FixtureRequest) -> None:
    """A database at migration 0003 with events: 0004 gives each key its newest event's
    instant, a key without events NULL, and every account the default thresholds."""
    if backend == "sqlite":
        url = f"sqlite://{tmp_path / 'old.sqlite3'}"
        base = None
    else:
        base = request.getfixturevalue("pg_base_url")
        url = create_database(base, "pool_migration")
    try:
        await migrate(config=tortoise_config(url), target="models.0003_optional_user_event_lookup")
        await Tortoise.close_connections()
        await connect(url)
        conn = connection()
        await conn.execute_script(
            "INSERT INTO account (id, external_id, name, plan, time_zone, credits_granted, "
            "period_start, period_end, updated_at) VALUES (1, 'acme', 'A', 'PRO', 'UTC', 0, "
            "'2026-01-01 00:00:00+00:00', '2026-02-01 00:00:00+00:00', "
            "'2026-01-01 00:00:00+00:00');"
            "INSERT INTO api_key (id, account_id, external_id, name, prefix, created_at) VALUES "
            "(1, 1, 'k1', 'K1', 'p', '2026-01-01 00:00:00+00:00'), "
            "(2, 1, 'k2', 'K2', 'p', '2026-01-01 00:00:00+00:00'), "
            "(3, 1, 'k3', 'K3', 'p', '2026-01-01 00:00:00+00:00');")
        rng = random.Random(85)
        rows = [(i, rng.choice([1, 2]), rng.randrange(-10**15, 10**16)) for i in range(500)]
        values = ", ".join(f"(1, 'e{i}', {k}, 1, 1, NULL, 1, {t}, 0)" for i, k, t in rows)
        await conn.execute_script(
            "INSERT INTO usage_event (account_id, event_id, api_key_id, endpoint_id, "
            f"source_id, user_id, credits, occurred_at_us, received_at_us) VALUES {values}")
        await Tortoise.close_connections()
        await migrate(config=tortoise_config(url))
        await Tortoise.close_connections()
        await connect(url)
        got = await connection().execute_query_dict(
            "SELECT id, last_used_at_us, credit_budget FROM api_key ORDER BY id")
        want = {k: max((t for _, key, t in rows if key == k), default=None) for k in (1, 2, 3)}
        assert {r["id"]: r["last_used_at_us"] for r in got} == want
        assert want[3] is None and all(r["credit_budget"] is None for r in got)
        account = await connection().execute_query_dict("SELECT alert_thresholds FROM account")
        assert account == [{"alert_thresholds": "[80, 100]"}]
    finally:
        await Tortoise.close_connections()
        if base is not None:
            drop_database(base, "pool_migration")

"""A resent batch stays fast as the data grows: the duplicate lookup (the stored versions
of the resent events) is one probe of the unique index (event_id, account_id) per event,
in every statistics state, never a read of the account's rows through the
(account_id, occurred_at_us) index with the id list as a filter (which took 28 s on a
never-analyzed table of 2.86 M rows)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from gql_usage.ingest.rows import Row
from gql_usage.ingest.storage import lookup_sql, stored_contents
from gql_usage.ingest.store_postgres import POSTGRES_LOOKUP_SETTINGS
from gql_usage.storage.db import Sql, connection, dialect

ROWS = 200_000
UNIQUE = "usage_event_event_account"


def _rows(ids: range) -> list[Row]:
    return [Row(1, f"evt-{i}", 1, 1, 1, None, 1, i, n) for n, i in enumerate(ids)]


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    out = [plan]
    for child in plan.get("Plans", []):
        out += _nodes(child)
    return out


async def _plan(sql: Sql, settings: bool = True) -> list[dict[str, Any]]:
    from tortoise.transactions import in_transaction
    async with in_transaction("default") as tx:
        if settings:
            await tx.execute_script(POSTGRES_LOOKUP_SETTINGS)
        _, rows = await tx.execute_query("EXPLAIN (FORMAT JSON) " + sql.text, sql.params)
    plan = rows[0][0]
    return _nodes((json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"])


def _assert_unique_index_probes(nodes: list[dict[str, Any]], state: str) -> None:
    on_events = [n for n in nodes if n.get("Relation Name") == "usage_event"]
    assert on_events, (state, nodes)
    for n in on_events:
        assert n["Node Type"] == "Index Scan" and n["Index Name"] == UNIQUE, (state, n)
        assert "event_id" in n["Index Cond"] and "account_id" in n["Index Cond"], (state, n)
    assert {n["Node Type"] for n in nodes} <= {"Nested Loop", "Function Scan", "Index Scan"}, (
        state, [n["Node Type"] for n in nodes])


async def _load_without_statistics() -> None:
    conn = connection()
    await conn.execute_script("ALTER TABLE usage_event SET (autovacuum_enabled = false)")
    await conn.execute_script(
        "INSERT INTO usage_event (account_id, event_id, api_key_id, endpoint_id, source_id,"
        " user_id, credits, occurred_at_us, received_at_us)"
        f" SELECT 1, 'evt-' || g, 1, 1, 1, NULL, 1, g, 0 FROM generate_series(1, {ROWS}) g")


@pytest.mark.own_database  # drops or alters what other tests need
async def test_duplicate_lookup_probes_the_unique_index_whatever_the_statistics(db_url):
    conn = connection()
    wanted = _rows(range(5_000, 6_000))
    if dialect(conn) == "sqlite":
        await conn.execute_script(
            "INSERT INTO usage_event (account_id, event_id, api_key_id, endpoint_id, source_id,"
            " user_id, credits, occurred_at_us, received_at_us) WITH RECURSIVE g(n) AS"
            " (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 20000)"
            " SELECT 1, 'evt-' || n, 1, 1, 1, NULL, 1, n, 0 FROM g; ANALYZE")
        for q in lookup_sql("sqlite", wanted):
            _, plan = await conn.execute_query("EXPLAIN QUERY PLAN " + q.text, q.params)
            details = " ".join(str(tuple(r)[-1]) for r in plan)
            assert f"USING INDEX {UNIQUE} (event_id=? AND account_id=?)" in details, details
    else:
        await _load_without_statistics()
        [statement] = lookup_sql("postgres", wanted)
        # The state that misled the old statement (one bound parameter per id, the account
        # as a constant): never analyzed. It read the account's rows through the time index.
        old = Sql("postgres").add(
            "SELECT event_id, credits FROM usage_event WHERE account_id = ", 1, " AND ")
        old.in_list("event_id", [r.event_id for r in wanted])
        old_nodes = await _plan(old, settings=False)
        assert any(n.get("Index Name") == "usage_event_acc_time" for n in old_nodes)
        _assert_unique_index_probes(await _plan(statement), "never analyzed")
        states = {
            # Statistics claiming every account has one event (as if analyzed when the
            # table was young): the time index then looks as good as the unique one.
            "one event per account": [
                "ALTER TABLE usage_event ALTER COLUMN account_id SET (n_distinct = -1)",
                "ALTER TABLE usage_event ALTER COLUMN event_id SET (n_distinct = 1)",
                "ANALYZE usage_event"],
            # Statistics claiming the table is tiny: a sequential scan looks cheap.
            "tiny": ["UPDATE pg_class SET reltuples = 10, relpages = 1"
                     " WHERE relname = 'usage_event'"],
            "analyzed": [
                "ALTER TABLE usage_event ALTER COLUMN account_id RESET (n_distinct)",
                "ALTER TABLE usage_event ALTER COLUMN event_id RESET (n_distinct)",
                "ANALYZE usage_event"],
        }
        for state, statements in states.items():
            for s in statements:
                await conn.execute_script(s)
            _assert_unique_index_probes(await _plan(statement), state)
    started = time.perf_counter()
    stored = await stored_contents(wanted)
    assert time.perf_counter() - started < 5
    assert stored == {(1, r.event_id): (1, 1, 1, None, 1, r.occurred_at_us) for r in wanted}

"""Every PostgreSQL connection of the pool runs with JIT compilation off
(``storage.db.POSTGRES_SESSION``): an analytics statement whose estimated cost passes
``jit_above_cost`` was compiled on every request, most of a 365-day page's time."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import pytest
from tortoise.transactions import in_transaction

from gql_usage.storage.db import connection, dialect

pytestmark = pytest.mark.citus

#: Costly enough for JIT at ``jit_above_cost = 0``: any statement is.
STATEMENT = "SELECT sum(credits), count(*) FROM usage_event WHERE credits > 0"


def _jit_of(explained: Any) -> Any:
    plan = explained if not isinstance(explained, str) else json.loads(explained)
    return plan[0].get("JIT")


async def test_pool_connections_never_jit_compile(db_url: str) -> None:
    if dialect() != "postgres":
        pytest.skip("SQLite has no JIT")
    # The precondition: this server compiles such a statement on a plain connection.
    plain = await asyncpg.connect(db_url.replace("postgres://", "postgresql://", 1))
    try:
        async with plain.transaction():
            await plain.execute("SET LOCAL jit = on; SET LOCAL jit_above_cost = 0")
            compiled = _jit_of(await plain.fetchval(
                "EXPLAIN (ANALYZE, FORMAT JSON) " + STATEMENT))
    finally:
        await plain.close()
    if compiled is None:
        pytest.skip("this PostgreSQL has no JIT provider (llvmjit) installed")
    assert compiled["Functions"] > 0
    # The same on the service's pool: never compiled, on any of its connections.
    _, rows = await connection().execute_query("SHOW jit")
    assert rows[0][0] == "off"
    _, rows = await connection().execute_query("SHOW plan_cache_mode")
    assert rows[0][0] == "force_custom_plan"
    for _ in range(3):
        async with in_transaction("default") as tx:
            await tx.execute_script("SET LOCAL jit_above_cost = 0")
            _, rows = await tx.execute_query("EXPLAIN (ANALYZE, FORMAT JSON) " + STATEMENT)
        assert _jit_of(rows[0][0]) is None

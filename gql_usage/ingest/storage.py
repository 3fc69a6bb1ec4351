"""Duplicate lookup of either dialect."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gql_usage.db import Sql, connection, dialect, fetch_rows
from gql_usage.ingest.rows import _Row
from gql_usage.ingest.store_postgres import POSTGRES_LOOKUP, POSTGRES_LOOKUP_SETTINGS, _joined
from gql_usage.ingest.store_sqlite import SQLITE_LOOKUP, SQLITE_ROWS_PER_STATEMENT


def lookup_sql(d: str, rows: Sequence[_Row]) -> list[Sql]:
    """The statements reading the stored versions of ``rows`` (by account and event id)."""
    if d == "postgres":
        q = Sql(d).add(POSTGRES_LOOKUP)
        q.params.extend([_joined(r.account_id for r in rows), [r.event_id for r in rows]])
        return [q]
    by_account: dict[int, list[str]] = {}
    for r in rows:
        by_account.setdefault(r.account_id, []).append(r.event_id)
    out = []
    for account_id, ids in sorted(by_account.items()):
        for start in range(0, len(ids), SQLITE_ROWS_PER_STATEMENT):
            q = Sql(d).add(SQLITE_LOOKUP, account_id, " AND ")
            out.append(q.in_list("event_id", ids[start:start + SQLITE_ROWS_PER_STATEMENT]))
    return out


async def _stored_contents(rows: list[_Row]) -> dict[tuple[int, str], tuple[int | None, ...]]:
    conn = connection()
    d = dialect(conn)
    found: list[Sequence[Any]] = []
    if d == "postgres":
        # The settings hold for this transaction only. On a pooled asyncpg connection of
        # our own, not Tortoise's ``in_transaction``: its context variable outlived a
        # rollback that failed in a database crash, and the task's next statements went
        # to the dead transaction's released connection (a 500 instead of a 503).
        async with conn.acquire_connection() as raw, raw.transaction():
            await raw.execute(POSTGRES_LOOKUP_SETTINGS)
            for q in lookup_sql(d, rows):
                found += await raw.fetch(q.text, *q.params)
    else:
        for q in lookup_sql(d, rows):
            found += await fetch_rows(q, conn)
    return {(int(account_id), str(event_id)): tuple(None if c is None else int(c) for c in content)
            for account_id, event_id, *content in found}

"""Storage of resolved events in the connection's dialect, retried on lock conflicts."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import asyncpg
from tortoise.exceptions import OperationalError, TransactionManagementError

from gql_usage.ingest import store_postgres, store_sqlite
from gql_usage.ingest.rows import Row
from gql_usage.storage.db import Sql, connection, dialect

_RETRIES = 5


async def store(rows: list[Row]) -> list[Row]:
    """Insert ``rows`` (sorted, each id once) unless stored; returns those already stored.

    A deadlock, serialization failure or locked SQLite database is retried a few times.
    """
    attempts = 0
    while True:
        try:
            if dialect(connection()) == "postgres":
                return await store_postgres.store(rows)
            return await store_sqlite.store(rows)
        # Tortoise passes asyncpg's deadlock and serialization failures through untranslated
        # (TransactionRollbackError, SQLSTATE class 40); a Citus batch's own transaction
        # raises them from asyncpg directly.
        except (OperationalError, TransactionManagementError,
                asyncpg.exceptions.TransactionRollbackError) as exc:
            attempts += 1
            if attempts == _RETRIES or not _is_retryable(exc):
                raise
            await asyncio.sleep(0.01 * attempts)


def _is_retryable(exc: Exception) -> bool:
    text = str(exc).lower()
    return any(s in text for s in ("deadlock", "could not serialize", "database is locked"))


def lookup_sql(d: str, rows: Sequence[Row]) -> list[Sql]:
    """The statements reading the stored versions of ``rows`` (by account and event id)."""
    if d == "postgres":
        return [store_postgres.lookup_sql(rows)]
    return store_sqlite.lookup_sql(rows)


async def stored_contents(rows: list[Row]) -> dict[tuple[int, str], tuple[int | None, ...]]:
    """``Row.content`` of the stored version of each of ``rows`` that is stored."""
    conn = connection()
    if dialect(conn) == "postgres":
        found = await store_postgres.stored_versions(conn, rows)
    else:
        found = await store_sqlite.stored_versions(conn, rows)
    return {(int(account_id), str(event_id)): tuple(None if c is None else int(c) for c in content)
            for account_id, event_id, *content in found}

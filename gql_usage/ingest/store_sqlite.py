"""Events on SQLite: multi-row inserts in one transaction, and the duplicate lookup."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from gql_usage.alerts.record import record_sqlite
from gql_usage.alerts.wakeup import alerts_recorded
from gql_usage.ingest.rows import CONTENT_COLUMNS, EVENT_COLUMNS, Row, now_us
from gql_usage.storage import cube
from gql_usage.storage.db import Sql, Value, fetch_rows
from gql_usage.storage.models import NO_USER

SQLITE_ROWS_PER_STATEMENT = 1000


async def store(rows: list[Row]) -> list[Row]:
    """Events, their pending copies, their keys' last use, and the running totals and
    alerts they make (``gql_usage.alerts.record``) in one transaction; returns the rows
    that were already stored (in the order of ``rows``)."""
    async with in_transaction("default") as conn:
        received = now_us()
        inserted = await _insert_events(conn, rows, received)
        new: list[Row] = []
        stored_before: list[Row] = []
        for r in rows:
            (new if (r.account_id, r.event_id) in inserted else stored_before).append(r)
        await _insert_pending(conn, new)
        await _raise_last_used(conn, new)
        alerts = await record_sqlite(conn, new, received)
    if alerts:
        alerts_recorded()
    return stored_before


async def _insert_events(conn: BaseDBAsyncClient, rows: list[Row],
                         received: int) -> set[tuple[int, str]]:
    """Insert new events; returns the (account, event id) pairs that were new."""
    inserted: set[tuple[int, str]] = set()
    cols = ", ".join(EVENT_COLUMNS)
    tail = " ON CONFLICT (account_id, event_id) DO NOTHING RETURNING account_id, event_id"
    for start in range(0, len(rows), SQLITE_ROWS_PER_STATEMENT):
        chunk = rows[start:start + SQLITE_ROWS_PER_STATEMENT]
        q = Sql("sqlite").add(f"INSERT INTO usage_event ({cols}) VALUES ")
        for i, r in enumerate(chunk):
            q.add(", (" if i else "(", r.account_id, ", ", Value(r.event_id), ", ",
                  r.api_key_id, ", ", r.endpoint_id, ", ", r.source_id, ", ", r.user_id, ", ",
                  r.credits, ", ", r.occurred_at_us, ", ", received, ")")
        q.add(tail)
        result = await conn.execute_query_dict(q.text, q.params)
        inserted.update((int(r["account_id"]), str(r["event_id"])) for r in result)
    return inserted


async def _insert_pending(conn: BaseDBAsyncClient, rows: list[Row]) -> None:
    """The pending copies compaction folds into the cube (``gql_usage.storage.cube``)."""
    for start in range(0, len(rows), SQLITE_ROWS_PER_STATEMENT):
        q = Sql("sqlite").add(
            f"INSERT INTO usage_pending ({', '.join(cube.PENDING_COLUMNS)}) VALUES ")
        for i, r in enumerate(rows[start:start + SQLITE_ROWS_PER_STATEMENT]):
            user = NO_USER if r.user_id is None else r.user_id
            q.add(", (" if i else "(", r.account_id, ", ", r.api_key_id, ", ", r.endpoint_id,
                  ", ", r.source_id, ", ", user, ", ", r.credits, ", ",
                  r.occurred_at_us, ")")
        await conn.execute_query(q.text, q.params)


async def _raise_last_used(conn: BaseDBAsyncClient, rows: list[Row]) -> None:
    """Each key's ``last_used_at_us`` raised to its newest new event (``ApiKey.lastUsedAt``),
    in one statement: only events inserted now count (see ``store_postgres``). SQLite has
    one writer at a time, so concurrent batches take their turns."""
    newest: dict[int, int] = {}
    for r in rows:
        known = newest.get(r.api_key_id)
        if known is None or known < r.occurred_at_us:
            newest[r.api_key_id] = r.occurred_at_us
    if not newest:
        return
    q = Sql("sqlite", inline_ints=True).add(
        "UPDATE api_key SET last_used_at_us = MAX(coalesce(last_used_at_us, v.column2), "
        "v.column2) FROM (VALUES ")
    for i, (key_id, occurred) in enumerate(sorted(newest.items())):
        q.add(", (" if i else "(", key_id, ", ", occurred, ")")
    q.add(") AS v WHERE api_key.id = v.column1")
    await conn.execute_query(q.text, q.params)


#: The duplicate lookup through the unique index (event_id, account_id), named:
#: ``INDEXED BY`` fails rather than plan another way.
SQLITE_LOOKUP = (f"SELECT account_id, event_id, {', '.join(CONTENT_COLUMNS)} FROM usage_event"
                 " INDEXED BY usage_event_event_account WHERE account_id = ")


def lookup_sql(rows: Sequence[Row]) -> list[Sql]:
    """The statements reading the stored versions of ``rows``: per account, at most
    ``SQLITE_ROWS_PER_STATEMENT`` event ids each."""
    by_account: dict[int, list[str]] = {}
    for r in rows:
        by_account.setdefault(r.account_id, []).append(r.event_id)
    out = []
    for account_id, ids in sorted(by_account.items()):
        for start in range(0, len(ids), SQLITE_ROWS_PER_STATEMENT):
            q = Sql("sqlite").add(SQLITE_LOOKUP, account_id, " AND ")
            out.append(q.in_list("event_id", ids[start:start + SQLITE_ROWS_PER_STATEMENT]))
    return out


async def stored_versions(conn: BaseDBAsyncClient, rows: Sequence[Row]) -> list[Sequence[Any]]:
    """(account id, event id, *content) of the stored events among ``rows``."""
    found: list[Sequence[Any]] = []
    for q in lookup_sql(rows):
        found += await fetch_rows(q, conn)
    return found

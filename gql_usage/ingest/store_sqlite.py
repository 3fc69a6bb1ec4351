"""Storage of events on SQLite."""

from __future__ import annotations

from tortoise.backends.base.client import BaseDBAsyncClient

from gql_usage import cube
from gql_usage.db import Sql, Value
from gql_usage.ingest.rows import _CONTENT_COLUMNS, _EVENT_COLUMNS, _now_us, _Row
from gql_usage.models import NO_USER

SQLITE_ROWS_PER_STATEMENT = 1000


async def _insert_events_sqlite(conn: BaseDBAsyncClient, rows: list[_Row]) -> set[tuple[int, str]]:
    """Insert new events; returns the (account, event id) pairs that were new."""
    received = _now_us()
    inserted: set[tuple[int, str]] = set()
    cols = ", ".join(_EVENT_COLUMNS)
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


async def _insert_pending_sqlite(conn: BaseDBAsyncClient, rows: list[_Row]) -> None:
    for start in range(0, len(rows), SQLITE_ROWS_PER_STATEMENT):
        q = Sql("sqlite").add(
            f"INSERT INTO usage_pending ({', '.join(cube.PENDING_COLUMNS)}) VALUES ")
        for i, r in enumerate(rows[start:start + SQLITE_ROWS_PER_STATEMENT]):
            user = NO_USER if r.user_id is None else r.user_id
            q.add(", (" if i else "(", r.account_id, ", ", r.api_key_id, ", ", r.endpoint_id,
                  ", ", r.source_id, ", ", user, ", ", r.credits, ", ",
                  r.occurred_at_us, ")")
        await conn.execute_query(q.text, q.params)


#: SQLite: the same index, named (``INDEXED BY`` fails rather than plan another way).
SQLITE_LOOKUP = (f"SELECT account_id, event_id, {', '.join(_CONTENT_COLUMNS)} FROM usage_event"
                 " INDEXED BY usage_event_event_account WHERE account_id = ")

"""Storage of events on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterable

from gql_usage import cube
from gql_usage.db import connection
from gql_usage.ingest.rows import _CONTENT_COLUMNS, _EVENT_COLUMNS, _now_us, _Row
from gql_usage.models import NO_USER

#: Ids as comma-separated text; an empty item (a call without a user) is NULL.
_UNNEST = ", ".join(
    "$2::text[]" if i == 2 else f"string_to_array(${i}, ',', '')::{'bigint' if i > 6 else 'int'}[]"
    for i in range(1, 9))
_PENDING_SELECT = ", ".join(f"coalesce(user_id, {NO_USER})" if c == "user_id" else c
                            for c in cube.PENDING_COLUMNS)
#: One statement: the new events, their pending copies, and the positions (1-based) of
#: the rows that were *not* inserted (already stored), which is usually none. Integer
#: columns travel as comma-separated text: asyncpg checks every element of a Python list
#: against ``collections.abc`` when it encodes an array, which cost more than the insert.
_POSTGRES_STORE = (
    f"WITH input AS (SELECT * FROM unnest({_UNNEST})"
    " WITH ORDINALITY AS t(a, e, k, en, s, u, c, o, n)),"
    f" new AS (INSERT INTO usage_event ({', '.join(_EVENT_COLUMNS)})"
    " SELECT a, e, k, en, s, u, c, o, $9 FROM input ORDER BY n"
    " ON CONFLICT (account_id, event_id) DO NOTHING"
    f" RETURNING event_id, {', '.join(cube.PENDING_COLUMNS)}),"
    f" pending AS (INSERT INTO usage_pending ({', '.join(cube.PENDING_COLUMNS)})"
    f" SELECT {_PENDING_SELECT} FROM new)"
    " SELECT coalesce(array_agg(n), '{}') FROM input WHERE NOT EXISTS"
    " (SELECT FROM new WHERE new.account_id = input.a AND new.event_id = input.e)"
)


def _joined(values: Iterable[int | None]) -> str:
    return ",".join("" if v is None else str(v) for v in values)


async def _store_postgres(rows: list[_Row]) -> list[_Row]:
    """Events (and their pending copies) in one statement; returns the rows that were
    already stored."""
    # Columns in _Row's field order, which is the statement's parameter order.
    account, event, key, endpoint, source, user, credits, occurred, _ = zip(*rows, strict=True)
    params = [_joined(account), list(event), _joined(key), _joined(endpoint),
              _joined(source), _joined(user), _joined(credits), _joined(occurred), _now_us()]
    _, result = await connection().execute_query(_POSTGRES_STORE, params)
    return [rows[n - 1] for n in result[0][0]]


#: The duplicate lookup on PostgreSQL: one probe of the unique index (event_id, account_id)
#: per resent event, whatever the table's statistics say. The account is matched only
#: inside row comparisons led by event_id, which no other index can serve (a plain
#: ``account_id = ...`` would let the planner probe the (account_id, occurred_at_us)
#: index and read the account's every row per event, as a bitmap scan of it with the id
#: list as a filter once took 28 s on a never-analyzed table of 2.86 M rows), and
#: ``POSTGRES_LOOKUP_SETTINGS`` leave the planner a nested loop of index scans as the only
#: plan (no sequential or bitmap scan, hash or merge join; no JIT compilation, which a
#: wild cost estimate from stale statistics would otherwise buy for hundreds of ms).
POSTGRES_LOOKUP = (
    f"SELECT u.account_id, u.event_id, {', '.join('u.' + c for c in _CONTENT_COLUMNS)}"
    " FROM unnest(string_to_array($1, ',')::int[], $2::text[]) AS k(account_id, event_id)"
    " JOIN usage_event u ON (u.event_id, u.account_id) >= (k.event_id, k.account_id)"
    " AND (u.event_id, u.account_id) <= (k.event_id, k.account_id)"
)
POSTGRES_LOOKUP_SETTINGS = ("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off;"
                            " SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off;"
                            " SET LOCAL enable_material = off; SET LOCAL jit = off")

"""Events on PostgreSQL: the one-statement insert and the duplicate lookup.

See README, "Resends stay fast as the data grows", for why the lookup is written so.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

from gql_usage.alerts.record import POSTGRES_ALERT_CTES, STATEMENT_ACCOUNTS
from gql_usage.alerts.wakeup import alerts_recorded
from gql_usage.ingest.rows import CONTENT_COLUMNS, EVENT_COLUMNS, Row, now_us
from gql_usage.ingest.store_citus import store_account
from gql_usage.storage import cube
from gql_usage.storage.db import Sql, connection, raw_fetch
from gql_usage.storage.distribution import distributed
from gql_usage.storage.models import NO_USER

#: Ids as comma-separated text; an empty item (a call without a user) is NULL.
_UNNEST = ", ".join(
    "$2::text[]" if i == 2 else f"string_to_array(${i}, ',', '')::{'bigint' if i > 6 else 'int'}[]"
    for i in range(1, 9))
_PENDING_SELECT = ", ".join(f"coalesce(user_id, {NO_USER})" if c == "user_id" else c
                            for c in cube.PENDING_COLUMNS)
#: Each key's ``last_used_at_us`` raised to its newest new event (``ApiKey.lastUsedAt``):
#: only events inserted now count (a duplicate was counted when first stored; a
#: conflicting resend never is). The batch's keys are locked in id order first
#: (``locked``, which the update's one-time filter counts whole before it updates any
#: row; an ``EXISTS`` read, and so locked, only the first key), so that concurrent
#: batches never deadlock on them; a row a concurrent batch changed meanwhile
#: is read again by the update (READ COMMITTED), and GREATEST keeps the later instant of
#: the two. The keys are read from the input (``$3``; key ids are unique across
#: accounts), not from ``new``. (Citus runs ``store_citus``'s statements instead.)
LAST_USED_CTES = (
    f" locked AS (SELECT id FROM api_key WHERE account_id = {STATEMENT_ACCOUNTS}"
    " AND id = ANY(string_to_array($3, ',')::int[]) ORDER BY id FOR NO KEY UPDATE),"
    " newest AS (SELECT account_id, api_key_id, max(occurred_at_us) AS t FROM new"
    " GROUP BY account_id, api_key_id),"
    " touched AS (UPDATE api_key SET last_used_at_us = GREATEST(api_key.last_used_at_us,"
    f" newest.t) FROM newest WHERE api_key.account_id = {STATEMENT_ACCOUNTS}"
    " AND api_key.account_id = newest.account_id AND api_key.id = newest.api_key_id"
    " AND (api_key.last_used_at_us IS NULL OR api_key.last_used_at_us < newest.t)"
    " AND (SELECT count(*) FROM locked) > 0)"
)
#: One statement: the new events, their pending copies, their keys' last use, the running
#: totals and alerts they make (``gql_usage.alerts.record``), and the positions (1-based)
#: of the rows that were *not* inserted (already stored), which is usually none, with the
#: number of alerts recorded. ``$10`` lists the accounts of the rows, and every table the
#: statement reads or writes is filtered by it as well (phase 1 of issue 15 sent it once
#: per account on Citus; Citus now runs ``store_citus``'s router statements, see there).
#: It stores a whole batch, whatever its accounts. Integer columns travel as
#: comma-separated text: asyncpg checks every element of a Python list against
#: ``collections.abc`` when it encodes an array, which cost more than the insert.
POSTGRES_STORE = (
    f"WITH input AS (SELECT * FROM unnest({_UNNEST})"
    " WITH ORDINALITY AS t(a, e, k, en, s, u, c, o, n)),"
    f" new AS (INSERT INTO usage_event ({', '.join(EVENT_COLUMNS)})"
    " SELECT a, e, k, en, s, u, c, o, $9 FROM input ORDER BY n"
    " ON CONFLICT (account_id, event_id) DO NOTHING"
    f" RETURNING event_id, {', '.join(cube.PENDING_COLUMNS)}),"
    f" pending AS (INSERT INTO usage_pending ({', '.join(cube.PENDING_COLUMNS)})"
    f" SELECT {_PENDING_SELECT} FROM new),"
    f"{LAST_USED_CTES},"
    f"{POSTGRES_ALERT_CTES}"
    " SELECT coalesce(array_agg(n), '{}'), (SELECT count(*) FROM alerts) FROM input"
    " WHERE NOT EXISTS"
    " (SELECT FROM new WHERE new.account_id = input.a AND new.event_id = input.e)"
)


def joined(values: Iterable[int | None]) -> str:
    """Integers as one comma-separated text parameter (``None`` as an empty item)."""
    return ",".join("" if v is None else str(v) for v in values)


def store_params(rows: Sequence[Row], received_us: int) -> list[Any]:
    """``POSTGRES_STORE``'s parameters storing ``rows``."""
    # Columns in Row's field order, which is the statement's parameter order.
    account, event, key, endpoint, source, user, credits, occurred, _ = zip(*rows, strict=True)
    return [joined(account), list(event), joined(key), joined(endpoint), joined(source),
            joined(user), joined(credits), joined(occurred), received_us,
            joined(sorted(set(account)))]


def _by_account(rows: Sequence[Row]) -> dict[int, list[Row]]:
    """``rows`` grouped by account, each group in the batch's order (Citus: one shard each)."""
    groups: dict[int, list[Row]] = {}
    for row in rows:
        groups.setdefault(row.account_id, []).append(row)
    return groups


async def store(rows: list[Row]) -> list[Row]:
    """Events (with their pending copies and their keys' last use); returns the rows that
    were already stored. One statement on PostgreSQL, whatever the batch's accounts; on
    Citus each account's router statements (``store_citus``: one to five), in account
    order, in one transaction (all or nothing: a retry after a deadlock stores the whole
    batch again)."""
    conn = connection()
    received = now_us()
    if not await distributed(conn):
        _, result = await conn.execute_query(POSTGRES_STORE, store_params(rows, received))
        if result[0][1]:
            alerts_recorded()
        return [rows[n - 1] for n in result[0][0]]
    by_account = _by_account(rows)
    stored: list[Row] = []
    alerts = 0
    # A pooled asyncpg connection of our own (see ``stored_versions`` for why not
    # Tortoise's ``in_transaction``); accounts in order, so that concurrent batches lock
    # their shards' rows in the same order.
    async with conn.acquire_connection() as raw, raw.transaction():
        for account_id in sorted(by_account):
            already, recorded = await store_account(raw, account_id, by_account[account_id],
                                                    received)
            alerts += recorded
            stored += already
    if alerts:
        alerts_recorded()
    return stored


#: The duplicate lookup: one probe of the unique index (event_id, account_id) per resent
#: event, whatever the table's statistics say. The account is matched only inside row
#: comparisons led by event_id, which no other index can serve (a plain
#: ``account_id = ...`` let the planner read the account's every row through the
#: (account_id, occurred_at_us) index: 28 s on a never-analyzed table of 2.86 M rows), and
#: ``POSTGRES_LOOKUP_SETTINGS`` leave a nested loop of index scans as the only plan (no
#: JIT either, which a wild estimate from stale statistics would buy for hundreds of ms).
POSTGRES_LOOKUP = (
    f"SELECT u.account_id, u.event_id, {', '.join('u.' + c for c in CONTENT_COLUMNS)}"
    " FROM unnest(string_to_array($1, ',')::int[], $2::text[]) AS k(account_id, event_id)"
    " JOIN usage_event u ON (u.event_id, u.account_id) >= (k.event_id, k.account_id)"
    " AND (u.event_id, u.account_id) <= (k.event_id, k.account_id)"
)
POSTGRES_LOOKUP_SETTINGS = ("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off;"
                            " SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off;"
                            " SET LOCAL enable_material = off; SET LOCAL jit = off")


def lookup_sql(rows: Sequence[Row]) -> Sql:
    """The statement reading the stored versions of ``rows`` (by account and event id)."""
    q = Sql("postgres").add(POSTGRES_LOOKUP)
    q.params.extend([joined(r.account_id for r in rows), [r.event_id for r in rows]])
    return q


async def stored_versions(conn: BaseDBAsyncClient, rows: Sequence[Row]) -> list[Sequence[Any]]:
    """(account id, event id, *content) of the stored events among ``rows``.

    The settings hold for this transaction only. On Citus the lookup is made per account,
    with ``u.account_id = <id>`` added, so that each names one shard. On a pooled asyncpg
    connection of our own, not Tortoise's ``in_transaction``: its context variable
    outlived a rollback that failed in a database crash, and the task's next statements
    went to the dead transaction's released connection (a 500 instead of a 503).
    """
    if not await distributed(conn):
        queries = [lookup_sql(rows)]
    else:  # Citus: per account, naming it (one shard each), in one transaction
        queries = [lookup_sql(group).add(" WHERE u.account_id = ", account_id)
                   for account_id, group in sorted(_by_account(rows).items())]
    found: list[Sequence[Any]] = []
    async with conn.acquire_connection() as raw, raw.transaction():
        await raw.execute(POSTGRES_LOOKUP_SETTINGS)
        for q in queries:
            found += await raw_fetch(raw, q.text, *q.params)
    return found

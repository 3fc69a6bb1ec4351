"""The usage cube: folding pending events into it (compaction), in SQL on both databases.

``compact`` moves ``usage_pending`` rows into ``usage_cube`` in one atomic round (PostgreSQL:
one ``DELETE ... RETURNING`` feeding an upsert, under an advisory lock; SQLite: one write
transaction). Readers add pending rows, so answers are exact before, during and after a
round. See README, 'Architecture' (Exactness).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from tortoise.transactions import in_transaction

from gql_usage.calendar import US
from gql_usage.storage.db import connection, dialect
from gql_usage.storage.distribution import distributed
from gql_usage.storage.models import CUBE_SETS, DIM_BITS

log = logging.getLogger("gql_usage.cube")

DIM_COLUMNS = tuple(DIM_BITS)  # api_key_id, endpoint_id, source_id, user_id
KEY_COLUMNS = ("account_id", "grain", "dims", *DIM_COLUMNS, "t")
INSERT_COLUMNS = ("account_id", "grain", "dims", "t", *DIM_COLUMNS, "calls", "credits")
PENDING_COLUMNS = ("account_id", *DIM_COLUMNS, "credits", "occurred_at_us")
COMBOS = tuple((grain, dims) for grain, sets in CUBE_SETS.items() for dims in sets)
UPSERT_TAIL = (f" ON CONFLICT ({', '.join(KEY_COLUMNS)}) DO UPDATE SET"
               " calls = usage_cube.calls + excluded.calls,"
               " credits = usage_cube.credits + excluded.credits")
#: Most pending events folded per round (bounds a round's memory and lock time).
ROUND_EVENTS = 50_000
#: Sort memory of a PostgreSQL round: its aggregation then stays in memory (measured:
#: 200,000 sparse events spilled 200 MB to disk with the default 4 MB, 8 of 22 seconds).
ROUND_WORK_MEM = "256MB"
#: Pending events folded after which the pending table and the cube are vacuumed
#: (PostgreSQL).
VACUUM_AFTER_EVENTS = 100_000
#: Arbitrary key of the PostgreSQL advisory lock that serialises rounds.
_LOCK_KEY = 0x6751_5553  # "gQUS"


def cells_sql(source: str) -> str:
    """``SELECT`` of cube rows (in ``INSERT_COLUMNS`` order) aggregated from relation
    ``source`` (which has ``PENDING_COLUMNS``), in key order, so that a round stores
    the rows one account's question reads next to each other."""
    combos = " UNION ALL ".join(f"SELECT {g} AS grain, {d} AS dims" for g, d in COMBOS)
    dims = ", ".join(f"CASE WHEN g.dims & {bit} = 0 THEN 0 ELSE e.{col} END AS {col}"
                     for col, bit in DIM_BITS.items())
    return (
        f"SELECT e.account_id, g.grain, g.dims, (e.occurred_at_us / {US} / g.grain) * g.grain"
        f" AS t, {dims}, COUNT(*) AS calls, SUM(e.credits) AS credits"
        f" FROM {source} e CROSS JOIN ({combos}) g WHERE true"
        f" GROUP BY 1, 2, 3, 4, 5, 6, 7, 8"
        f" ORDER BY 1, 2, 3, 5, 6, 7, 8, 4"
    )


_INSERT = f"INSERT INTO usage_cube ({', '.join(INSERT_COLUMNS)}) "
#: One round over the accounts ``$1`` (an array): their first ``ROUND_EVENTS`` pending
#: events leave ``usage_pending`` and are added to the cube, in one statement, if this
#: transaction gets the advisory lock of the round (``$2``: the account of a one-account
#: round, else 0). Every reference to a distributed table names the accounts, so that on
#: Citus a one-account round is routed to that account's shards alone, and ``ctid``
#: (which is per shard) only ever compares rows of one shard.
_POSTGRES_ROUND = (
    f"WITH locked AS (SELECT pg_try_advisory_xact_lock({_LOCK_KEY}, $2) AS ok),"
    " moved AS (DELETE FROM usage_pending WHERE account_id = ANY($1::int[])"
    " AND ctid = ANY(ARRAY(SELECT ctid FROM usage_pending WHERE account_id = ANY($1::int[])"
    f" AND (SELECT ok FROM locked) LIMIT {ROUND_EVENTS}))"
    f" RETURNING {', '.join(PENDING_COLUMNS)}),"
    f" folded AS ({_INSERT}{cells_sql('moved')}{UPSERT_TAIL})"
    " SELECT COUNT(*) FROM moved"
)
#: The accounts with pending events (read without locks; a round finds out whether
#: any are still pending).
PENDING_ACCOUNTS = "SELECT DISTINCT account_id FROM usage_pending"


async def compact() -> int:
    """Fold up to ``ROUND_EVENTS`` pending events of each account into the cube; returns
    how many.

    PostgreSQL: one round for every account with pending events. Citus (distributed mode,
    docs/citus.md): one round per account, each routed to that account's shard, under a
    lock of that account alone. Returns 0 when other processes hold the rounds or nothing
    is pending.
    """
    conn = connection()
    if dialect(conn) == "postgres":
        _, found = await conn.execute_query(PENDING_ACCOUNTS)
        accounts = sorted(int(r[0]) for r in found)
        if not accounts:
            return 0
        rounds = [[a] for a in accounts] if await distributed(conn) else [accounts]
        moved = 0
        for group in rounds:
            async with in_transaction("default") as tx:
                await tx.execute_query(f"SET LOCAL work_mem = '{ROUND_WORK_MEM}'")
                _, rows = await tx.execute_query(
                    _POSTGRES_ROUND, [group, group[0] if len(group) == 1 else 0])
            moved += int(rows[0][0])
        return moved
    async with in_transaction("default") as tx:
        _, rows = await tx.execute_query(
            "SELECT MAX(rowid) FROM (SELECT rowid FROM usage_pending ORDER BY rowid "
            f"LIMIT {ROUND_EVENTS})")
        last = rows[0][0]
        if last is None:
            return 0
        await tx.execute_query(
            _INSERT + cells_sql(f"(SELECT * FROM usage_pending WHERE rowid <= {int(last)})")
            + UPSERT_TAIL)
        count, _ = await tx.execute_query("DELETE FROM usage_pending WHERE rowid <= ?",
                                          [int(last)])
        return int(count)


async def compact_all() -> int:
    """Fold everything pending now (rounds until a round finds nothing)."""
    total = 0
    while moved := await compact():
        total += moved
    return total


async def run_compactor(interval_s: float) -> None:
    """Compact forever: right away while there is a backlog, else every ``interval_s``.

    Errors (the database restarting, say) are logged and retried; nothing is lost, as
    pending events stay pending until a round commits. On PostgreSQL the pending table is
    vacuumed once a large backlog has drained, so that readers, which scan it, do not
    wade through dead rows until autovacuum gets round to it.
    """
    since_vacuum = 0
    while True:
        try:
            moved = await compact()
            since_vacuum += moved
            if moved < ROUND_EVENTS // 10 and since_vacuum >= VACUUM_AFTER_EVENTS:
                if dialect(connection()) == "postgres":  # one statement each: VACUUM
                    # refuses the implicit transaction of a multi-statement script
                    await connection().execute_script("VACUUM usage_pending")
                    await connection().execute_script("VACUUM (ANALYZE) usage_cube")
                since_vacuum = 0
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - keep compacting after any failure
            log.exception("compaction round failed; retrying")
            moved = 0
        if moved < ROUND_EVENTS // 10:
            await asyncio.sleep(interval_s)


@contextlib.asynccontextmanager
async def compactor(interval_s: float) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``run_compactor`` in the background for the duration of the block."""
    task = asyncio.create_task(run_compactor(interval_s))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

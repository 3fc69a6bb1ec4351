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
_POSTGRES_ROUND = (
    f"WITH locked AS (SELECT pg_try_advisory_xact_lock({_LOCK_KEY}) AS ok),"
    f" moved AS (DELETE FROM usage_pending WHERE ctid = ANY(ARRAY(SELECT ctid"
    f" FROM usage_pending WHERE (SELECT ok FROM locked) LIMIT {ROUND_EVENTS}))"
    f" RETURNING {', '.join(PENDING_COLUMNS)}),"
    f" folded AS ({_INSERT}{cells_sql('moved')}{UPSERT_TAIL})"
    f" SELECT COUNT(*) FROM moved"
)


#: Distributed mode (Citus, docs/citus.md): the accounts with pending events (read
#: without locks, a plain scan of every shard), then one round per account, each a
#: transaction of statements routed to that account's shards: its pending events at
#: the transaction's snapshot (REPEATABLE READ: events stored meanwhile are left for
#: the next round) are added to the cube, then deleted. ``ctid`` is per shard and Citus
#: refuses it in the one-statement round. The lock is the account's alone (``$1``):
#: no round ever waits for another account's, and none takes a cluster-wide lock.
PENDING_ACCOUNTS = "SELECT DISTINCT account_id FROM usage_pending"
_ACCOUNT_LOCK = f"SELECT pg_try_advisory_xact_lock({_LOCK_KEY}, $1)"
_ACCOUNT_FOLD = (_INSERT + cells_sql("(SELECT * FROM usage_pending WHERE account_id = $1)")
                 + UPSERT_TAIL)
_ACCOUNT_DELETE = "DELETE FROM usage_pending WHERE account_id = $1"


async def compact() -> int:
    """Fold up to ``ROUND_EVENTS`` pending events into the cube; returns how many.

    Returns 0 when another process holds the round (PostgreSQL) or nothing is pending.
    In distributed mode, every account's pending events, one round per account.
    """
    conn = connection()
    if dialect(conn) == "postgres":
        if await distributed(conn):
            return await _compact_accounts()
        async with in_transaction("default") as tx:
            await tx.execute_query(f"SET LOCAL work_mem = '{ROUND_WORK_MEM}'")
            _, rows = await tx.execute_query(_POSTGRES_ROUND)
        return int(rows[0][0])
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


async def compact_account(account_id: int) -> int:
    """One distributed-mode round for one account; returns how many events it folded
    (0 when another process holds the account's round)."""
    async with in_transaction("default") as tx:
        await tx.execute_query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        _, locked = await tx.execute_query(_ACCOUNT_LOCK, [account_id])
        if not locked[0][0]:
            return 0
        await tx.execute_query(f"SET LOCAL work_mem = '{ROUND_WORK_MEM}'")
        await tx.execute_query(_ACCOUNT_FOLD, [account_id])
        count, _ = await tx.execute_query(_ACCOUNT_DELETE, [account_id])
    return int(count)


async def _compact_accounts() -> int:
    _, found = await connection().execute_query(PENDING_ACCOUNTS)
    moved = 0
    for (account_id,) in sorted(tuple(r) for r in found):
        moved += await compact_account(int(account_id))
    return moved


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

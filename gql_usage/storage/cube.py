"""The usage cube: folding pending events into it (compaction), in SQL on both databases.

``compact`` moves ``usage_pending`` rows into ``usage_cube`` in one atomic round (PostgreSQL:
one ``DELETE ... RETURNING`` feeding an upsert, under an advisory lock; SQLite: one write
transaction). Readers add pending rows, so answers are exact before, during and after a
round. See README, 'Architecture' (Exactness).

The cube is adaptive: an account enters it once compaction has seen ``cube_after_events``
of its events (``usage_cube_account``, migration 0007). Until then its pending copies are
only counted and dropped, and readers answer it from its raw events (a few thousand at
most: cheap), so small and sparse accounts, whose every event would be ~15 cube rows,
cost neither cube rows nor upserts. Entering is one statement: the account is marked,
its pending copies deleted and its cube built from its raw events, all in one snapshot,
so every event is in the cube or pending, never both; a reader's one statement sees the
account wholly raw or wholly cubed.
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
from gql_usage.storage.models import CUBE_SETS, DIM_BITS, NO_USER

log = logging.getLogger("gql_usage.cube")

DIM_COLUMNS = tuple(DIM_BITS)  # api_key_id, endpoint_id, source_id, user_id
KEY_COLUMNS = ("account_id", "grain", "dims", *DIM_COLUMNS, "t")
INSERT_COLUMNS = ("account_id", "grain", "dims", "t", *DIM_COLUMNS, "calls", "credits")
PENDING_COLUMNS = ("account_id", *DIM_COLUMNS, "credits", "occurred_at_us")
COMBOS = tuple((grain, dims) for grain, sets in CUBE_SETS.items() for dims in sets)
UPSERT_TAIL = (f" ON CONFLICT ({', '.join(KEY_COLUMNS)}) DO UPDATE SET"
               " calls = usage_cube.calls + excluded.calls,"
               " credits = usage_cube.credits + excluded.credits")
#: Events of an account compaction sees before it enters the cube (below: answered from
#: its raw events). 5,000 events: a 365-day page of such an account reads them from
#: the raw events index in a few milliseconds per spec.
CUBE_AFTER_EVENTS = 5_000
#: Most pending events folded per round (bounds a round's memory and lock time).
ROUND_EVENTS = 50_000
#: Sort memory of a PostgreSQL round: its aggregation then stays in memory (measured:
#: 200,000 sparse events spilled 200 MB to disk with the default 4 MB, 8 of 22 seconds).
ROUND_WORK_MEM = "256MB"
#: Pending events folded after which the pending table and the cube are vacuumed
#: (PostgreSQL).
VACUUM_AFTER_EVENTS = 100_000
#: A round's settings: sort memory; a nested loop of TID probes as the only join; the
#: cells grouped by hashing, then sorted (``cells_sql``), whatever the estimates (a
#: CTE's rows have no statistics: a join with ``usage_cube_account`` made the planner
#: expect 1,000 rows instead of 750,000 and sort them all before grouping).
_POSTGRES_ROUND_SETTINGS = (f"SET LOCAL work_mem = '{ROUND_WORK_MEM}'; SET LOCAL enable_hashjoin"
                            " = off; SET LOCAL enable_mergejoin = off; SET LOCAL jit = off;"
                            " SET LOCAL enable_sort = off; SET LOCAL enable_incremental_sort = off")
#: Arbitrary key of the PostgreSQL advisory lock that serialises rounds.
_LOCK_KEY = 0x6751_5553  # "gQUS"


def _raw_of(accounts: str) -> str:
    """The raw events of ``accounts`` (a subquery) as pending rows."""
    return (f"(SELECT {_EVENT_AS_PENDING} FROM usage_event WHERE account_id IN {accounts})")


def _rollups() -> dict[int, int]:
    """Grains built from a round's cells of a finer grain instead of from its events:
    ``grain -> finer`` when ``finer`` divides ``grain`` and keeps every set of it (the
    week, from the day's single sets). Coarsest such ``finer``."""
    out = {}
    for grain, sets in CUBE_SETS.items():
        finer = [f for f, fs in CUBE_SETS.items()
                 if f < grain and grain % f == 0 and set(sets) <= set(fs)]
        if finer:
            out[grain] = max(finer)
    return out


#: See ``_rollups``: a week row is the sum of its days' rows, so a round sums its day
#: cells (a few per key and day) rather than its events again (50,000 dense events: a
#: round's grouping took 938 ms with the week's five sets made from the events, 759 ms
#: without them, 788 ms with the weeks summed from the day cells).
ROLLUPS = _rollups()


def cells_sql(source: str, rollups: bool = True) -> str:
    """``SELECT`` of cube rows (in ``INSERT_COLUMNS`` order) aggregated from relation
    ``source`` (which has ``PENDING_COLUMNS``), in key order, so that a round stores
    the rows one account's question reads next to each other.

    The order ends with the calls (no two rows share a key, so the order is the key's):
    a sort before grouping cannot give it, so under ``_POSTGRES_ROUND_SETTINGS`` the plan
    hashes first and sorts only the cells (a round of 50,000 dense events: 750,000 rows
    before grouping, 72,000 after; measured 13.9 s sorting before, 3.0 s hashing first,
    on the loaded machine). The grains of ``ROLLUPS`` are summed from the other cells
    (in a ``WITH``), unless ``rollups`` is false: then every grain is summed from the
    events (Citus cannot plan the ``WITH`` in a distributed ``INSERT ... SELECT``)."""
    rolled_up = ROLLUPS if rollups else {}
    combos = " UNION ALL ".join(f"SELECT {g} AS grain, {d} AS dims" for g, d in COMBOS
                                if g not in rolled_up)
    dims = ", ".join(f"CASE WHEN g.dims & {bit} = 0 THEN 0 ELSE e.{col} END AS {col}"
                     for col, bit in DIM_BITS.items())
    cells = (
        f"SELECT e.account_id, g.grain, g.dims, (e.occurred_at_us / {US} / g.grain) * g.grain"
        f" AS t, {dims}, COUNT(*) AS calls, SUM(e.credits) AS credits"
        f" FROM {source} e CROSS JOIN ({combos}) g WHERE true"
        f" GROUP BY 1, 2, 3, 4, 5, 6, 7, 8"
    )
    order = " ORDER BY 1, 2, 3, 5, 6, 7, 8, 4, 9"
    if not rolled_up:
        return cells + order
    columns = ", ".join(DIM_COLUMNS)
    rolled = "".join(
        f" UNION ALL SELECT account_id, {grain}, dims, (t / {grain}) * {grain}, {columns},"
        f" SUM(calls), SUM(credits) FROM cells WHERE grain = {finer}"
        f" AND dims IN ({', '.join(map(str, CUBE_SETS[grain]))})"
        f" GROUP BY account_id, dims, (t / {grain}) * {grain}, {columns}"
        for grain, finer in rolled_up.items())
    return f"WITH cells AS ({cells}) SELECT * FROM cells WHERE true{rolled}{order}"


_INSERT = f"INSERT INTO usage_cube ({', '.join(INSERT_COLUMNS)}) "
_CUBED = "(SELECT account_id FROM usage_cube_account WHERE cubed = 1)"
_CUBED_MOVED = "(SELECT * FROM moved WHERE account_id IN (SELECT account_id FROM cubed))"
#: The events of raw accounts among ``source`` counted (``{source}``: the round's rows).
_COUNT_RAW = (
    "INSERT INTO usage_cube_account (account_id, events, cubed) SELECT account_id, COUNT(*), 0"
    " FROM {source} WHERE account_id NOT IN " + _CUBED + " GROUP BY account_id"
    " ON CONFLICT (account_id) DO UPDATE SET events = usage_cube_account.events + excluded.events"
)
_EVENT_AS_PENDING = ", ".join(f"COALESCE({c}, {NO_USER}) AS {c}" if c == "user_id" else c
                              for c in PENDING_COLUMNS)
#: Accounts past the threshold (``$1``) enter the cube: marked, their pending copies
#: deleted and their cube built from their raw events, in one snapshot (PostgreSQL).
_POSTGRES_ENTER = (
    "WITH flip AS (UPDATE usage_cube_account SET cubed = 1 WHERE cubed = 0 AND events >= $1"
    " RETURNING account_id),"
    " gone AS (DELETE FROM usage_pending WHERE account_id IN (SELECT account_id FROM flip)),"
    f" built AS ({_INSERT}{cells_sql(_raw_of('(SELECT account_id FROM flip)'))}{UPSERT_TAIL})"
    " SELECT COUNT(*) FROM flip"
)
#: The round's rows are picked by ``ctid`` and deleted through a join, one TID probe each
#: (``_POSTGRES_ROUND_SETTINGS`` leave the nested loop as the only plan). The former
#: ``ctid = ANY(ARRAY(...))`` was rechecked row by row against the whole array, 50,000 x
#: 50,000 comparisons: a full round took minutes (the stall of issue 14).
_POSTGRES_ROUND = (
    f"WITH locked AS (SELECT pg_try_advisory_xact_lock({_LOCK_KEY}) AS ok),"
    f" picked AS (SELECT ctid AS c FROM usage_pending WHERE (SELECT ok FROM locked)"
    f" LIMIT {ROUND_EVENTS}),"
    f" moved AS (DELETE FROM usage_pending p USING picked WHERE p.ctid = picked.c"
    f" RETURNING {', '.join('p.' + c for c in PENDING_COLUMNS)}),"
    " cubed AS (SELECT account_id FROM usage_cube_account WHERE cubed = 1"
    " AND account_id IN (SELECT account_id FROM moved)),"
    f" folded AS ({_INSERT}{cells_sql(_CUBED_MOVED)}{UPSERT_TAIL}),"
    f" counted AS ({_COUNT_RAW.format(source='moved')} RETURNING events)"
    " SELECT (SELECT COUNT(*) FROM moved), (SELECT COUNT(*) FROM counted WHERE events >= $1)"
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
_ACCOUNT_FOLD = (_INSERT + cells_sql("(SELECT * FROM usage_pending WHERE account_id = $1)",
                                     rollups=False)
                 + UPSERT_TAIL)
_ACCOUNT_DELETE = "DELETE FROM usage_pending WHERE account_id = $1"


async def compact(cube_after_events: int = CUBE_AFTER_EVENTS) -> int:
    """Fold up to ``ROUND_EVENTS`` pending events into the cube (drop those of accounts
    not in it, counting them; accounts past ``cube_after_events`` then enter it);
    returns how many pending events the round took.

    Returns 0 when another process holds the round (PostgreSQL) or nothing is pending.
    In distributed mode, every account's pending events, one round per account
    (``compact_account``).
    """
    conn = connection()
    if dialect(conn) == "postgres":
        if await distributed(conn):
            return await _compact_accounts(cube_after_events)
        async with in_transaction("default") as tx:
            await tx.execute_script(_POSTGRES_ROUND_SETTINGS)
            _, rows = await tx.execute_query(_POSTGRES_ROUND, [cube_after_events])
            if rows[0][1]:
                await tx.execute_query(_POSTGRES_ENTER, [cube_after_events])
        return int(rows[0][0])
    async with in_transaction("default") as tx:
        _, rows = await tx.execute_query(
            "SELECT MAX(rowid) FROM (SELECT rowid FROM usage_pending ORDER BY rowid "
            f"LIMIT {ROUND_EVENTS})")
        last = rows[0][0]
        if last is None:
            return 0
        round_rows = f"(SELECT * FROM usage_pending WHERE rowid <= {int(last)})"
        await tx.execute_query(
            _INSERT + cells_sql(f"(SELECT * FROM usage_pending WHERE rowid <= {int(last)}"
                                f" AND account_id IN {_CUBED})") + UPSERT_TAIL)
        await tx.execute_query(_COUNT_RAW.format(source=round_rows))
        count, _ = await tx.execute_query("DELETE FROM usage_pending WHERE rowid <= ?",
                                          [int(last)])
        # One writer at a time: the account, its pending copies and its cube change
        # together, unseen until the round commits.
        flip = ("(SELECT account_id FROM usage_cube_account WHERE cubed = 0 AND events >= "
                f"{int(cube_after_events)})")
        await tx.execute_query(f"DELETE FROM usage_pending WHERE account_id IN {flip}")
        await tx.execute_query(_INSERT + cells_sql(_raw_of(flip)) + UPSERT_TAIL)
        await tx.execute_query(
            f"UPDATE usage_cube_account SET cubed = 1 WHERE account_id IN {flip}")
        return int(count)


async def compact_account(account_id: int, cube_after_events: int = CUBE_AFTER_EVENTS
                          ) -> int:
    """One distributed-mode round for one account; returns how many pending events it
    took (0 when another process holds the account's round). The adaptive cube as on
    PostgreSQL: an account in the cube has its pending events folded; one that is not
    has them counted and dropped, and once past ``cube_after_events`` enters the cube
    (built from its raw events), all at the transaction's one snapshot."""
    async with in_transaction("default") as tx:
        await tx.execute_query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        _, locked = await tx.execute_query(_ACCOUNT_LOCK, [account_id])
        if not locked[0][0]:
            return 0
        await tx.execute_query(f"SET LOCAL work_mem = '{ROUND_WORK_MEM}'")
        _, state = await tx.execute_query(_ACCOUNT_CUBED, [account_id])
        if state and state[0][0]:
            await tx.execute_query(_ACCOUNT_FOLD, [account_id])
            count, _ = await tx.execute_query(_ACCOUNT_DELETE, [account_id])
            return int(count)
        count, _ = await tx.execute_query(_ACCOUNT_DELETE, [account_id])
        if not count:
            return 0
        await tx.execute_query(_ACCOUNT_COUNT, [account_id, int(count)])
        _, seen = await tx.execute_query(_ACCOUNT_EVENTS, [account_id])
        if int(seen[0][0]) >= cube_after_events:
            await tx.execute_query(_ACCOUNT_BUILD, [account_id])
            await tx.execute_query(_ACCOUNT_ENTER, [account_id])
    return int(count)


_ACCOUNT_CUBED = "SELECT cubed FROM usage_cube_account WHERE account_id = $1"
_ACCOUNT_COUNT = (
    "INSERT INTO usage_cube_account (account_id, events, cubed) VALUES ($1, $2, 0)"
    " ON CONFLICT (account_id) DO UPDATE SET events = usage_cube_account.events"
    " + excluded.events")
_ACCOUNT_EVENTS = "SELECT events FROM usage_cube_account WHERE account_id = $1"
_ACCOUNT_BUILD = _INSERT + cells_sql(_raw_of("($1)"), rollups=False) + UPSERT_TAIL
_ACCOUNT_ENTER = "UPDATE usage_cube_account SET cubed = 1 WHERE account_id = $1"


async def _compact_accounts(cube_after_events: int) -> int:
    _, found = await connection().execute_query(PENDING_ACCOUNTS)
    moved = 0
    for (account_id,) in sorted(tuple(r) for r in found):
        moved += await compact_account(int(account_id), cube_after_events)
    return moved


async def compact_all(cube_after_events: int = CUBE_AFTER_EVENTS) -> int:
    """Fold everything pending now (rounds until a round finds nothing)."""
    total = 0
    while moved := await compact(cube_after_events):
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

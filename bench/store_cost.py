"""PostgreSQL's own cost of storing events: the ingest statement alone vs ``COPY``.

    python -m bench.store_cost [--batches 50] [--preload 1000000] [--accounts 1]

Starts PostgreSQL in a temporary directory, migrates, preloads ``--preload`` events (so
that the indexes have a realistic size) and then, per 1,000-event batch (its events
spread over ``--accounts`` accounts, interleaved, as the vendor's gateway sends them),
times

* the statement ``POST /v1/usage-events`` sends (``gql_usage.ingest.store_postgres``: insert into
  ``usage_event`` with its unique and secondary indexes, duplicates skipped, plus the
  pending copies for the compactor), and
* a binary ``COPY`` of the same 1,000 rows into a bare table without indexes,

both straight through asyncpg, side by side, batch by batch. No server and no Python
validation are involved: this is the database's part of ingestion.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.pg_server import create_database, start_postgres  # noqa: E402

from gql_usage.ingest.rows import Row  # noqa: E402
from gql_usage.ingest.store_postgres import POSTGRES_STORE, store_params  # noqa: E402
from gql_usage.storage.db import POSTGRES_SESSION, run_migrations  # noqa: E402

BATCH = 1_000
T0_US = 1_760_000_000_000_000


def _rows(tag: str, accounts: list[tuple[int, ...]], size: int, first_us: int) -> list[Row]:
    """``size`` events, the accounts taking turns, sorted as ``Ingestor`` sorts them."""
    rows = []
    for i in range(size):
        account, key, endpoint, source, user = accounts[i % len(accounts)]
        rows.append(Row(account, f"{tag}-{i}", key, endpoint, source, user, 1,
                        first_us + i, i))
    return sorted(rows)


def _batch(tag: str, accounts: list[tuple[int, ...]], size: int,
           first_us: int) -> list[object]:
    """``POSTGRES_STORE``'s parameters storing ``_rows``."""
    return store_params(_rows(tag, accounts, size, first_us), T0_US)


async def _store(conn: asyncpg.Connection, rows: list[Row], per_account: bool) -> list[int]:
    """Positions already stored; with ``per_account`` the statement once per account in
    one transaction (what ``store`` does on Citus)."""
    if not per_account:
        return list(await conn.fetchval(POSTGRES_STORE, *store_params(rows, T0_US)))
    already: list[int] = []
    async with conn.transaction():
        for account in sorted({r.account_id for r in rows}):
            group = [r for r in rows if r.account_id == account]
            already += await conn.fetchval(POSTGRES_STORE, *store_params(group, T0_US))
    return already


async def _account(conn: asyncpg.Connection, n: int, endpoint: int,
                   source: int) -> tuple[int, ...]:
    account = await conn.fetchval(
        "INSERT INTO account (external_id, name, plan, time_zone, credits_granted, "
        "period_start, period_end, updated_at) VALUES ($1, 'Store cost', "
        "'PRO', 'UTC', 0, now(), now() + interval '30 days', now()) RETURNING id",
        f"store-cost-{n}")
    user = await conn.fetchval(
        "INSERT INTO app_user (account_id, external_id, name, email, role) "
        "VALUES ($1, 'u', 'U', 'u@example.com', 'ADMIN') RETURNING id", account)
    key = await conn.fetchval(
        "INSERT INTO api_key (account_id, external_id, name, prefix, created_at) "
        "VALUES ($1, 'k', 'K', 'k', now()) RETURNING id", account)
    return (account, key, endpoint, source, user)


async def measure(dsn: str, batches: int, preload: int, accounts: int,
                  per_account: bool = False) -> dict[str, float]:
    # The server pool's session settings (JIT off, custom plans), as the server sends it.
    conn = await asyncpg.connect(dsn, server_settings=dict(POSTGRES_SESSION))
    try:
        endpoint = await conn.fetchval(
            "INSERT INTO endpoint (path, listed) VALUES ('/v2/cost', false) RETURNING id")
        source = await conn.fetchval(
            "INSERT INTO source (key, name, listed) VALUES ('api', 'API', false) RETURNING id")
        ids = [await _account(conn, n, endpoint, source) for n in range(accounts)]
        for start in range(0, preload, 50_000):
            await conn.fetchval(POSTGRES_STORE, *_batch(
                f"pre{start}", ids, min(50_000, preload - start), T0_US + start))
        await conn.execute("TRUNCATE usage_pending")
        await conn.execute("VACUUM ANALYZE")
        await conn.execute("CREATE TABLE bare (LIKE usage_event)")
        store_ms, copy_ms = [], []
        for b in range(batches):
            batch = _rows(f"b{b}", ids, BATCH, T0_US + preload + b * BATCH)
            started = time.perf_counter()
            already_stored = await _store(conn, batch, per_account)
            store_ms.append((time.perf_counter() - started) * 1000)
            rows = await conn.fetch(
                "SELECT * FROM usage_event WHERE event_id LIKE $1", f"b{b}-%")
            if already_stored or len(rows) != BATCH:
                raise SystemExit(f"batch {b}: {len(rows)} events stored, "
                                 f"{len(already_stored)} refused as already stored")
            started = time.perf_counter()
            await conn.copy_records_to_table("bare", records=rows)
            copy_ms.append((time.perf_counter() - started) * 1000)
        return {"store_ms_per_1000": round(statistics.median(store_ms), 2),
                "copy_ms_per_1000": round(statistics.median(copy_ms), 2)}
    finally:
        await conn.close()


async def run(batches: int, preload: int, accounts: int = 1,
              per_account: bool = False) -> dict[str, float]:
    with start_postgres() as base:
        url = create_database(base, "store_cost")
        await run_migrations(url)
        return await measure(url.replace("postgres://", "postgresql://", 1), batches, preload,
                             accounts, per_account)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.store_cost")
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--preload", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=1,
                        help="accounts each batch's events are spread over (default 1)")
    parser.add_argument("--per-account", action="store_true",
                        help="one statement per account of a batch, in one transaction "
                             "(what distributed mode sends)")
    args = parser.parse_args(argv)
    if args.accounts < 1:
        parser.error(f"--accounts must be at least 1, not {args.accounts}")
    result = asyncio.run(run(args.batches, args.preload, args.accounts,
                                 args.per_account))
    form = "one statement per account" if args.per_account else "one statement"
    print(f"ingest statement {result['store_ms_per_1000']} ms per 1,000 events; "
          f"COPY {result['copy_ms_per_1000']} ms per 1,000 events "
          f"({result['store_ms_per_1000'] / result['copy_ms_per_1000']:.1f}x); "
          f"{args.accounts} account(s) per batch, {form}")


if __name__ == "__main__":
    main()

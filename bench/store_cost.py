"""PostgreSQL's own cost of storing events: the ingest statement alone vs ``COPY``.

    python -m bench.store_cost [--batches 50] [--preload 1000000]

Starts PostgreSQL in a temporary directory, migrates, preloads ``--preload`` events (so
that the indexes have a realistic size) and then, per 1,000-event batch, times

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

from gql_usage.ingest.store_postgres import POSTGRES_STORE, joined  # noqa: E402
from gql_usage.storage.db import run_migrations  # noqa: E402

BATCH = 1_000
T0_US = 1_760_000_000_000_000


def _batch(tag: str, ids: tuple[int, ...], size: int, first_us: int) -> list[object]:
    account, key, endpoint, source, user = ids
    return [account, [f"{tag}-{i}" for i in range(size)],
            joined([key] * size), joined([endpoint] * size), joined([source] * size),
            joined([user] * size), joined([1] * size),
            joined(range(first_us, first_us + size)), T0_US]


async def measure(dsn: str, batches: int, preload: int) -> dict[str, float]:
    conn = await asyncpg.connect(dsn)
    try:
        account = await conn.fetchval(
            "INSERT INTO account (external_id, name, plan, time_zone, credits_granted, "
            "period_start, period_end, updated_at) VALUES ('store-cost', 'Store cost', "
            "'PRO', 'UTC', 0, now(), now() + interval '30 days', now()) RETURNING id")
        user = await conn.fetchval(
            "INSERT INTO app_user (account_id, external_id, name, email, role) "
            "VALUES ($1, 'u', 'U', 'u@example.com', 'ADMIN') RETURNING id", account)
        key = await conn.fetchval(
            "INSERT INTO api_key (account_id, external_id, name, prefix, created_at) "
            "VALUES ($1, 'k', 'K', 'k', now()) RETURNING id", account)
        endpoint = await conn.fetchval(
            "INSERT INTO endpoint (path, listed) VALUES ('/v2/cost', false) RETURNING id")
        source = await conn.fetchval(
            "INSERT INTO source (key, name, listed) VALUES ('api', 'API', false) RETURNING id")
        ids = (account, key, endpoint, source, user)
        for start in range(0, preload, 50_000):
            await conn.fetchval(POSTGRES_STORE, *_batch(
                f"pre{start}", ids, min(50_000, preload - start), T0_US + start))
        await conn.execute("TRUNCATE usage_pending")
        await conn.execute("VACUUM ANALYZE")
        await conn.execute("CREATE TABLE bare (LIKE usage_event)")
        store_ms, copy_ms = [], []
        for b in range(batches):
            params = _batch(f"b{b}", ids, BATCH, T0_US + preload + b * BATCH)
            started = time.perf_counter()
            already_stored = await conn.fetchval(POSTGRES_STORE, *params)
            store_ms.append((time.perf_counter() - started) * 1000)
            rows = await conn.fetch(
                "SELECT * FROM usage_event WHERE account_id = $1 AND event_id LIKE $2",
                account, f"b{b}-%")
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


async def run(batches: int, preload: int) -> dict[str, float]:
    with start_postgres() as base:
        url = create_database(base, "store_cost")
        await run_migrations(url)
        return await measure(url.replace("postgres://", "postgresql://", 1), batches, preload)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.store_cost")
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--preload", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.batches, args.preload))
    print(f"ingest statement {result['store_ms_per_1000']} ms per 1,000 events; "
          f"COPY {result['copy_ms_per_1000']} ms per 1,000 events "
          f"({result['store_ms_per_1000'] / result['copy_ms_per_1000']:.1f}x)")


if __name__ == "__main__":
    main()

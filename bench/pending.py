"""Pending events over time: a sampler of ``usage_pending`` beside the server, and the
sizes of the events and the cube (rows, MB), for the benchmark's compaction figures."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg


async def scalar(url: str, dsn: str | None, sql: str) -> int:
    """One integer from the benchmark's database (PostgreSQL through asyncpg, else the
    SQLite file, read in a thread), beside the server, not through it."""
    if dsn:
        conn = await asyncpg.connect(dsn)
        try:
            return int(await conn.fetchval(sql))
        finally:
            await conn.close()

    def read() -> int:
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite://"), timeout=60)) as c:
            return int(c.execute(sql).fetchone()[0])

    return await asyncio.to_thread(read)


async def pending_events(url: str, dsn: str | None) -> int:
    return await scalar(url, dsn, "SELECT COUNT(*) FROM usage_pending")


@dataclass
class Timeline:
    """(seconds since the start, pending events) samples."""

    started: float = field(default_factory=time.perf_counter)
    samples: list[tuple[float, int]] = field(default_factory=list)

    def text(self, every_s: float = 5.0) -> str:
        out, last = [], -every_s
        for t, n in self.samples:
            if t - last >= every_s:
                out.append(f"{t:6.1f} s {n:>10,}")
                last = t
        return "\n".join(out)


@contextlib.asynccontextmanager
async def sampling(url: str, dsn: str | None, every_s: float = 1.0
                   ) -> AsyncIterator[Timeline]:
    """Sample the pending count every ``every_s`` for the duration of the block."""
    timeline = Timeline()

    async def sample() -> None:
        while True:
            n = await pending_events(url, dsn)
            timeline.samples.append((time.perf_counter() - timeline.started, n))
            await asyncio.sleep(every_s)

    task = asyncio.create_task(sample())
    try:
        yield timeline
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@dataclass
class Sizes:
    """Rows and on-disk size (MB, tables with their indexes) of the events and the cube."""

    events_rows: int
    events_mb: float
    cube_rows: int
    cube_mb: float


def _size_sql(dsn: str | None, table: str, distributed: bool = False) -> str:
    if distributed:  # the shards on the workers, not the coordinator's empty shell
        return f"SELECT citus_total_relation_size('{table}')"
    if dsn:
        return f"SELECT pg_total_relation_size('{table}')"
    return ("SELECT COALESCE(SUM(pgsize), 0) FROM dbstat WHERE name IN "
            f"(SELECT name FROM sqlite_master WHERE tbl_name = '{table}')")


async def table_sizes(url: str, dsn: str | None, distributed: bool = False) -> Sizes:
    """Sizes now; ``distributed``: a Citus coordinator (every shard counted)."""
    mb = 1_000_000
    return Sizes(
        await scalar(url, dsn, "SELECT COUNT(*) FROM usage_event"),
        await scalar(url, dsn, _size_sql(dsn, "usage_event", distributed)) / mb,
        await scalar(url, dsn, "SELECT COUNT(*) FROM usage_cube"),
        await scalar(url, dsn, _size_sql(dsn, "usage_cube", distributed)) / mb,
    )

"""Citus as the suite's third database (tests marked ``citus``, tests/conftest.py).

One cluster per xdist worker (``citus_server.citus_cluster``: a coordinator and two
workers), started on the first Citus test. Its migrated, distributed databases:

* one *shared* database, made once, reused by every test and emptied before each one by
  one script (``empty_script``): ``DELETE`` of every table, referencing tables first
  (Citus checks foreign keys on the workers' shards, so ``session_replication_role``
  on the coordinator would not lift them), in ``sequential`` multi-shard mode (Citus
  refuses a reference table's ``DELETE`` after a parallel one of a distributed table
  referencing it, in one transaction), and ``setval`` of the id sequences (Citus refuses
  ``ALTER SEQUENCE ... RESTART`` on a distributed sequence). About 15 ms;
* a database of its own for a test marked ``own_database`` or a ``module_database``:
  Citus has no template database across nodes, so each is made on every node and
  migrated (about 3 s).

If the shared database cannot be emptied (a test broke it), a new one is made.
"""

from __future__ import annotations

import itertools

from tortoise import Tortoise

from gql_usage.storage.db import connection, run_migrations
from support.citus_server import CitusCluster
from support.database import connect
from support.pg_server import psql

__all__ = ["CitusDatabases", "empty_script"]

_TABLES_AND_KEYS = """SELECT t.tablename::text,
  coalesce((SELECT array_agg(c.confrelid::regclass::text) FROM pg_constraint c
            WHERE c.contype = 'f' AND c.conrelid = format('%I', t.tablename)::regclass
              AND c.confrelid <> c.conrelid), '{}')
FROM pg_tables t WHERE t.schemaname = 'public' AND t.tablename <> 'tortoise_migrations'"""
_SEQUENCES = """SELECT sequencename::text FROM pg_sequences
WHERE schemaname = 'public' AND sequencename <> 'tortoise_migrations_id_seq'"""


def _referencing_first(references: dict[str, set[str]]) -> list[str]:
    """Tables ordered so that each comes before every table it references."""
    order: list[str] = []
    left = dict(references)
    while left:
        ready = sorted(t for t in left
                       if not any(t in refs for other, refs in left.items() if other != t))
        if not ready:
            raise RuntimeError(f"foreign keys form a cycle among {sorted(left)}")
        order += ready
        for table in ready:
            del left[table]
    return order


async def empty_script() -> str:
    """The script that empties the connected (migrated) database and restarts its ids."""
    _, tables = await connection().execute_query(_TABLES_AND_KEYS)
    _, sequences = await connection().execute_query(_SEQUENCES)
    order = _referencing_first({str(r[0]): {str(x).strip('"') for x in r[1]} for r in tables})
    deletes = "".join(f'DELETE FROM "{table}";' for table in order)
    restarts = ", ".join(f"setval('\"{r[0]}\"', 1, false)" for r in sequences)
    return ("BEGIN; SET LOCAL citus.multi_shard_modify_mode TO 'sequential';"
            f"{deletes} SELECT {restarts}; COMMIT;")


class CitusDatabases:
    """This xdist worker's databases on its Citus cluster."""

    def __init__(self, cluster: CitusCluster) -> None:
        self.cluster = cluster
        self.shared: str | None = None
        self._empty: str = ""
        self._numbers = itertools.count()

    async def fresh(self, prefix: str) -> str:
        """A new migrated, distributed database (Tortoise not connected to it)."""
        name = f"{prefix}_{next(self._numbers)}"
        url = self.cluster.create_database(name)
        # asyncpg looks up the array types of a connection's first statements with a
        # catalog query that PostgreSQL JIT-compiles on the coordinator (0.5-3 s on this
        # machine, each time a test connects); the tests' statements gain nothing by JIT.
        psql(url, f'ALTER DATABASE "{name}" SET jit = off')
        await run_migrations(url)
        return url

    async def connect_shared(self) -> str:
        """Connect Tortoise to the shared database, emptied of what earlier tests left."""
        if self.shared is not None:
            await connect(self.shared)
            try:
                await connection().execute_script(self._empty)
                return self.shared
            except Exception:  # noqa: BLE001 - whatever broke it, start on a new one
                await Tortoise.close_connections()
        self.shared = await self.fresh("citus_shared")
        await connect(self.shared)
        self._empty = await empty_script()
        return self.shared

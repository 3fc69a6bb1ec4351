"""Distributed mode: the schema laid out on a Citus cluster (docs/citus.md).

The one declared list of how each table is placed on Citus. After the migrations, on a
database where the ``citus`` extension is installed, ``distribute`` makes:

* ``DISTRIBUTED_TABLES`` hash-distributed by ``account_id`` and co-located (one account's
  rows of every table on the same node, so that a statement about one account is routed
  to one shard);
* ``REFERENCE_TABLES`` reference tables (a copy on every node, joined locally by any
  shard): the shared catalogue (endpoints, sources) and the accounts themselves, whose
  external id is unique across accounts, a constraint a hash-distributed table cannot
  hold.

Citus refuses a primary key or unique constraint of a distributed table that lacks the
distribution column, and a foreign key between two distributed tables that does not
join on it. Before distributing a table, ``distribute`` therefore rewrites its keys to
lead with ``account_id`` (``PRIMARY KEY (id)`` becomes ``PRIMARY KEY (account_id, id)``,
and a foreign key ``(created_by_id) REFERENCES app_user (id)`` becomes ``(account_id,
created_by_id) REFERENCES app_user (account_id, id)``; Citus refuses ``ON DELETE SET
NULL`` on such a key, so it becomes ``NO ACTION``: deleting a user who created keys is
refused instead of clearing ``created_by``, and gql_usage deletes no users). Ids stay
unique (they come from one sequence); the statements are the same on SQLite, PostgreSQL
and Citus. On plain PostgreSQL and SQLite nothing changes: the step finds no ``citus``
extension and returns.

Shards move between nodes (``citus_rebalance_start`` after ``citus_add_node``) by logical
replication, which must find the row an ``UPDATE`` or ``DELETE`` changes on the new node:
Citus refuses to move a table that has neither a primary key nor a replica identity.
``usage_pending`` has no key on purpose (appended to, drained by compaction, never looked
up: an index would cost every ingestion), so ``distribute`` gives each distributed table
without a key ``REPLICA IDENTITY FULL`` (the whole old row identifies it; only written to
the WAL with ``wal_level = logical``, which Citus needs anyway). On PostgreSQL nothing
changes.

A table that a later migration adds must be listed here: ``distribute`` refuses to finish
while a table of the schema is neither listed nor ``LOCAL_TABLES``.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import asyncpg
from tortoise.backends.base.client import BaseDBAsyncClient

#: The distribution column of every distributed table.
DISTRIBUTION_COLUMN = "account_id"
#: Per-account tables, hash-distributed by ``account_id`` and co-located with the first.
DISTRIBUTED_TABLES: tuple[str, ...] = (
    "app_user",
    "api_key",
    "account_endpoint",
    "account_source",
    "usage_event",
    "usage_pending",
    "usage_cube",
    "usage_cube_account",
    "usage_period_total",
    "usage_alert",
    "access_token",
)
#: Tables copied to every node.
REFERENCE_TABLES: tuple[str, ...] = ("account", "endpoint", "source")
#: Tables left on the coordinator alone.
LOCAL_TABLES: tuple[str, ...] = ("tortoise_migrations",)
#: Key of the transaction-scoped advisory lock that serialises ``distribute`` runs
#: (servers starting together each migrate).
_LOCK_KEY = 0x6751_4454  # "gQDT"


@dataclass(frozen=True)
class ForeignKey:
    """A foreign key between two distributed tables, as found in the catalogue."""

    table: str
    name: str
    columns: tuple[str, ...]
    referenced: str
    referenced_columns: tuple[str, ...]
    on_delete: str  # pg_constraint.confdeltype: a, r, c, n, d

    def with_account(self) -> str:
        """``ADD CONSTRAINT`` of the same key led by the distribution column."""
        # Citus refuses SET NULL and SET DEFAULT on a key that includes the distribution
        # column: such keys become NO ACTION (gql_usage deletes no rows they protect).
        action = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE",
                  "n": "NO ACTION", "d": "NO ACTION"}[self.on_delete]
        cols = ", ".join((DISTRIBUTION_COLUMN, *self.columns))
        refs = ", ".join((DISTRIBUTION_COLUMN, *self.referenced_columns))
        return (f'ALTER TABLE "{self.table}" ADD CONSTRAINT "{self.name}" FOREIGN KEY ({cols})'
                f' REFERENCES "{self.referenced}" ({refs}) ON DELETE {action}')


class DistributionError(RuntimeError):
    """The schema cannot be distributed as declared (the message says what to change)."""


async def citus_installed(conn: asyncpg.Connection) -> bool:
    """Whether the database has the ``citus`` extension (distributed mode)."""
    return bool(await conn.fetchval(_CITUS_SQL))


_CITUS_SQL = "SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus')"
_distributed: weakref.WeakKeyDictionary[BaseDBAsyncClient, bool] = weakref.WeakKeyDictionary()


async def distributed(conn: BaseDBAsyncClient) -> bool:
    """Whether the database of Tortoise client ``conn`` is in distributed mode (never on
    SQLite); asked once per client (a database does not change mode while it is used)."""
    known = _distributed.get(conn)
    if known is None and conn.capabilities.dialect != "postgres":
        known = _distributed[conn] = False
    if known is None:
        _, rows = await conn.execute_query(_CITUS_SQL)
        known = _distributed[conn] = bool(rows[0][0])
    return known


async def placement(conn: asyncpg.Connection) -> dict[str, str]:
    """How each table is placed now: ``distributed``, ``reference`` or ``citus local``
    (tables absent from the result are plain local tables)."""
    rows = await conn.fetch(
        "SELECT logicalrelid::regclass::text AS t, partmethod::text AS partmethod,"
        " repmodel::text AS repmodel FROM pg_dist_partition")
    kinds: dict[str, str] = {}
    for row in rows:
        if row["partmethod"] == "h":
            kinds[row["t"].strip('"')] = "distributed"
        elif row["repmodel"] == "t":
            kinds[row["t"].strip('"')] = "reference"
        else:
            kinds[row["t"].strip('"')] = "citus local"
    return kinds


async def _columns(conn: asyncpg.Connection, oid: int, attnums: list[int]) -> tuple[str, ...]:
    names = {int(r["attnum"]): str(r["attname"]) for r in await conn.fetch(
        "SELECT attnum, attname FROM pg_attribute WHERE attrelid = $1", oid)}
    return tuple(names[n] for n in attnums)


async def _foreign_keys_between(conn: asyncpg.Connection,
                                tables: set[str]) -> list[ForeignKey]:
    """Foreign keys from one of ``tables`` to one of ``tables``."""
    found = []
    for r in await conn.fetch(
            "SELECT c.conname, c.conrelid, c.conrelid::regclass::text AS t, c.conkey,"
            " c.confrelid, c.confrelid::regclass::text AS rt, c.confkey,"
            " c.confdeltype::text AS confdeltype"
            " FROM pg_constraint c WHERE c.contype = 'f'"
            " AND c.connamespace = 'public'::regnamespace"):
        table, referenced = r["t"].strip('"'), r["rt"].strip('"')
        if table in tables and referenced in tables:
            found.append(ForeignKey(
                table, r["conname"], await _columns(conn, r["conrelid"], list(r["conkey"])),
                referenced, await _columns(conn, r["confrelid"], list(r["confkey"])),
                r["confdeltype"]))
    return found


async def _lead_keys_with_account(conn: asyncpg.Connection, table: str) -> None:
    """Rewrite the primary key and unique constraints of ``table`` that lack
    ``account_id`` to lead with it; refuse a unique index that lacks it."""
    oid = await conn.fetchval("SELECT $1::regclass::oid", table)
    for r in await conn.fetch(
            "SELECT conname, contype::text AS contype, conkey FROM pg_constraint"
            " WHERE conrelid = $1 AND contype IN ('p', 'u')", oid):
        columns = await _columns(conn, oid, list(r["conkey"]))
        if DISTRIBUTION_COLUMN in columns:
            continue
        kind = "PRIMARY KEY" if r["contype"] == "p" else "UNIQUE"
        led = ", ".join((DISTRIBUTION_COLUMN, *columns))
        await conn.execute(f'ALTER TABLE "{table}" DROP CONSTRAINT "{r["conname"]}"')
        await conn.execute(f'ALTER TABLE "{table}" ADD CONSTRAINT "{r["conname"]}" {kind} ({led})')
    for r in await conn.fetch(
            "SELECT i.indexrelid::regclass::text AS name, i.indkey::int2[] AS keys"
            " FROM pg_index i WHERE i.indrelid = $1 AND i.indisunique"
            " AND NOT EXISTS (SELECT FROM pg_constraint c WHERE c.conindid = i.indexrelid)",
            oid):
        columns = await _columns(conn, oid, [int(k) for k in r["keys"] if k])
        if DISTRIBUTION_COLUMN not in columns:
            raise DistributionError(
                f"unique index {r['name']} of {table} lacks {DISTRIBUTION_COLUMN} "
                f"({', '.join(columns)}): Citus cannot enforce it on a distributed table; "
                f"add {DISTRIBUTION_COLUMN} to it in its migration")


async def _identify_rows(conn: asyncpg.Connection, tables: list[str]) -> list[str]:
    """``REPLICA IDENTITY FULL`` for each of ``tables`` that has no primary key and no
    replica identity, so that its shards can be moved by logical replication (Citus
    propagates the setting to every shard); returns the tables changed."""
    changed = []
    for r in await conn.fetch(
            "SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace"
            " AND c.relname = ANY($1::text[]) AND (c.relreplident = 'n' OR"
            " (c.relreplident = 'd' AND NOT EXISTS (SELECT FROM pg_constraint k"
            "  WHERE k.conrelid = c.oid AND k.contype = 'p'))) ORDER BY c.relname", tables):
        await conn.execute(f'ALTER TABLE "{r["relname"]}" REPLICA IDENTITY FULL')
        changed.append(str(r["relname"]))
    return changed


async def distribute(conn: asyncpg.Connection) -> list[str]:
    """Place the tables as declared, if the database has Citus; returns what was done
    (``[]`` on plain PostgreSQL, or when everything is placed already)."""
    if not await citus_installed(conn):
        return []
    done: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        # Shards are created over one connection per node, so that each sees the keys
        # and tables made earlier in this transaction.
        await conn.execute("SET LOCAL citus.multi_shard_modify_mode TO 'sequential'")
        tables = {str(r["tablename"]) for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        unlisted = sorted(tables - {*DISTRIBUTED_TABLES, *REFERENCE_TABLES, *LOCAL_TABLES})
        if unlisted:
            raise DistributionError(
                f"table(s) {', '.join(unlisted)} are not placed: list each in "
                "gql_usage/storage/distribution.py (DISTRIBUTED_TABLES if per account, "
                "REFERENCE_TABLES if shared)")
        placed = await placement(conn)
        for table in REFERENCE_TABLES:
            if table in tables and placed.get(table) != "reference":
                await conn.execute("SELECT create_reference_table($1)", table)
                done.append(f"{table}: reference table")
        todo = [t for t in DISTRIBUTED_TABLES if t in tables and placed.get(t) != "distributed"]
        if todo:
            # Keys between distributed tables must join on account_id: drop them, make
            # every table's keys lead with account_id, distribute, add them back so.
            foreign = [fk for fk in await _foreign_keys_between(conn, set(DISTRIBUTED_TABLES))
                       if DISTRIBUTION_COLUMN not in fk.columns]
            for fk in foreign:
                await conn.execute(f'ALTER TABLE "{fk.table}" DROP CONSTRAINT "{fk.name}"')
            for table in todo:
                await _lead_keys_with_account(conn, table)
            colocated = next((t for t in DISTRIBUTED_TABLES if placed.get(t) == "distributed"),
                             None)
            for table in todo:
                await conn.execute(
                    "SELECT create_distributed_table($1, $2, colocate_with => $3)",
                    table, DISTRIBUTION_COLUMN, colocated or "default")
                colocated = colocated or table
                done.append(f"{table}: distributed by {DISTRIBUTION_COLUMN}")
            for fk in foreign:
                await conn.execute(fk.with_account())
        # Also on a cluster distributed before this step existed: runs whenever a
        # distributed table lacks a replica identity.
        for table in await _identify_rows(conn, [t for t in DISTRIBUTED_TABLES if t in tables]):
            done.append(f"{table}: replica identity full (no primary key; shard moves)")
    return done


async def distribute_url(credentials: dict[str, Any]) -> list[str]:
    """``distribute`` over a connection of its own (asyncpg ``connect`` arguments)."""
    conn = await asyncpg.connect(**credentials)
    try:
        return await distribute(conn)
    finally:
        await conn.close()

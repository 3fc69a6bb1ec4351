"""Database set-up: Tortoise configuration, migrations and the raw-SQL helper.

``Sql`` renders a statement for the connection's dialect (``?`` or ``$n`` placeholders),
so each analytics and ingestion statement is written once. With a replica, model reads
inside ``replica_reads()`` go to it (``ReplicaRouter``) and raw analytics SQL asks for
``read_connection()``. See README, 'When one database is not enough (1): a read replica'.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from typing import Any, TypeVar

import asyncpg
from tortoise import Tortoise, connections
from tortoise.backends.base.client import BaseDBAsyncClient, TransactionalDBClient
from tortoise.backends.base.config_generator import expand_db_url
from tortoise.models import Model

MODELS_MODULE = "gql_usage.storage.models"
MIGRATIONS_MODULE = "gql_usage.storage.migrations"
#: Connection names: the primary (all writes) and the optional streaming replica.
PRIMARY = "default"
#: Tortoise's SQLite backend with gql_usage's SQL functions (``gql_usage.storage.sqlite_backend``).
SQLITE_ENGINE = "gql_usage.storage.sqlite_backend"
REPLICA = "replica"


class PooledConnection(asyncpg.connection.Connection):  # type: ignore[misc]
    """A pooled asyncpg connection released without the reset query.

    asyncpg resets every connection it takes back (``pg_advisory_unlock_all(); CLOSE ALL;
    UNLISTEN *; RESET ALL``): a second round trip after every statement. gql_usage keeps
    no session state: its advisory locks and settings are transaction-scoped, and it opens
    no cursors and listens to nothing. asyncpg still rolls back an open transaction."""

    def get_reset_query(self) -> str:
        return ""


#: Session settings of every PostgreSQL connection of the pool. ``jit`` off: no statement
#: here reads more than an index-bounded few thousand rows, but an analytics statement
#: (its integers written into its text, so a new text for every range) carries fallback
#: branches that never run and whose estimated cost (a scan of an account's raw events)
#: passes ``jit_above_cost``; PostgreSQL then compiled every such statement, 130-150 ms of
#: a 190 ms 365-day page (EXPLAIN ANALYZE at 1M events: JIT 154 ms, the rest 37 ms).
#: Compaction and ingestion also set it in their transactions. ``plan_cache_mode``:
#: every statement planned for its own parameters. After five runs PostgreSQL may switch
#: a prepared statement to a generic plan, and the ingestion statement's generic plan is
#: bad for batches of many accounts: 1,000 events of 1,000 accounts took 100-118 ms
#: instead of 24 ms. ``python -m bench --events 1000000``: the sparse mix (10,000
#: accounts x 100 events) folded at 23,154 instead of 3,714 events/s (docs/performance.md).
POSTGRES_SESSION = {"jit": "off", "plan_cache_mode": "force_custom_plan"}


def connection_config(url: str) -> str | dict[str, Any]:
    """Tortoise's config for one connection: on asyncpg its expansion with
    ``PooledConnection`` and ``POSTGRES_SESSION``, on SQLite with ``SQLITE_ENGINE``,
    otherwise the URL."""
    config: dict[str, Any] = expand_db_url(url)
    if config["engine"] == "tortoise.backends.sqlite":
        config["engine"] = SQLITE_ENGINE
        return config
    if config["engine"] != "tortoise.backends.asyncpg":
        return url
    config["credentials"]["connection_class"] = PooledConnection
    config["credentials"]["server_settings"] = dict(POSTGRES_SESSION)
    return config


def tortoise_config(database_url: str, replica_url: str | None = None) -> dict[str, Any]:
    """Tortoise config; with ``replica_url`` a ``replica`` connection and its router."""
    conns = {PRIMARY: connection_config(database_url)}
    if replica_url:
        conns[REPLICA] = connection_config(replica_url)
    config: dict[str, Any] = {
        "connections": conns,
        "apps": {
            "models": {
                "models": [MODELS_MODULE],
                "default_connection": PRIMARY,
                "migrations": MIGRATIONS_MODULE,
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }
    if replica_url:
        config["routers"] = [ReplicaRouter]
    return config


_replica_reads: ContextVar[bool] = ContextVar("gql_usage_replica_reads", default=False)


@contextlib.contextmanager
def replica_reads() -> Iterator[None]:
    """Within this block (and tasks started in it) model reads go to the replica, if any.

    Only read-only work belongs here: a replica lags, so code that reads in order to
    write, or that decides access, must read the primary.
    """
    token = _replica_reads.set(True)
    try:
        yield
    finally:
        _replica_reads.reset(token)


def _replica_configured() -> bool:
    return REPLICA in connections.db_config


def _in_primary_transaction() -> bool:
    """Whether this task is inside a transaction on the primary (reads must see it)."""
    return isinstance(connections.get(PRIMARY), TransactionalDBClient)


class ReplicaRouter:
    """Tortoise database router (``routers`` in the config) used when a replica is set."""

    def db_for_read(self, model: type) -> str:
        if _replica_reads.get() and not _in_primary_transaction():
            return REPLICA
        return PRIMARY

    def db_for_write(self, model: type) -> str:
        return PRIMARY


async def run_migrations(database_url: str) -> None:
    """Apply pending migrations (``gql_usage/storage/migrations``) to the database; on a
    database with the citus extension, then place the tables on the cluster
    (``gql_usage.storage.distribution``)."""
    from tortoise.migrations.api import migrate

    await migrate(config=tortoise_config(database_url))
    await Tortoise.close_connections()
    config: dict[str, Any] = expand_db_url(database_url)
    if config["engine"] == "tortoise.backends.asyncpg":
        from gql_usage.storage.distribution import distribute_url

        # Distributed mode (docs/citus.md): a no-op unless the database has Citus.
        credentials = config["credentials"]
        await distribute_url({k: credentials[k] for k in ("host", "port", "user", "password",
                                                          "database") if k in credentials})


async def init_db(database_url: str, *, replica_url: str | None = None,
                  migrate: bool = True) -> None:
    """Connect (migrating the primary first, unless ``migrate`` is false)."""
    if migrate:
        await run_migrations(database_url)
    await Tortoise.init(config=tortoise_config(database_url, replica_url),
                        _enable_global_fallback=True)


async def close_db() -> None:
    await Tortoise.close_connections()


def connection() -> BaseDBAsyncClient:
    """The primary: every write, and reads that must not lag (auth, read-then-write)."""
    return connections.get(PRIMARY)


def read_connection() -> BaseDBAsyncClient:
    """The replica when one is configured (and no primary transaction is open), else the
    primary: for read-only analytics that may lag the primary by the replication delay."""
    if _replica_configured() and not _in_primary_transaction():
        return connections.get(REPLICA)
    return connection()


def dialect(conn: BaseDBAsyncClient | None = None) -> str:
    """``"sqlite"`` or ``"postgres"``."""
    return (conn or connection()).capabilities.dialect


M = TypeVar("M", bound=Model)


class Value:
    """A bound parameter, for values that would otherwise read as SQL text (strings)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class Sql:
    """A statement under construction: text with ``{}`` markers for parameters.

    >>> q = Sql("postgres"); q.add("a = ", 1, " AND b = ", 2); q.text
    'a = $1 AND b = $2'
    """

    def __init__(self, dialect_name: str, *, inline_ints: bool = False) -> None:
        """With ``inline_ints``, integers are written into the text as literals instead of
        bound: PostgreSQL then plans the statement for the actual values every time. A
        prepared statement switches to a generic plan after five runs, which for the
        analytics' range scans was measured five times slower."""
        self.dialect = dialect_name
        self.inline_ints = inline_ints
        self.parts: list[str] = []
        self.params: list[Any] = []

    def param(self, value: Any) -> str:
        if self.inline_ints and type(value) is int:
            return str(value)
        self.params.append(value)
        return "?" if self.dialect == "sqlite" else f"${len(self.params)}"

    def add(self, *pieces: Any) -> Sql:
        """Append pieces: ``str`` is SQL text, anything else becomes a bound parameter.

        Wrap a string *value* in ``Value`` to bind it rather than splice it in.
        """
        for piece in pieces:
            if isinstance(piece, str):
                self.parts.append(piece)
            elif isinstance(piece, Value):
                self.parts.append(self.param(piece.value))
            else:
                self.parts.append(self.param(piece))
        return self

    def in_list(self, column: str, values: Sequence[Any]) -> Sql:
        """``column`` is one of ``values`` (``FALSE`` when empty), however many there are.

        The whole list is ONE bound parameter: ``column = ANY($n)`` (an array; PostgreSQL
        types it from the column) or, on SQLite, ``column IN (SELECT value FROM
        json_each(?))``. One parameter per value would fail past 32,767 values on asyncpg
        and 32,766 on SQLite. With ``inline_ints`` a list of integers is written into the
        text instead, as one array literal on PostgreSQL and a literal list on SQLite
        (neither is a bound parameter)."""
        if not values:
            return self.add("1 = 0")
        if self.inline_ints and all(type(v) is int for v in values):
            listed = ",".join(str(v) for v in values)
            if self.dialect == "postgres":
                return self.add(f"{column} = ANY('{{{listed}}}')")
            return self.add(f"{column} IN ({listed})")
        if self.dialect == "postgres":
            return self.add(f"{column} = ANY(", Value(list(values)), ")")
        return self.add(f"{column} IN (SELECT value FROM json_each(",
                        Value(json.dumps(list(values))), "))")

    @property
    def text(self) -> str:
        return "".join(self.parts)


async def fetch_models(model: type[M], sql: Sql) -> list[M]:
    """Instances of ``model`` from a hand-written ``SELECT *``, read where analytics reads
    (the replica when configured), and built from the rows exactly as the ORM builds
    them. For per-request lookups: the ORM's query building costs more than the query."""
    rows = await fetch(sql, read_connection())
    return [model._init_from_db(**row) for row in rows]


async def fetch(sql: Sql, conn: BaseDBAsyncClient | None = None) -> list[dict[str, Any]]:
    return await (conn or connection()).execute_query_dict(sql.text, sql.params)


async def fetch_rows(sql: Sql, conn: BaseDBAsyncClient | None = None) -> list[Sequence[Any]]:
    """Rows as tuples (cheaper than dicts for large results)."""
    _, rows = await (conn or connection()).execute_query(sql.text, sql.params)
    return [tuple(r) for r in rows]


#: Tortoise's statement log (``StatementCounter`` reads it).
_STATEMENT_LOG = logging.getLogger("tortoise.db_client")


async def raw_fetch(raw: asyncpg.Connection, sql: str, *params: Any) -> list[asyncpg.Record]:
    """``raw.fetch`` on a pooled asyncpg connection of our own, logged as Tortoise logs
    its statements (``"<sql>: <params>"``), so that ``StatementCounter`` sees it too."""
    _STATEMENT_LOG.debug("%s: %s", sql, list(params))
    return list(await raw.fetch(sql, *params))


#: For Tortoise's own CLI: ``tortoise -c gql_usage.storage.db.TORTOISE_ORM makemigrations``.
TORTOISE_ORM = tortoise_config("sqlite://:memory:")


class StatementCounter:
    """Counts the SQL statements Tortoise sends, from its ``tortoise.db_client`` log.

    Used by the tests and the benchmark to show that a request costs a fixed number of
    statements. Counting is independent of the code that builds the statements.
    """

    def __init__(self) -> None:
        self.statements: list[str] = []
        #: (sql, parameters) of each statement, as sent (to run it again: ``EXPLAIN``).
        self.calls: list[tuple[str, list[Any]]] = []
        self._logger = _STATEMENT_LOG
        counter = self

        class _Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                text = str(record.msg)
                if text.startswith(("Created connection", "Closed connection")):
                    return
                counter.statements.append(record.getMessage())
                args = record.args
                if isinstance(args, tuple) and len(args) == 2:
                    params = args[1]
                    counter.calls.append((str(args[0]), list(params) if isinstance(
                        params, list | tuple) else []))

        self._handler = _Handler(level=logging.DEBUG)
        self._old_level = self._logger.level

    @property
    def count(self) -> int:
        return len(self.statements)

    def __enter__(self) -> StatementCounter:
        self._logger.addHandler(self._handler)
        self._logger.setLevel(logging.DEBUG)
        return self

    def __exit__(self, *exc: object) -> None:
        self._logger.removeHandler(self._handler)
        self._logger.setLevel(self._old_level)

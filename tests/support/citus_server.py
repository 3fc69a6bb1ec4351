"""Throwaway Citus clusters for the tests: one coordinator and N workers on this machine.

Each node is an ordinary disposable PostgreSQL server (``pg_server.CrashablePostgres``:
a data directory in a temporary directory, run as the ``postgres`` OS user when root,
``trust`` authentication, listening on 127.0.0.1 on a free port) started with
``shared_preload_libraries = 'citus'``. A database is made on every node (Citus does not
propagate ``CREATE DATABASE``), ``CREATE EXTENSION citus`` is run in each, and the
coordinator is told where it and its workers are (``citus_set_coordinator_host``,
``citus_add_node``). Any node can be killed (SIGKILL) and started again on the same port.

Citus is not packaged in Debian; ``.ci/run`` builds it from ``../shared/citus`` when that
build kit is present. Without ``citus.so`` in the server's library directory,
``citus_missing()`` says so, and the tests skip with that reason.

Usage::

    with citus_cluster(workers=2) as cluster:
        url = cluster.create_database("gql_citus")   # the coordinator's URL
        ...
        cluster.workers[0].kill(); cluster.workers[0].start()
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from support.pg_server import CrashablePostgres, find_pg_bin, psql

__all__ = ["CitusCluster", "citus_cluster", "citus_library", "citus_missing"]

#: Server settings of every node. Few shards (the default is 32 per table) keep the
#: tests' DDL quick; ``wal_level = logical`` lets shards move between nodes (rebalance).
NODE_SETTINGS = (
    "shared_preload_libraries=citus",
    "max_connections=200",
    "wal_level=logical",
    "max_replication_slots=16",
    "max_wal_senders=16",
    "citus.shard_count=8",
    # The coordinator's connections to the workers: no more than the tests need.
    "citus.max_shared_pool_size=100",
    # Loopback connections between nodes, without TLS (libpq would otherwise look for
    # client certificates in the home directory of whoever started the tests).
    "citus.node_conninfo=sslmode=disable",
)
_DB_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def citus_library() -> Path:
    """Where ``citus.so`` must be: the library directory next to the server binaries
    (Debian: ``/usr/lib/postgresql/15/lib``)."""
    return find_pg_bin().parent / "lib" / "citus.so"


def citus_missing() -> str | None:
    """Why Citus tests cannot run here (``None`` when they can)."""
    try:
        library = citus_library()
    except RuntimeError as exc:
        return f"no PostgreSQL server binaries: {exc}"
    if not library.is_file():
        return (f"Citus is not installed ({library} is absent); build it with "
                "`bash ../shared/citus/build.sh` (what .ci/run does when the kit is there)")
    return None


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


class CitusCluster:
    """A coordinator and ``workers`` workers, each a :class:`CrashablePostgres`."""

    def __init__(self, workers: int = 2) -> None:
        if workers < 1:
            raise ValueError(f"a Citus cluster needs at least one worker, not {workers}")
        self.coordinator = CrashablePostgres()
        self.workers = [CrashablePostgres() for _ in range(workers)]
        self.databases: list[str] = []

    @property
    def nodes(self) -> list[CrashablePostgres]:
        return [self.coordinator, *self.workers]

    def start(self) -> None:
        for node in self.nodes:
            node.settings = list(NODE_SETTINGS)
            node.init()
            node.start()

    def create_database(self, name: str) -> str:
        """Make database ``name`` on every node with the citus extension, join the nodes
        in it, and return the coordinator's URL of it."""
        if not _DB_NAME_RE.fullmatch(name):
            raise ValueError(f"invalid database name {name!r}: use [A-Za-z_][A-Za-z0-9_]{{0,62}}")
        for node in self.nodes:
            psql(node.url, f'CREATE DATABASE "{name}"')
            psql(_with_database(node.url, name), "CREATE EXTENSION citus")
        url = _with_database(self.coordinator.url, name)
        psql(url, f"SELECT citus_set_coordinator_host('127.0.0.1', {self.coordinator.port})")
        for worker in self.workers:
            psql(url, f"SELECT citus_add_node('127.0.0.1', {worker.port})")
        self.databases.append(name)
        return url

    def add_worker(self) -> CrashablePostgres:
        """Start one more worker with the same settings, make every database of the
        cluster on it (with the citus extension), ``citus_add_node`` it in each, and return
        it. It holds no shards until they are moved to it (``citus_rebalance_start``)."""
        worker = CrashablePostgres()
        worker.settings = list(NODE_SETTINGS)
        self.workers.append(worker)  # removed with the others by close(), even if it fails
        worker.init()
        worker.start()
        for name in self.databases:
            psql(worker.url, f'CREATE DATABASE "{name}"')
            psql(_with_database(worker.url, name), "CREATE EXTENSION citus")
            psql(_with_database(self.coordinator.url, name),
                 f"SELECT citus_add_node('127.0.0.1', {worker.port})")
        return worker

    def node_url(self, node: CrashablePostgres, name: str) -> str:
        """URL of database ``name`` on one node (to look at a worker's shards directly)."""
        return _with_database(node.url, name)

    def close(self) -> None:
        for node in reversed(self.nodes):
            with contextlib.suppress(Exception):
                node.close()


@contextlib.contextmanager
def citus_cluster(workers: int = 2) -> Iterator[CitusCluster]:
    """A started :class:`CitusCluster`, removed (every data directory) on exit.

    Raises:
        RuntimeError: if Citus is not installed (``citus_missing()`` says why) or a node
            does not start (with the tail of its log).
    """
    missing = citus_missing()
    if missing:
        raise RuntimeError(missing)
    cluster = CitusCluster(workers)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()

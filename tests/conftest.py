"""Shared fixtures. Every database test runs twice: on a real SQLite file and on a real
PostgreSQL server that this suite starts itself (``tests/support/pg_server.py``).

Speed (README, "Tests"): the suite runs on pytest-xdist workers (``-n 2`` in the pytest
options), each with its own PostgreSQL server and ONE shared database, emptied before
each test by one statement (``_EMPTY_TABLES``); SQLite tests get a copy of a
migrated template file. A test that changes more than rows (drops a table, alters
storage parameters) asks for a database of its own with ``@pytest.mark.own_database``.

Tests marked ``citus`` (a whole module: ``pytestmark = pytest.mark.citus``) run on a third
database, a Citus cluster (a coordinator and two workers) that each xdist worker starts on
its first such test (``tests/support/citus_databases.py``); without Citus that
parametrization skips, saying why (``citus_missing()``)."""

from __future__ import annotations

import contextlib
import itertools
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from support.citus_databases import CitusDatabases
from support.citus_server import citus_cluster, citus_missing
from support.config import BACKENDS, make_settings
from support.database import connect
from support.pg_server import create_database, drop_database, start_postgres
from tortoise import Tortoise

from gql_usage.app import create_app
from gql_usage.storage.db import connection, run_migrations

_numbers = itertools.count()
#: Empties every table but the migrations' own, and restarts the id sequences: one
#: statement, one round trip. DELETE, not TRUNCATE: on tables of a few rows it is four
#: times faster (TRUNCATE makes new files for every table and index); foreign keys are
#: not checked meanwhile (``session_replication_role``, for this transaction only). Fails
#: (and the database is made again) if a test dropped the migrations' table.
_EMPTY_TABLES = """DO $$ DECLARE name text; BEGIN
  IF to_regclass('tortoise_migrations') IS NULL THEN
    RAISE EXCEPTION 'the migrations table is gone';
  END IF;
  PERFORM set_config('session_replication_role', 'replica', true);
  FOR name IN SELECT tablename FROM pg_tables
              WHERE schemaname = 'public' AND tablename <> 'tortoise_migrations' LOOP
    EXECUTE format('DELETE FROM %I', name);
  END LOOP;
  FOR name IN SELECT sequencename FROM pg_sequences WHERE schemaname = 'public' LOOP
    EXECUTE format('ALTER SEQUENCE %I RESTART', name);
  END LOOP;
END $$"""


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    """Without pytest-xdist (``-p no:xdist``, or not installed) its options in the
    configured ``addopts`` are accepted and ignored: one process."""
    if pluginmanager.has_plugin("xdist"):
        return
    group = parser.getgroup("xdist-absent", "pytest-xdist is not active")
    group.addoption("--numprocesses", dest="numprocesses", default=None,
                    help="ignored: pytest-xdist is not active")
    group.addoption("--dist", dest="dist", default="no", help="ignored")
    group.addoption("--no-loadscope-reorder", dest="loadscopereorder", action="store_false",
                    help="ignored")


#: The parametrization of ``db_url`` and ``module_database`` for tests marked ``citus``.
WITH_CITUS = [*BACKENDS, pytest.param("citus", marks=pytest.mark.skipif(
    citus_missing() is not None, reason=citus_missing() or ""))]


def _parametrized(mark: pytest.Mark) -> set[str]:
    names = mark.args[0] if mark.args else mark.kwargs.get("argnames", ())
    if isinstance(names, str):
        names = names.split(",")
    return {name.strip() for name in names}


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test marked ``citus`` gets ``db_url`` / ``module_database`` (and what is built on
    them) on SQLite, PostgreSQL and Citus; a test parametrizing them itself keeps its own
    list. (As a ``parametrize`` mark, which pytest's own hooks, run after this one, apply
    in place of the fixtures' params.)"""
    if metafunc.definition.get_closest_marker("citus") is None:
        return
    taken = set().union(*(_parametrized(m) for m in metafunc.definition.iter_markers(
        "parametrize")))
    for name, scope in (("db_url", "function"), ("module_database", "module")):
        if name in metafunc.fixturenames and name not in taken:
            metafunc.definition.add_marker(pytest.mark.parametrize(
                name, WITH_CITUS, indirect=True, scope=scope))


@pytest.fixture(scope="session")
def citus_databases() -> Iterator[CitusDatabases]:
    """This worker's Citus cluster (started on first use) and its databases."""
    with citus_cluster(workers=2) as cluster:
        yield CitusDatabases(cluster)


@pytest.fixture(scope="session")
def pg_base_url() -> Iterator[str]:
    """This worker's own PostgreSQL server."""
    with start_postgres() as url:
        yield url


@dataclass
class Databases:
    """This worker's migrated templates and its shared PostgreSQL database."""

    templates: dict[str, str] = field(default_factory=dict)
    shared: str | None = None
    used: bool = False


@pytest.fixture(scope="session")
def databases() -> Databases:
    return Databases()


async def _template(backend: str, dbs: Databases, tmp_root: Path,
                    request: pytest.FixtureRequest) -> str:
    if backend not in dbs.templates:
        if backend == "sqlite":
            url = f"sqlite://{tmp_root / 'template.sqlite3'}"
        else:
            base = request.getfixturevalue("pg_base_url")
            url = create_database(base, "gql_template")
        await run_migrations(url)
        dbs.templates[backend] = url
    return dbs.templates[backend]


async def _shared_postgres(dbs: Databases, base: str) -> str:
    """Connect to the worker's shared database, emptied of what earlier tests left. If
    it cannot be emptied (a test broke it), it is made again from the template."""
    if dbs.shared is None:
        dbs.shared = create_database(base, "gql_shared", template="gql_template")
    else:
        await connect(dbs.shared)
        try:
            await connection().execute_script(_EMPTY_TABLES)
            return dbs.shared
        except Exception:  # noqa: BLE001 - whatever broke it, start again
            await Tortoise.close_connections()
            drop_database(base, "gql_shared")
            dbs.shared = create_database(base, "gql_shared", template="gql_template")
    await connect(dbs.shared)
    return dbs.shared


@pytest.fixture(params=BACKENDS)
async def db_url(request: pytest.FixtureRequest, databases: Databases,
                 tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """A migrated database with no rows, Tortoise connected to it."""
    backend = request.param
    root = tmp_path_factory.getbasetemp()
    if backend != "citus":
        await _template(backend, databases, root, request)
    n = next(_numbers)
    path: Path | None = None
    if backend == "citus":
        citus: CitusDatabases = request.getfixturevalue("citus_databases")
        if request.node.get_closest_marker("own_database"):
            url = await citus.fresh(f"test_{n}")
            await connect(url)
        else:
            url = await citus.connect_shared()
    elif backend == "sqlite":
        path = root / f"test_{n}.sqlite3"
        shutil.copy(root / "template.sqlite3", path)
        url = f"sqlite://{path}"
        await connect(url)
    elif request.node.get_closest_marker("own_database"):
        url = create_database(request.getfixturevalue("pg_base_url"), f"test_{n}",
                              template="gql_template")
        await connect(url)
    else:
        url = await _shared_postgres(databases, request.getfixturevalue("pg_base_url"))
    try:
        yield url
    finally:
        await Tortoise.close_connections()
        if path is not None:
            for leftover in (path, path.with_name(path.name + "-wal"),
                             path.with_name(path.name + "-shm")):
                with contextlib.suppress(OSError):
                    leftover.unlink()


@pytest.fixture(scope="module", params=BACKENDS)
async def module_database(request: pytest.FixtureRequest, databases: Databases,
                          tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated database of the module's own, for tests that only read data set up once
    per module (Tortoise is not connected: ``support.database.connect`` it per test, since
    ``db_url`` tests in between point it elsewhere). Its tests run on one xdist worker."""
    backend = request.param
    if backend == "citus":
        citus: CitusDatabases = request.getfixturevalue("citus_databases")
        return await citus.fresh("module")
    root = tmp_path_factory.getbasetemp()
    await _template(backend, databases, root, request)
    n = next(_numbers)
    if backend == "sqlite":
        path = root / f"module_{n}.sqlite3"
        shutil.copy(root / "template.sqlite3", path)
        return f"sqlite://{path}"
    return create_database(request.getfixturevalue("pg_base_url"), f"module_{n}",
                           template="gql_template")


@pytest.fixture
async def client(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(db_url), manage_db=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


TESTS = Path(__file__).parent
SYSTEM_TESTS = TESTS / "system"
#: Run first on the xdist workers, longest first (``--durations`` on one core), so that
#: no worker is left alone with a long test at the end.
LONGEST_FIRST = [
    "system/test_load.py", "integration/test_cardinality.py", "system/test_bench.py",
    "integration/test_refusals.py", "system/test_faults.py", "system/test_rate_limit_shared.py",
    "system/test_cli.py", "system/test_alert_delivery.py", "integration/test_alerts.py",
    "integration/test_previous_period.py", "integration/test_spikes.py",
    "system/test_connections.py", "system/test_replica.py",
    "integration/test_ingest_bounds.py", "integration/test_batching.py",
    "integration/test_fuzz.py", "integration/test_exactness.py",
    "integration/test_hostile_input.py", "system/test_docs.py",
]
#: Modules whose module- or session-scoped servers should start once: all their tests run
#: on one worker (``--dist loadgroup``).
ONE_WORKER = {"system/test_connections.py", "system/test_replica.py",
              "system/test_rate_limit_shared.py", "system/test_docs.py",
              "system/test_graphiql_browser.py"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/system/ (subprocess servers, faults, load) is ``slow``:
    ``pytest -m "not slow"`` is the quick inner loop. On xdist workers, the longest
    modules go first and some modules stay on one worker."""
    for item in items:
        if item.path.is_relative_to(SYSTEM_TESTS):
            item.add_marker(pytest.mark.slow)
    if not hasattr(config, "workerinput"):
        return
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    for item in items:
        name = item.path.relative_to(TESTS).as_posix() if item.path.is_relative_to(TESTS) else ""
        if name in ONE_WORKER:
            item.add_marker(pytest.mark.xdist_group(name))
        elif "module_database" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group(f"{name}::module_database"))
    items.sort(key=lambda item: rank.get(
        item.path.relative_to(TESTS).as_posix() if item.path.is_relative_to(TESTS) else "",
        len(rank)))

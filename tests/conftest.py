"""Shared fixtures. Every database test runs twice: on a real SQLite file and on a real
PostgreSQL server that this suite starts itself (``tests/pg_server.py``)."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from support.config import BACKENDS, make_settings
from support.pg_server import create_database, start_postgres
from tortoise import Tortoise
from tortoise.backends.base.executor import EXECUTOR_CACHE

from gql_usage.app import create_app
from gql_usage.db import run_migrations, tortoise_config

_numbers = itertools.count()


@pytest.fixture(scope="session")
def pg_base_url() -> Iterator[str]:
    with start_postgres() as url:
        yield url


@pytest.fixture(scope="session")
async def templates(tmp_path_factory: pytest.TempPathFactory,
                    request: pytest.FixtureRequest) -> dict[str, str]:
    """A migrated template database per backend (made lazily, once per session)."""
    return {}


async def _template(backend: str, templates: dict[str, str], tmp_root: Path,
                    request: pytest.FixtureRequest) -> str:
    if backend not in templates:
        if backend == "sqlite":
            url = f"sqlite://{tmp_root / 'template.sqlite3'}"
        else:
            base = request.getfixturevalue("pg_base_url")
            url = create_database(base, "gql_template")
        await run_migrations(url)
        templates[backend] = url
    return templates[backend]


@pytest.fixture(params=BACKENDS)
async def db_url(request: pytest.FixtureRequest, templates: dict[str, str],
                 tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """A fresh, migrated database with Tortoise connected to it."""
    backend = request.param
    root = tmp_path_factory.getbasetemp()
    template = await _template(backend, templates, root, request)
    n = next(_numbers)
    if backend == "sqlite":
        path = root / f"test_{n}.sqlite3"
        shutil.copy(template.removeprefix("sqlite://"), path)
        url = f"sqlite://{path}"
    else:
        base = request.getfixturevalue("pg_base_url")
        url = create_database(base, f"test_{n}", template="gql_template")
    # Tortoise caches per-model SQL by connection name; tests switch dialects.
    EXECUTOR_CACHE.clear()
    await Tortoise.init(config=tortoise_config(url), _enable_global_fallback=True)
    try:
        yield url
    finally:
        await Tortoise.close_connections()


@pytest.fixture
async def client(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(db_url), manage_db=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


SYSTEM_TESTS = Path(__file__).parent / "system"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/system/ (subprocess servers, faults, load) is ``slow``:
    ``pytest -m "not slow"`` is the quick inner loop."""
    for item in items:
        if item.path.is_relative_to(SYSTEM_TESTS):
            item.add_marker(pytest.mark.slow)

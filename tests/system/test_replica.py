"""Read routing to a PostgreSQL streaming replica, against a real primary and replica that
these tests start (``tests/support/pg_replica.py``).

The proof that a read went to the replica: pause WAL replay on the replica
(``pg_wal_replay_pause()``), change data on the primary, and see which version each read
returns; then resume and see the two converge.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from support.config import make_settings
from support.helpers import event, gql, ingest, make_account, put
from support.pg_replica import (
    ReplicaPair,
    psql,
    start_primary_and_replica,
    wait_for_replay,
    with_database,
)
from support.pg_server import create_database
from tortoise import Tortoise
from tortoise.backends.base.executor import EXECUTOR_CACHE
from tortoise.transactions import in_transaction

from gql_usage.app import create_app
from gql_usage.settings import MissingSetting, load_settings
from gql_usage.storage.db import (
    connection,
    read_connection,
    replica_reads,
    run_migrations,
    tortoise_config,
)
from gql_usage.storage.models import Account, Plan

_names = itertools.count()
PAUSE_TIMEOUT_S = 10.0
USAGE = """{ account { usage(filter: {from: "2026-01-01T00:00:00Z", to: "2026-02-01T00:00:00Z"}) {
    calls credits breakdown(by: API_KEY) { label calls credits } } } }"""


@pytest.fixture(scope="module")
def pair() -> Iterator[ReplicaPair]:
    with start_primary_and_replica() as started:
        yield started


@pytest.fixture
async def routed(pair: ReplicaPair) -> AsyncIterator[tuple[str, str]]:
    """A migrated database on the primary, replayed on the replica; Tortoise connected to
    both with the replica router. Replay is resumed afterwards whatever happened."""
    name = f"replica_{os.getpid()}_{next(_names)}"
    primary = create_database(pair.primary_url, name)
    await run_migrations(primary)
    await asyncio.to_thread(wait_for_replay, pair)
    replica = with_database(pair.replica_url, name)
    EXECUTOR_CACHE.clear()
    await Tortoise.init(config=tortoise_config(primary, replica), _enable_global_fallback=True)
    try:
        yield primary, replica
    finally:
        await Tortoise.close_connections()
        psql(pair.replica_url, "SELECT pg_wal_replay_resume()")


async def _pause_replay(replica_url: str) -> None:
    await asyncio.to_thread(psql, replica_url, "SELECT pg_wal_replay_pause()")
    deadline = time.monotonic() + PAUSE_TIMEOUT_S
    while await asyncio.to_thread(psql, replica_url,
                                  "SELECT pg_get_wal_replay_pause_state()") != "paused":
        assert time.monotonic() < deadline, "replica replay did not pause"
        await asyncio.sleep(0.05)


async def _resume_replay(pair: ReplicaPair, replica_url: str) -> None:
    await asyncio.to_thread(psql, replica_url, "SELECT pg_wal_replay_resume()")
    await asyncio.to_thread(wait_for_replay, pair)


async def _event_totals(conn: Any) -> tuple[int, int]:
    _, rows = await conn.execute_query(
        "SELECT COUNT(*), COALESCE(SUM(credits), 0) FROM usage_event")
    return int(rows[0][0]), int(rows[0][1])


async def _role(conn: Any, user: str) -> str:
    _, rows = await conn.execute_query("SELECT role FROM app_user WHERE external_id = $1",
                                       [user])
    return str(rows[0][0])


async def _converged(ask: Any, expected: Any, within_s: float = 10.0) -> Any:
    """The replica's answer once it equals ``expected`` (or the last one after
    ``within_s``): replay is asynchronous, so a fresh snapshot may trail the LSN check by
    a moment; the assertion is that the dashboard converges."""
    deadline = time.monotonic() + within_s
    while True:
        got = _usage(await ask())
        if got == expected or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.1)


def _usage(body: dict[str, Any]) -> Any:
    assert "errors" not in body, body
    return body["data"]["account"]["usage"]


async def test_dashboard_reads_the_replica_while_auth_and_writes_use_the_primary(
        pair: ReplicaPair, routed: tuple[str, str]) -> None:
    primary, replica = routed
    app = create_app(make_settings(primary, replica_database_url=replica), manage_db=False)
    t = datetime(2026, 1, 5, 10, 7, tzinfo=UTC)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as c:
        await make_account(c, "acme", users=[("admin", "ADMIN"), ("bob", "ADMIN")],
                           keys=["k1"])
        assert await ingest(c, [event(f"e{i}", "acme", "k1", "admin", "/v2/person", "api",
                                      credits, t) for i, credits in enumerate((5, 7, 11))]) \
            == {"accepted": 3, "duplicates": 0, "rejected": []}
        await asyncio.to_thread(wait_for_replay, pair)
        before = {"calls": 3, "credits": 23,
                  "breakdown": [{"label": "Key k1", "calls": 3, "credits": 23}]}
        assert await _converged(lambda: gql(c, USAGE), before) == before
        assert _usage(await gql(c, USAGE, user="bob")) == before

        await _pause_replay(replica)
        # Writes while the replica is frozen: events, a demotion, a rename, a new admin.
        assert await ingest(c, [event("e3", "acme", "k1", "admin", "/v2/company", "api",
                                      100, t),
                                event("e4", "acme", "k1", "bob", "/v2/person", "api", 200,
                                      t)]) == {"accepted": 2, "duplicates": 0, "rejected": []}
        await put(c, "/v1/accounts/acme/users/bob",
                  {"name": "Bob", "email": "bob@acme.example", "role": "MEMBER"})
        await put(c, "/v1/accounts/acme/api-keys/k1",
                  {"name": "Production key", "prefix": "pk_k1", "createdBy": "admin",
                   "createdAt": "2025-06-01T00:00:00Z", "revokedAt": None})
        # The service API's read-then-write (the account of a new user) reads the primary.
        await put(c, "/v1/accounts/acme/users/carol",
                  {"name": "Carol", "email": "carol@acme.example", "role": "ADMIN"})

        assert await _event_totals(connection()) == (5, 323)
        assert await _event_totals(read_connection()) == (3, 23)
        # The dashboard (analytics SQL and the key's label, a model read) is the replica's.
        assert _usage(await gql(c, USAGE)) == before
        # Authentication is the primary's: the demotion counts at once although the
        # replica still has bob as an admin, and carol exists although the replica lacks her.
        assert (await _role(connection(), "bob"), await _role(read_connection(), "bob")) \
            == ("MEMBER", "ADMIN")
        refused = await gql(c, USAGE, user="bob")
        assert refused["data"]["account"]["usage"] is None
        assert [e["extensions"]["code"] for e in refused["errors"]] == ["FORBIDDEN"]
        assert _usage(await gql(c, USAGE, user="carol")) == before

        await _resume_replay(pair, replica)
        after = {"calls": 5, "credits": 323,
                 "breakdown": [{"label": "Production key", "calls": 5, "credits": 323}]}
        assert await _event_totals(read_connection()) == (5, 323)
        assert await _converged(lambda: gql(c, USAGE), after) == after
        assert await _converged(lambda: gql(c, USAGE, user="carol"), after) == after
        refused = await gql(c, USAGE, user="bob")
        assert [e["extensions"]["code"] for e in refused["errors"]] == ["FORBIDDEN"]


async def test_model_reads_go_to_the_replica_only_inside_replica_reads(
        routed: tuple[str, str]) -> None:
    primary, replica = routed
    _, rows = await read_connection().execute_query("SELECT pg_is_in_recovery()")
    assert rows[0][0] is True
    _, rows = await connection().execute_query("SELECT pg_is_in_recovery()")
    assert rows[0][0] is False

    await _pause_replay(replica)
    await Account.create(external_id="fresh", name="Fresh", plan=Plan.PRO,
                         period_start=datetime(2026, 1, 1, tzinfo=UTC),
                         period_end=datetime(2026, 2, 1, tzinfo=UTC))
    assert await Account.filter(external_id="fresh").exists()  # outside: the primary
    with replica_reads():
        assert not await Account.filter(external_id="fresh").exists()  # the lagging replica
        async with in_transaction("default") as tx:
            # Inside a transaction reads see the transaction, replica or not.
            assert await Account.filter(external_id="fresh").exists()
            assert read_connection() is tx
    assert await Account.filter(external_id="fresh").exists()


async def test_without_a_replica_every_read_uses_the_primary(db_url: str) -> None:
    assert read_connection() is connection()
    await Account.create(external_id="solo", name="Solo", plan=Plan.FREE,
                         period_start=datetime(2026, 1, 1, tzinfo=UTC),
                         period_end=datetime(2026, 2, 1, tzinfo=UTC))
    with replica_reads():
        assert read_connection() is connection()
        assert await Account.filter(external_id="solo").count() == 1


def test_a_replica_url_must_be_postgres_and_so_must_the_primary() -> None:
    with pytest.raises(MissingSetting) as bad_scheme:
        load_settings(database_url="postgres://u@db/app", replica_database_url="mysql://r/app")
    assert str(bad_scheme.value) == (
        "invalid setting GQL_USAGE_REPLICA_DATABASE_URL: Value error, must be a PostgreSQL "
        "URL (postgres://user:pass@host:5432/db)")
    with pytest.raises(MissingSetting) as sqlite_primary:
        load_settings(database_url="sqlite://x.sqlite3", replica_database_url="postgres://r/a")
    assert "GQL_USAGE_REPLICA_DATABASE_URL" in str(sqlite_primary.value)
    assert "needs GQL_USAGE_DATABASE_URL to be a PostgreSQL URL too" in str(
        sqlite_primary.value)
    assert load_settings(database_url="postgres://u@db/app",
                         replica_database_url="").replica_database_url is None

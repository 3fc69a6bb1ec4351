"""Migration 0008 (the week grain): a cube built before it, with only day, hour and slot
rows, gets week rows equal to the sums of their days, and answers exactly as before,
with events still pending, on SQLite, PostgreSQL and Citus.

The cube of before the migration is made by migrating back to 0007, which deletes the
week rows (what this version's compaction builds besides the others); the days, hours
and slots left are what the previous version built. Migrating forward rebuilds the
week rows from the days alone."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from support.database import connect
from support.events import KEYS, USERS
from support.helpers import make_account
from test_cube_accounts import _events, answer, expected, post
from test_exactness import expected_cells, stored_cells
from tortoise import Tortoise
from tortoise.migrations.api import migrate

from gql_usage.storage.cube import compact_all
from gql_usage.storage.db import connection, run_migrations, tortoise_config

pytestmark = [pytest.mark.citus, pytest.mark.own_database]  # migrates back and forth

WEEK, DAY = 604_800, 86_400


async def rows(sql: str) -> list[tuple[int, ...]]:
    _, found = await connection().execute_query(sql)
    return sorted(tuple(int(v) for v in r) for r in found)


CUBE = ("SELECT account_id, grain, dims, t, api_key_id, endpoint_id, source_id, user_id,"
        " calls, credits FROM usage_cube")


async def migrate_to(url: str, target: str | None) -> None:
    """Migrate (back to ``target``, or forward to the last migration), then reconnect."""
    await Tortoise.close_connections()
    if target is None:
        await run_migrations(url)
    else:
        await migrate(config=tortoise_config(url), target=target)
        await Tortoise.close_connections()
    await connect(url)


async def test_week_rows_are_built_from_the_days_and_answers_do_not_change(db_url, client):
    await make_account(client, "acme", users=USERS, keys=KEYS)
    rng = random.Random(808)
    folded, pending = _events(rng, 900, "f"), _events(rng, 150, "p")
    await post(client, folded)
    await compact_all(cube_after_events=0)
    await post(client, pending)                      # stays pending through the migrations
    built = await rows(CUBE)
    weeks = [r for r in built if r[1] == WEEK]
    assert weeks, "the events span whole weeks"
    before = await answer(client)
    assert before == expected(folded + pending)

    await migrate_to(db_url, "models.0007_cube_accounts")
    assert await rows(CUBE) == [r for r in built if r[1] != WEEK]

    await migrate_to(db_url, None)
    assert await rows(CUBE) == built                 # what compaction had built
    # Each week row is the sum of the day rows of its set and values, by the test.
    sums: dict[tuple[int, ...], list[int]] = defaultdict(lambda: [0, 0])
    for account, grain, dims, t, *values, calls, credits in built:
        if grain == DAY and dims in (0, 1, 2, 4, 8):
            day = datetime.fromtimestamp(t, UTC)
            thursday = day - timedelta(days=(day.weekday() - 3) % 7)
            cell = sums[(account, WEEK, dims, int(thursday.timestamp()), *values)]
            cell[0] += calls
            cell[1] += credits
    assert weeks == sorted((*k, c, cr) for k, (c, cr) in sums.items())
    assert await answer(client) == before
    assert await stored_cells() == expected_cells(folded + pending)  # folds the pending
    assert await answer(client) == before

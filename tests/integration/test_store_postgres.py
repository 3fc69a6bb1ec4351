"""gql_usage.ingest.store_postgres: a batch mixing many accounts is stored by one statement
on PostgreSQL, all or nothing (a retried batch is stored whole, nothing reported twice).

Both databases run the batches (the totals are checked on each); the statement count and
the injected failure are PostgreSQL's own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from support.helpers import SERVICE, event, make_account

from gql_usage.storage.db import StatementCounter, connection, dialect

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
ACCOUNTS = [f"acct{i:02d}" for i in range(12)]


async def _accounts(client) -> None:
    for account in ACCOUNTS:
        await make_account(client, account, users=[("admin", "ADMIN")], keys=["k1", "k2"])


def _mixed(tag: str, per_account: int) -> list[dict]:
    """``per_account`` events of every account, the accounts interleaved."""
    return [event(f"{tag}-{i}", ACCOUNTS[i % len(ACCOUNTS)], f"k{1 + i % 2}", "admin",
                  "/v2/mixed", "api", 1 + i % 3, T0 + timedelta(seconds=i))
            for i in range(per_account * len(ACCOUNTS))]


async def _post(client, batch: list[dict]) -> dict:
    response = await client.post("/v1/usage-events", json=batch, headers=SERVICE)
    assert response.status_code == 200, response.text
    return response.json()


async def _stored_by_account() -> dict[str, tuple[int, int]]:
    _, rows = await connection().execute_query(
        "SELECT a.external_id, count(*), sum(e.credits) FROM usage_event e"
        " JOIN account a ON a.id = e.account_id GROUP BY a.external_id")
    return {str(r[0]): (int(r[1]), int(r[2])) for r in rows}


def _expected(*batches: list[dict]) -> dict[str, tuple[int, int]]:
    totals: dict[str, tuple[int, int]] = {}
    for batch in batches:
        for e in batch:
            n, c = totals.get(e["accountId"], (0, 0))
            totals[e["accountId"]] = (n + 1, c + e["credits"])
    return totals


async def test_a_batch_of_many_accounts_is_one_statement_on_postgres(client):
    await _accounts(client)
    cold = _mixed("cold", 5)
    assert (await _post(client, cold))["accepted"] == len(cold)  # caches every id
    warm = _mixed("warm", 20)
    with StatementCounter() as counter:
        result = await _post(client, warm)
    assert result == {"accepted": len(warm), "duplicates": 0, "rejected": []}
    if dialect() == "postgres":
        # 12 accounts, 240 events: the events, their pending copies, the keys' last use,
        # the running totals and alerts in one statement (phase 1 of issue 15 sent 12).
        assert counter.count == 1, counter.statements
    assert await _stored_by_account() == _expected(cold, warm)
    again = await _post(client, warm)
    assert again == {"accepted": 0, "duplicates": len(warm), "rejected": []}
    assert await _stored_by_account() == _expected(cold, warm)


async def test_a_batch_failing_midway_is_stored_whole_by_the_retry(client):
    """A deadlock raised while the *last* account's events are inserted (by a trigger, once):
    the statement is retried, and every event is reported accepted, none as a duplicate
    (storing the batch account by account without a transaction reported the first
    accounts' events, inserted by the failed attempt, as already stored)."""
    if dialect() != "postgres":
        pytest.skip("the failure is injected by a PostgreSQL trigger (SQLite stores a "
                    "batch in one transaction of its own)")
    await _accounts(client)
    warmup = _mixed("warmup", 1)
    await _post(client, warmup)
    _, rows = await connection().execute_query(
        "SELECT id FROM account WHERE external_id = $1", [ACCOUNTS[-1]])
    last = int(rows[0][0])
    conn = connection()
    # A sequence is not transactional: the second attempt passes.
    await conn.execute_script(
        "CREATE SEQUENCE fail_once;"
        " CREATE FUNCTION fail_once() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        f" IF NEW.account_id = {last} AND nextval('fail_once') = 1 THEN"
        " RAISE EXCEPTION 'deadlock detected (injected)' USING ERRCODE = '40P01'; END IF;"
        " RETURN NEW; END $$;"
        " CREATE TRIGGER fail_once BEFORE INSERT ON usage_event FOR EACH ROW"
        " EXECUTE FUNCTION fail_once();")
    try:
        batch = _mixed("retried", 10)
        result = await _post(client, batch)
        _, fired = await conn.execute_query("SELECT last_value FROM fail_once")
    finally:
        await conn.execute_script("DROP TRIGGER fail_once ON usage_event;"
                                  " DROP FUNCTION fail_once(); DROP SEQUENCE fail_once;")
    assert int(fired[0][0]) >= 2  # the trigger did fail the first attempt
    assert result == {"accepted": len(batch), "duplicates": 0, "rejected": []}
    assert await _stored_by_account() == _expected(warmup, batch)

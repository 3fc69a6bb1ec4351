"""Concurrent idempotent upserts of the service API (``PUT /v1/...``), on SQLite and
PostgreSQL: however many callers race to create the same row, exactly one creates it
(201), the others update it (200), and one row remains holding one caller's values."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from support.helpers import SERVICE

from gql_usage.storage.db import connection

pytestmark = pytest.mark.citus

RACERS = 12
PERIOD = {"periodStart": "2026-01-01T00:00:00Z", "periodEnd": "2026-02-01T00:00:00Z"}


async def _race(client: httpx.AsyncClient, path: str,
                bodies: list[dict[str, object]]) -> list[int]:
    answers = await asyncio.gather(*(client.put(path, json=b, headers=SERVICE)
                                     for b in bodies))
    return sorted(a.status_code for a in answers)


async def _rows(sql: str) -> list[tuple[object, ...]]:
    _, rows = await connection().execute_query(sql)
    return [tuple(r) for r in rows]


async def test_racing_creates_of_one_account_make_one_row(client: httpx.AsyncClient) -> None:
    names = [f"Acme {i}" for i in range(RACERS)]
    bodies = [{"name": n, "plan": "PRO", "creditsGranted": i, **PERIOD}
              for i, n in enumerate(names)]
    assert await _race(client, "/v1/accounts/acme", bodies) == [200] * (RACERS - 1) + [201]
    rows = await _rows("SELECT external_id, name, credits_granted FROM account")
    assert len(rows) == 1 and rows[0][0] == "acme"
    assert (rows[0][1], rows[0][2]) in {(n, i) for i, n in enumerate(names)}
    again = [{**b, "name": "Acme again"} for b in bodies]  # the row exists: all update
    assert await _race(client, "/v1/accounts/acme", again) == [200] * RACERS
    assert await _rows("SELECT external_id, name FROM account") == [("acme", "Acme again")]


async def test_racing_creates_of_users_and_keys_make_one_row_each(
        client: httpx.AsyncClient) -> None:
    account = {"name": "Acme", "plan": "PRO", **PERIOD}
    assert (await client.put("/v1/accounts/acme", json=account,
                             headers=SERVICE)).status_code == 201
    users = [{"name": f"Bob {i}", "email": f"bob{i}@acme.io", "role": "MEMBER"}
             for i in range(RACERS)]
    keys = [{"name": f"Key {i}", "prefix": f"p{i}", "createdAt": "2026-01-02T00:00:00Z"}
            for i in range(RACERS)]
    user_codes, key_codes = await asyncio.gather(
        _race(client, "/v1/accounts/acme/users/bob", users),
        _race(client, "/v1/accounts/acme/api-keys/k1", keys))
    assert user_codes == key_codes == [200] * (RACERS - 1) + [201]
    stored_users = await _rows("SELECT external_id, name, email FROM app_user")
    assert len(stored_users) == 1 and stored_users[0][0] == "bob"
    assert stored_users[0][1:] in {(u["name"], u["email"]) for u in users}
    stored_keys = await _rows("SELECT external_id, name, prefix FROM api_key")
    assert len(stored_keys) == 1 and stored_keys[0][0] == "k1"
    assert stored_keys[0][1:] in {(k["name"], k["prefix"]) for k in keys}

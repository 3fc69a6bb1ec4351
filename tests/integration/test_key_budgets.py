"""Key budgets (SPEC 6.3): ``creditBudget`` on ``PUT /v1/accounts/{accountId}/api-keys/
{keyId}`` and ``ApiKey.budget`` (admins of paid-plan accounts), on both databases. A
key's ``used`` is its credits in the account's current billing period, checked against
what this test computes from the events it sent; every key's budget is answered by one
breakdown of the period by key, so 500 keys cost what 5 cost."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from support.config import make_settings
from support.helpers import SERVICE, event, gid, gql, ingest, make_account, put

from gql_usage.app import create_app
from gql_usage.storage.db import StatementCounter

KEY = {"name": "Key", "prefix": "pk_x", "createdBy": "admin",
       "createdAt": "2025-06-01T00:00:00Z", "revokedAt": None}
START, END = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
BUDGETS = "{ account { apiKeys { name budget { limit used remaining } } } }"


async def put_key(client: httpx.AsyncClient, key: str, **fields: Any) -> httpx.Response:
    return await client.put(f"/v1/accounts/acme/api-keys/{key}", headers=SERVICE,
                            content=json.dumps({**KEY, **fields}))


async def budgets(client: httpx.AsyncClient, **who: str) -> dict[str, Any]:
    body = await gql(client, BUDGETS, **who)
    assert "errors" not in body, body
    return {k["name"]: k["budget"] for k in body["data"]["account"]["apiKeys"]}


@pytest.mark.parametrize("value", [0, 1, 5_000, 2**31, 2**53 - 1])
async def test_a_budget_is_stored_and_read(client: httpx.AsyncClient, value: int) -> None:
    await make_account(client, "acme", users=[("admin", "ADMIN")])
    response = await put_key(client, "k1", name="k1", creditBudget=value)
    assert response.status_code == 201, response.text
    assert await budgets(client) == {"k1": {"limit": value, "used": 0, "remaining": value}}


@pytest.mark.parametrize(("value", "says"), [
    (-1, "greater than or equal to 0"),
    (2**53, "less than or equal to 9007199254740991"),
    (10**30, "less than or equal to 9007199254740991"),
    (1.5, "valid integer"),
    (100.0, "valid integer"),
    ("100", "valid integer"),
    (True, "valid integer"),
    ([100], "valid integer"),
    ({"credits": 100}, "valid integer"),
])
async def test_a_wrong_budget_is_a_coded_422_naming_it(client: httpx.AsyncClient, value: Any,
                                                       says: str) -> None:
    await make_account(client, "acme", users=[("admin", "ADMIN")])
    assert (await put_key(client, "k1", name="k1", creditBudget=7)).status_code == 201
    response = await put_key(client, "k1", name="k1", creditBudget=value)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "BAD_USER_INPUT" and body["field"] == "creditBudget", body
    assert body["error"].startswith("creditBudget: ") and says in body["error"], body
    # Refused: the stored budget is unchanged.
    assert await budgets(client) == {"k1": {"limit": 7, "used": 0, "remaining": 7}}


async def test_null_or_absent_means_no_budget(client: httpx.AsyncClient) -> None:
    await make_account(client, "acme", users=[("admin", "ADMIN")])
    assert (await put_key(client, "k1", name="k1", creditBudget=100)).status_code == 201
    assert (await put_key(client, "k2", name="k2", creditBudget=None)).status_code == 201
    assert (await put_key(client, "k3", name="k3")).status_code == 201
    assert await budgets(client) == {"k1": {"limit": 100, "used": 0, "remaining": 100},
                                     "k2": None, "k3": None}
    # A PUT replaces the key's reference data: without creditBudget, no budget.
    assert (await put_key(client, "k1", name="k1", creditBudget=None)).status_code == 200
    assert (await budgets(client))["k1"] is None
    assert (await put_key(client, "k1", name="k1", creditBudget=50)).status_code == 200
    assert (await put_key(client, "k1", name="k1")).status_code == 200
    assert (await budgets(client))["k1"] is None


async def test_used_counts_only_the_current_period(client: httpx.AsyncClient) -> None:
    rng = random.Random(71)
    await make_account(client, "acme", users=[("admin", "ADMIN")],
                       period=(START.isoformat(), END.isoformat()))
    limits = {"k1": 3_000, "k2": 10, "k3": 0, "k4": 10**12}
    for key, limit in limits.items():
        assert (await put_key(client, key, name=key, creditBudget=limit)).status_code == 201
    assert (await put_key(client, "k5", name="k5")).status_code == 201  # no budget
    span = int((END - START).total_seconds() * 1_000_000)
    events = []
    for i in range(400):  # from 10 days before the period to 10 days after it
        at = START - timedelta(days=10) + timedelta(
            microseconds=rng.randrange(span + 20 * 86_400_000_000))
        events.append(event(f"e{i}", "acme", rng.choice([*limits, "k5"]), "admin",
                            "/v2/person", "api", rng.randrange(60), at))
    one_us = timedelta(microseconds=1)
    events += [event("first", "acme", "k2", "admin", "/v2/x", "api", 5, START),
               event("before", "acme", "k2", "admin", "/v2/x", "api", 1000, START - one_us),
               event("last", "acme", "k2", "admin", "/v2/x", "api", 3, END - one_us),
               event("after", "acme", "k2", "admin", "/v2/x", "api", 1000, END)]
    for i in range(0, len(events), 50):
        await ingest(client, events[i:i + 50])
    got = await budgets(client)
    for key, limit in limits.items():
        used = sum(e["credits"] for e in events if e["apiKeyId"] == key
                   and START <= datetime.fromisoformat(e["occurredAt"]) < END)
        assert got[key] == {"limit": limit, "used": used, "remaining": max(limit - used, 0)}
    assert got["k5"] is None
    assert got["k2"]["used"] > 10 and got["k2"]["remaining"] == 0  # over its budget
    # The same key through node(id:) and in a breakdown row: the same budget.
    body = await gql(client, "query($id: ID!) { node(id: $id) { ... on ApiKey { budget "
                     "{ used } } } }", {"id": gid("ApiKey", "k1")})
    assert body["data"]["node"]["budget"]["used"] == got["k1"]["used"]


async def test_budget_is_for_admins_of_paid_plans(client: httpx.AsyncClient) -> None:
    await make_account(client, "acme", users=[("admin", "ADMIN"), ("bob", "MEMBER")])
    await make_account(client, "free", plan="FREE", users=[("admin", "ADMIN")])
    assert (await put_key(client, "k1", name="k1", creditBudget=9)).status_code == 201
    await put(client, "/v1/accounts/free/api-keys/f1", {**KEY, "creditBudget": 9})
    key_budget = "query($id: ID!) { node(id: $id) { ... on ApiKey { budget { limit } } } }"
    body = await gql(client, key_budget, {"id": gid("ApiKey", "k1")}, user="bob")
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    body = await gql(client, key_budget, {"id": gid("ApiKey", "f1")}, account="free")
    assert body["errors"][0]["extensions"]["code"] == "PLAN_UPGRADE_REQUIRED"
    body = await gql(client, key_budget, {"id": gid("ApiKey", "k1")})
    assert body == {"data": {"node": {"budget": {"limit": 9}}}}


async def _statements_for(client: httpx.AsyncClient, account: str, n_keys: int) -> int:
    await make_account(client, account, users=[("admin", "ADMIN")],
                       period=(START.isoformat(), END.isoformat()))
    keys = [f"{account}-k{i}" for i in range(n_keys)]
    for i, key in enumerate(keys):
        response = await client.put(f"/v1/accounts/{account}/api-keys/{key}", headers=SERVICE,
                                    json={**KEY, "name": key, "creditBudget": 100 + i})
        assert response.status_code == 201
    events = [event(f"{account}-e{i}", account, keys[i % n_keys], "admin", "/v2/person",
                    "api", 1 + i % 7, START + timedelta(minutes=41 * i)) for i in range(1000)]
    assert (await ingest(client, events))["accepted"] == 1000
    query = ("{ account { creditPool { used } apiKeys { name lastUsedAt "
             "budget { limit used remaining } } } }")
    with StatementCounter() as counter:
        body = await gql(client, query, account=account)
    assert "errors" not in body, body
    got = {k["name"]: k["budget"] for k in body["data"]["account"]["apiKeys"]}
    assert len(got) == n_keys
    for i, key in enumerate(keys):
        used = sum(e["credits"] for e in events if e["apiKeyId"] == key)
        assert got[key] == {"limit": 100 + i, "used": used,
                            "remaining": max(100 + i - used, 0)}
    return counter.count


async def test_500_budgets_cost_the_statements_of_5(db_url: str) -> None:
    # 500 keys' lists cost what they hold: this account's query-cost limit is raised.
    app = create_app(make_settings(db_url, max_query_cost=20_000), manage_db=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as client:
        small = await _statements_for(client, "small", 5)
        large = await _statements_for(client, "large", 500)
    print(f"statements with budgets: {small}")
    # authentication, the list sizes the query cost counts, the pool's totals, the keys,
    # and the period's breakdown by key for every budget
    assert small == large <= 5

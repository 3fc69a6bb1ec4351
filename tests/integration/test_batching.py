"""The dashboard page costs the same few SQL statements with 5 keys or 500: every
per-item lookup and aggregate goes through a per-request loader."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from support.config import make_settings
from support.helpers import add_keys, event, gql, ingest, make_account

from bench.dashboard import DASHBOARD_V2
from gql_usage.analytics import query as analytics_query
from gql_usage.app import create_app
from gql_usage.storage import catalogue
from gql_usage.storage.db import StatementCounter

DASHBOARD = """query Dashboard($f: UsageFilter!) {
  viewer { name }
  account {
    name plan
    creditPool { granted used remaining }
    usage(filter: $f) {
      calls credits
      series(granularity: DAY) { start calls credits }
      byEndpoint: breakdown(by: ENDPOINT) {
        key label endpoint { path } calls credits shareOfCredits }
      byKey: breakdown(by: API_KEY) { key label apiKey { name createdBy { name } } credits }
    }
    apiKeys { id name createdBy { name } usage(filter: $f) { calls credits } }
  }
}"""
FILTER = {"from": "2026-01-01T00:00:00Z", "to": "2026-01-31T00:00:00Z"}


async def dashboard_statements(client, account: str, n_keys: int) -> tuple[int, dict]:
    keys = [f"{account}-k{i}" for i in range(n_keys)]
    await make_account(client, account, users=[("admin", "ADMIN")], keys=[])
    await add_keys(client, account, keys)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    events = [event(f"{account}-e{i}", account, keys[i % n_keys], "admin", f"/v2/e{i % 9}",
                    "api", 1 + i % 3, start + timedelta(minutes=37 * i)) for i in range(1000)]
    assert (await ingest(client, events))["accepted"] == 1000
    with StatementCounter() as counter:
        body = await gql(client, DASHBOARD, {"f": FILTER}, user="admin", account=account)
    assert "errors" not in body, body
    return counter.count, body["data"]


async def test_dashboard_statement_count_does_not_grow_with_keys(db_url):
    # 500 keys' lists cost what they hold (gql_usage.storage.catalogue.ListSizes): above the
    # default maximum cost, so this account's limit is raised.
    app = create_app(make_settings(db_url, max_query_cost=20_000), manage_db=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as client:
        await _dashboard_statement_count_does_not_grow_with_keys(client)


async def _dashboard_statement_count_does_not_grow_with_keys(client):
    small, small_data = await dashboard_statements(client, "small", 5)
    large, large_data = await dashboard_statements(client, "large", 500)
    assert len(small_data["account"]["apiKeys"]) == 5
    assert len(large_data["account"]["apiKeys"]) == 500
    assert sum(k["usage"]["calls"] for k in large_data["account"]["apiKeys"]) == \
        large_data["account"]["usage"]["calls"]
    assert small == large
    print(f"dashboard statements: {small}")
    # authentication, the list sizes the query cost counts (gql_usage.storage.catalogue), the
    # keys, the aggregates of two filters, users and endpoints
    assert small <= 7


async def v2_dashboard_statements(client, account: str, n_keys: int) -> tuple[int, dict]:
    """The benchmark's version-2 page (``bench.dashboard.DASHBOARD_V2``: the dashboard
    plus the previous period and the DAY spikes with their drivers) over steady traffic
    since November with one planted spike on 20 January."""
    keys = [f"{account}-k{i}" for i in range(n_keys)]
    await make_account(client, account, users=[("admin", "ADMIN")], keys=[])
    await add_keys(client, account, keys)
    start = datetime(2025, 11, 1, tzinfo=UTC)
    events = [event(f"{account}-e{i}", account, keys[i % n_keys], "admin", f"/v2/e{i % 9}",
                    "api", 2, start + timedelta(hours=2 * i)) for i in range(12 * 92)]
    spike = datetime(2026, 1, 20, 12, tzinfo=UTC)
    events += [event(f"{account}-s{i}", account, keys[0], "admin", "/v2/spiky", "api", 40,
                     spike + timedelta(minutes=i)) for i in range(10)]
    assert (await ingest(client, events))["accepted"] == len(events)
    with StatementCounter() as counter:
        body = await gql(client, DASHBOARD_V2,
                         {"f": {"from": "2026-01-01T00:00:00", "to": "2026-02-01T00:00:00"}},
                         user="admin", account=account)
    assert "errors" not in body, body
    return counter.count, body["data"]


async def test_the_v2_dashboard_stays_within_6_statements_with_5_or_500_keys(db_url):
    app = create_app(make_settings(db_url, max_query_cost=50_000), manage_db=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as client:
        small, small_data = await v2_dashboard_statements(client, "small", 5)
        large, large_data = await v2_dashboard_statements(client, "large", 500)
    for data in (small_data, large_data):
        (spike,) = data["account"]["usage"]["spikes"]
        assert spike["bucket"]["start"].startswith("2026-01-20")
        assert spike["drivers"][0]["row"]["key"] == "/v2/spiky"
        assert spike["drivers"][0]["excessCredits"] == 400
        assert data["account"]["usage"]["previous"]["calls"] == 12 * 31  # December
    print(f"v2 dashboard statements: {small}")
    assert small == large
    assert small <= 6


@pytest.mark.parametrize("slow", ["key list", "aggregates"])
async def test_the_v2_dashboard_costs_the_same_whichever_statement_returns_first(
        db_url, monkeypatch, slow):
    """The key list (``Account.apiKeys``) and the aggregates run concurrently; the
    breakdown by key needs the keys. Whichever comes back first, the keys are read once
    (``gql_usage.loaders.api_keys``): a slow key list once made the page 7 statements."""
    app = create_app(make_settings(db_url, max_query_cost=50_000), manage_db=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as client:
        plain, _ = await v2_dashboard_statements(client, "plain", 5)
        target, name = ((catalogue, "api_keys") if slow == "key list"
                        else (analytics_query, "aggregate_many"))
        original = getattr(target, name)

        async def delayed(*args, **kwargs):
            await asyncio.sleep(0.3)
            return await original(*args, **kwargs)

        monkeypatch.setattr(target, name, delayed)
        delayed_count, data = await v2_dashboard_statements(client, "delayed", 5)
    assert delayed_count == plain <= 6
    assert sum(k["usage"]["calls"] for k in data["account"]["apiKeys"]) == \
        data["account"]["usage"]["calls"]

"""Query limits, query cost and the rate limit (``gql_usage/graphql/limits/``).

Every refusal comes back with its code and a message saying what to change, and before
any analytics SQL: a refused request sends exactly as many statements as ``{ viewer
{ id } }`` (which only authenticates). Costs are asserted from the documented model,
computed by hand in each test.
"""

from __future__ import annotations

import contextlib
import importlib
import math
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from graphql import get_introspection_query, parse
from support.config import make_settings
from support.helpers import event, gid, ingest, make_account, token

from gql_usage.app import create_app
from gql_usage.graphql.limits.cost import (
    AGGREGATE_POINTS,
    ASSUMED_LIST_SIZE,
    CostCalculator,
    RefusedArgument,
)
from gql_usage.graphql.limits.rate_limit import REFUSAL_POINTS, RateLimiter
from gql_usage.graphql.schema import schema
from gql_usage.settings import Settings
from gql_usage.storage.db import StatementCounter

DEFAULTS = Settings.model_construct()
A = AGGREGATE_POINTS
N = ASSUMED_LIST_SIZE
WEEK = '{from: "2026-01-01T00:00:00Z", to: "2026-01-08T00:00:00Z", timeZone: "UTC"}'
#: viewer 1 + account 1 + usage (A + 1) + series (A + 7 days x 1)
#: + breakdown (A + 3 rows x (1 + endpoint 1)) + apiKeys (N x 1)
KNOWN = ("{ viewer { id } account { usage(filter: " + WEEK + ") { calls "
         "series(granularity: DAY) { start calls } "
         "breakdown(by: ENDPOINT, limit: 3) { key endpoint { path } } } apiKeys { id } } "
         "rateLimit { cost limit remaining resetAt used } }")
KNOWN_COST = 1 + 1 + (A + 1) + (A + 7) + (A + 3 * (1 + 1)) + N * 1
TRIVIAL = "{ viewer { id } }"


def fanout(n: int) -> str:
    fragments = " ".join(f"fragment F{i} on User {{ ...F{i + 1} ...F{i + 1} }}"
                         for i in range(n))
    return f"{{ viewer {{ ...F0 }} }} {fragments} fragment F{n} on User {{ id }}"


class Clock:
    """A settable clock (Unix seconds) for the rate-limit windows."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def serve(db_url: str, clock: Clock | None = None,
                **limits: object) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(db_url, **limits), manage_db=False,
                     clock=clock or Clock())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as client:
        await make_account(client, "acme", users=[("admin", "ADMIN"), ("admin2", "ADMIN")],
                           keys=["k1", "k2"])
        start = datetime(2026, 1, 1, tzinfo=UTC)
        await ingest(client, [event(f"e{i}", "acme", f"k{1 + i % 2}", "admin",
                                    f"/v2/e{i % 4}", "api", 1 + i % 3,
                                    start + timedelta(hours=7 * i)) for i in range(20)])
        yield client


async def post(client: httpx.AsyncClient, payload: Any, user: str = "admin") -> httpx.Response:
    if isinstance(payload, str):
        payload = {"query": payload}
    return await client.post("/graphql", json=payload,
                             headers={"Authorization": f"Bearer {token(user, 'acme')}"})


async def statements(client: httpx.AsyncClient, payload: Any,
                     user: str = "admin") -> tuple[int, httpx.Response]:
    with StatementCounter() as counter:
        response = await post(client, payload, user)
    return counter.count, response


def codes(body: dict[str, Any]) -> list[str]:
    return [e["extensions"]["code"] for e in body["errors"]]


def cost_of(query: str, variables: dict[str, Any] | None = None,
            time_zone: str = "UTC") -> int | None:
    document = parse(query)
    operation = next(d for d in document.definitions if d.kind == "operation_definition")
    return CostCalculator.for_operation(schema._schema, document, operation,  # type: ignore[arg-type]
                                        variables, time_zone)


# --- Cost: the documented model ----------------------------------------------------------

async def test_known_query_costs_what_the_model_says(db_url):
    """Exact cost in ``rateLimit.cost`` and ``X-Query-Cost``; the answer itself is intact."""
    async with serve(db_url) as client:
        response = await post(client, KNOWN)
        body = response.json()
    assert "errors" not in body, body
    assert KNOWN_COST == 131
    assert body["data"]["rateLimit"]["cost"] == KNOWN_COST
    assert response.headers["X-Query-Cost"] == str(KNOWN_COST)
    usage = body["data"]["account"]["usage"]
    assert len(usage["series"]) == 7 and usage["calls"] == 20
    assert sum(b["calls"] for b in usage["series"]) == 20
    assert len(usage["breakdown"]) == 3
    assert len(body["data"]["account"]["apiKeys"]) == 2


def test_fragments_variables_directives_and_merged_fields_cost_the_same():
    """The same selections written with a named fragment, an inline fragment, variables,
    a field repeated under one response key and a skipped expensive field."""
    query = """query($f: UsageFilter!, $g: Granularity!, $n: Int, $no: Boolean!) {
      viewer { id } viewer { id }
      account { ...Report apiKeys { id } apiKeys { id }
                endpoints @include(if: $no) { path } }
      rateLimit { cost } }
    fragment Report on Account { usage(filter: $f) {
      ... on UsageReport { calls series(granularity: $g) { start calls } }
      breakdown(by: ENDPOINT, limit: $n) { key endpoint { path } }
      byKey: breakdown(by: API_KEY) @skip(if: true) { key } } }"""
    variables = {"f": {"from": "2026-01-01T00:00:00Z", "to": "2026-01-08T00:00:00Z",
                       "timeZone": "UTC"}, "g": "DAY", "n": 3, "no": False}
    assert cost_of(query, variables) == KNOWN_COST
    # Including the endpoints list adds N x (1 + 0).
    assert cost_of(query, {**variables, "no": True}) == KNOWN_COST + N


def test_series_costs_its_buckets_in_the_filter_time_zone():
    def series_cost(granularity: str, start: str, end: str, tz: str | None = None) -> int | None:
        zone = f', timeZone: "{tz}"' if tz else ""
        return cost_of(f'{{ account {{ usage(filter: {{from: "{start}", to: "{end}"{zone}}}) '
                       f"{{ series(granularity: {granularity}) {{ calls }} }} }} }}",
                       time_zone="Europe/Berlin")

    base = 1 + (A + 1) + A  # account, usage, series surcharge
    # New York's spring-forward day has 23 local hours.
    assert series_cost("HOUR", "2026-03-08T00:00:00", "2026-03-09T00:00:00",
                       "America/New_York") == base + 23
    # Without timeZone the account's zone (Berlin) applies: its autumn-back day has 25.
    assert series_cost("HOUR", "2026-10-25T00:00:00", "2026-10-26T00:00:00") == base + 25
    # 365 days from noon to noon touch 366 local dates.
    days = (date(2026, 1, 15) - date(2025, 1, 15)).days + 1
    assert days == 366
    assert series_cost("DAY", "2025-01-15T12:00:00Z", "2026-01-15T12:00:00Z", "UTC") == \
        base + days
    assert series_cost("MONTH", "2025-01-15T00:00:00Z", "2026-01-15T00:00:00Z", "UTC") == \
        base + 13
    # Exactly 2,000 HOUR buckets cost 2,000; a year of them (8,760) and an empty range
    # are argument errors, refused with the argument's path before execution.
    assert series_cost("HOUR", "2026-01-01T00:00:00Z", "2026-03-25T08:00:00Z", "UTC") == \
        base + 2000
    with pytest.raises(RefusedArgument) as refused:
        series_cost("HOUR", "2025-01-01T00:00:00Z", "2026-01-01T00:00:00Z", "UTC")
    assert (refused.value.refusal.path, refused.value.refusal.argument) == (
        ("account", "usage", "series"), "granularity")
    with pytest.raises(RefusedArgument) as refused:
        series_cost("DAY", "2026-01-02T00:00:00Z", "2026-01-01T00:00:00Z", "UTC")
    assert (refused.value.refusal.path, refused.value.refusal.argument) == (
        ("account", "usage"), "filter.from")


def test_breakdown_limit_only_lowers_the_assumed_size():
    def breakdown_cost(limit: str) -> int | None:
        return cost_of("{ account { usage(filter: " + WEEK + ") { breakdown(by: USER"
                       + limit + ") { key user { name } } } } }")

    base = 1 + (A + 1) + A
    assert breakdown_cost("") == base + N * 2
    assert breakdown_cost(", limit: 7") == base + 7 * 2
    assert breakdown_cost(", limit: 0") == base
    assert breakdown_cost(", limit: 100000") == base + N * 2


def test_abstract_node_costs_its_most_expensive_type_and_cycles_are_safe():
    query = """{ node(id: "x") { id ... on ApiKey { createdBy { name }
                  usage(filter: """ + WEEK + """) { calls } } ... on User { name } } }"""
    # node 1 + ApiKey's selection: createdBy 1 + usage (A + 1).
    assert cost_of(query) == 1 + 1 + (A + 1)
    # Validation refuses fragment cycles; the calculator does not loop on one either.
    assert cost_of("{ viewer { ...U } } fragment U on User { id ...U }") == 1
    # Scalars, __typename and rateLimit are free; an operation costs at least 1 point.
    assert cost_of("{ __typename rateLimit { cost remaining } }") == 1
    assert cost_of("{ __schema { types { name fields { name } } } }") == 1
    # Variables that do not coerce are refused by execution itself: no cost.
    assert cost_of("query($g: Granularity!) { viewer { id } }", {"g": "YEARLY"}) is None


# --- The dashboard stays well under the default limit ------------------------------------

def bench_dashboards() -> list[str]:
    """The dashboard query of the benchmark (``bench/dashboard.py``)."""
    return [importlib.import_module("bench.dashboard").DASHBOARD]


def test_bench_dashboard_is_well_under_the_default_max_cost():
    year = {"f": {"from": "2025-01-15T12:00:00Z", "to": "2026-01-15T12:00:00.000001Z"}}
    for dashboard in bench_dashboards():
        cost = cost_of(dashboard, year)
        assert cost is not None and cost <= DEFAULTS.max_query_cost // 2, cost
    # Today's dashboard shape: account 1 + usage (A+1) + DAY series (A+366)
    # + two unlimited breakdowns 2 x (A+N) + apiKeys N x (1 + usage (A+1)).
    assert DEFAULTS.max_query_cost == 5000
    assert 1 + (A + 1) + (A + 366) + 2 * (A + N) + N * (1 + A + 1) == 1288


async def test_dashboard_over_a_year_with_50_keys_is_served(db_url):
    DASHBOARD = bench_dashboards()[0]  # noqa: N806
    async with serve(db_url) as client:
        keys = [f"d{i:02}" for i in range(50)]
        await make_account(client, "acme", users=[("admin", "ADMIN")], keys=keys)
        response = await post(client, {"query": DASHBOARD, "variables": {"f": {
            "from": "2025-01-15T12:00:00Z", "to": "2026-01-15T12:00:00.000001Z"}}})
    body = response.json()
    assert "errors" not in body, body
    assert len(body["data"]["account"]["apiKeys"]) == 52
    assert len(body["data"]["account"]["usage"]["series"]) == 366
    cost = int(response.headers["X-Query-Cost"])
    assert cost == cost_of(DASHBOARD, {"f": {"from": "2025-01-15T12:00:00Z",
                                             "to": "2026-01-15T12:00:00.000001Z"}})
    assert cost <= DEFAULTS.max_query_cost // 2


# --- Refusals: code, advice, no SQL ------------------------------------------------------

async def test_limits_refuse_with_a_code_and_advice_before_any_sql(db_url):
    async with serve(db_url, max_query_depth=4, max_aliases=3, max_tokens=300,
                     max_query_cost=200, introspection=False) as client:
        baseline, ok = await statements(client, TRIVIAL)
        assert ok.status_code == 200 and "errors" not in ok.json()

        async def refused(query: str, code: str, *phrases: str) -> dict[str, Any]:
            count, response = await statements(client, query)
            body = response.json()
            assert response.status_code == 200, response.text
            assert body["data"] is None and codes(body) == [code], body
            for phrase in phrases:
                assert phrase in body["errors"][0]["message"], body
            assert count == baseline, (query[:60], count, baseline)
            return body

        async def accepted(query: str) -> dict[str, Any]:
            body = (await post(client, query)).json()
            assert "errors" not in body, body
            return body

        usage = "{ account { usage(filter: " + WEEK + ") { breakdown(by: API_KEY, limit: 2) "
        # Depth: `name` is 5 levels below `account`; 4 below is the limit.
        await refused(usage + "{ apiKey { createdBy { name } } } } } }", "QUERY_TOO_DEEP",
                      "exceeds maximum operation depth of 4", "at most 4 levels")
        await accepted(usage + "{ apiKey { name } } } } }")
        # Aliases.
        await refused("{ a: viewer { id } b: viewer { id } c: viewer { id } d: viewer { id } }",
                      "TOO_MANY_ALIASES", "4 aliases found. Allowed: 3", "at most 3 aliases")
        await accepted("{ a: viewer { id } b: viewer { id } c: viewer { id } }")
        # Tokens: `{ viewer {` + n x `id` + `} }` is n + 5 tokens.
        await refused("{ viewer { " + "id " * 296 + "} }", "TOO_MANY_TOKENS",
                      "more than 300 tokens", "Shorten it")
        await accepted("{ viewer { " + "id " * 295 + "} }")
        # Cost: account 1 + apiKeys N + endpoints N = 201 > 200.
        body = await refused("{ account { apiKeys { id } endpoints { path } } }",
                             "QUERY_TOO_COSTLY", "costs at least 201 points", "maximum is 200",
                             "split the query")
        assert body["errors"][0]["extensions"] == {"code": "QUERY_TOO_COSTLY", "cost": 201,
                                                   "maxCost": 200}
        await accepted("{ account { apiKeys { id } } }")
        # Fragments spread twice at every level expand to 2**n fields: refused before
        # validation walks them once past 10,000 (2**14), accepted at 2**13 = 8,192.
        await refused(fanout(14), "QUERY_TOO_COSTLY", "expands to more than 10,000 field "
                      "selections", "Spread each fragment fewer times")
        assert (await accepted(fanout(13)))["data"] == {"viewer": {"id": gid("User", "admin")}}
        # Introspection off: __schema and __type refused, __typename still fine.
        await refused("{ __schema { queryType { name } } }", "INTROSPECTION_DISABLED",
                      "Introspection is disabled", "Remove __schema and __type")
        await refused('{ __type(name: "Account") { name } }', "INTROSPECTION_DISABLED")
        assert (await accepted("{ __typename }"))["data"] == {"__typename": "Query"}
        # What was accepted was charged: baseline 1, depth 1 + (A+1) + (A + 2 x 2),
        # aliases 3, tokens 1 (merged), apiKeys 1 + N, fan-out 1, __typename 1, this 1;
        # the operation refused as too costly the refusal fee.
        used = (await accepted("{ rateLimit { used } }"))["data"]["rateLimit"]["used"]
        assert used == 1 + (1 + (A + 1) + (A + 2 * 2)) + 3 + 1 + (1 + N) + 1 + 1 + 1 + \
            REFUSAL_POINTS


async def test_introspection_is_on_by_default_and_graphiql_query_passes(db_url):
    async with serve(db_url) as client:
        body = (await post(client, get_introspection_query(descriptions=True))).json()
    assert "errors" not in body, body
    names = {t["name"] for t in body["data"]["__schema"]["types"]}
    assert {"RateLimit", "UsageReport", "Account"} <= names


async def test_batches_are_capped_and_each_operation_is_charged(db_url):
    async with serve(db_url, max_batch_operations=3) as client:
        baseline, _ = await statements(client, TRIVIAL)
        op = {"query": "{ viewer { id } rateLimit { cost used remaining } }"}
        count, response = await statements(client, [op] * 4)
        assert response.status_code == 400
        body = response.json()
        assert body["data"] is None and codes(body) == ["TOO_MANY_OPERATIONS"]
        assert "4 sent, at most 3 accepted" in body["errors"][0]["message"]
        assert "Split the batch" in body["errors"][0]["message"]
        assert count == baseline
        assert response.headers["X-RateLimit-Used"] == "1"  # only the baseline
        assert response.headers["X-Query-Cost"] == "0"

        for item, message in [({"query": 42}, "batch[1].query must be a string"),
                              ({"query": "{ viewer { id } }", "variables": [1]},
                               "batch[1].variables must be an object")]:
            response = await post(client, [op, item])
            assert response.status_code == 400, response.text
            assert codes(response.json()) == ["BAD_USER_INPUT"]
            assert message in response.json()["errors"][0]["message"]

        response = await post(client, [op, {"query": KNOWN}, op])
        assert response.status_code == 200
        results = response.json()
        assert isinstance(results, list) and len(results) == 3
        assert all("errors" not in r for r in results), results
        assert [r["data"]["rateLimit"]["cost"] for r in results] == [1, KNOWN_COST, 1]
        # Charged one by one (in whatever order they ran): baseline 1 + 1 + 131 + 1.
        used = sorted(r["data"]["rateLimit"]["used"] for r in results)
        assert len(set(used)) == 3 and used[-1] == 1 + 1 + KNOWN_COST + 1
        assert response.headers["X-Query-Cost"] == str(1 + KNOWN_COST + 1)
        assert response.headers["X-RateLimit-Used"] == str(1 + 1 + KNOWN_COST + 1)


async def test_rate_limit_exhaustion_headers_and_reset(db_url):
    clock = Clock()
    async with serve(db_url, clock=clock, rate_limit_points=300) as client:
        first = await post(client, KNOWN)
        limit = first.json()["data"]["rateLimit"]
        reset_at = clock.now + 60
        assert limit == {"cost": 131, "limit": 300, "remaining": 169, "used": 131,
                         "resetAt": datetime.fromtimestamp(reset_at, UTC).isoformat()}
        assert {k: first.headers[k] for k in ("X-RateLimit-Limit", "X-RateLimit-Remaining",
                                              "X-RateLimit-Used", "X-RateLimit-Reset",
                                              "X-Query-Cost")} == {
            "X-RateLimit-Limit": "300", "X-RateLimit-Remaining": "169",
            "X-RateLimit-Used": "131", "X-RateLimit-Reset": str(math.ceil(reset_at)),
            "X-Query-Cost": "131"}

        clock.now += 10
        second = (await post(client, KNOWN)).json()["data"]["rateLimit"]
        assert (second["remaining"], second["used"]) == (38, 262)
        assert second["resetAt"] == limit["resetAt"]  # same window

        clock.now += 10
        baseline, _ = await statements(client, TRIVIAL, user="admin2")
        count, third = await statements(client, KNOWN)
        assert count == baseline  # refused before any analytics SQL
        assert third.status_code == 429
        assert third.headers["Retry-After"] == "40"
        assert third.headers["X-RateLimit-Remaining"] == "38"
        body = third.json()
        assert body["data"] is None and codes(body) == ["RATE_LIMITED"]
        error = body["errors"][0]
        assert error["extensions"] == {"code": "RATE_LIMITED", "cost": 131, "limit": 300,
                                       "remaining": 38, "resetAt": limit["resetAt"]}
        reset_text = datetime.fromtimestamp(reset_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert f"resets at {reset_text} (in 40 s)" in error["message"]
        assert "costs 131 points and 38 of 300 points per minute remain" in error["message"]

        # A cheaper query still fits; another viewer has a budget of their own.
        cheap = (await post(client, "{ rateLimit { cost used remaining } }")).json()
        assert cheap["data"]["rateLimit"] == {"cost": 1, "used": 263, "remaining": 37}
        other = (await post(client, "{ rateLimit { used } }", user="admin2")).json()
        assert other["data"]["rateLimit"]["used"] == 1 + 1  # its TRIVIAL baseline + this

        # The window ends 60 s after the first charge: the full budget is back.
        clock.now = reset_at
        fresh = await post(client, KNOWN)
        assert fresh.status_code == 200
        assert fresh.json()["data"]["rateLimit"] == {
            "cost": 131, "limit": 300, "remaining": 169, "used": 131,
            "resetAt": datetime.fromtimestamp(reset_at + 60, UTC).isoformat()}

        # A query dearer than the whole budget says so.
        costly = (await post(client, "{ account { apiKeys { id } endpoints { path } "
                             "sources { key } } }")).json()
        assert codes(costly) == ["RATE_LIMITED"]
        assert "more than the whole budget of 300 points" in costly["errors"][0]["message"]


async def test_rate_limiter_windows():
    clock = Clock(1000.0)
    limiter = RateLimiter(10, clock=clock)
    assert (await limiter.peek("a")).remaining == 10
    assert await limiter.charge("a", 7) == (True, await limiter.peek("a"))
    assert (await limiter.peek("a")).used == 7 and (await limiter.peek("a")).reset_at == 1060.0
    charged, budget = await limiter.charge("a", 4)
    assert not charged and budget.remaining == 3
    assert (await limiter.charge("b", 10))[0]
    clock.now = 1059.999
    assert not (await limiter.charge("a", 4))[0]
    clock.now = 1060.0
    charged, budget = await limiter.charge("a", 4)
    assert charged and (budget.used, budget.reset_at) == (4, 1120.0)
    with pytest.raises(ValueError):
        RateLimiter(0)


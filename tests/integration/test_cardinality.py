"""Large cardinalities: 50,000 endpoints in one account, filters naming 33,000 values,
and list costs that follow the account's real sizes (README "Limits").

Before: ``breakdown`` and ``account.endpoints`` failed for good on PostgreSQL (asyncpg
takes at most 32,767 bind arguments; SQLite 32,766), ``limit`` was applied after loading
every row, and every list was priced at 100 whatever it held. Expected numbers are
computed here from the events the test generates.
"""

from __future__ import annotations

import contextlib
import random
import re
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from support.config import make_settings
from support.helpers import event, gid, ingest, make_account, put, token

from gql_usage import calendar
from gql_usage.app import create_app
from gql_usage.storage.db import StatementCounter, connection, dialect
from gql_usage.storage.models import Endpoint

N_ENDPOINTS = 50_000
START = datetime(2026, 1, 10, tzinfo=UTC)
MONTH = {"from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z", "timeZone": "UTC"}
#: Tied at 5,000 credits and 1 call: ordered by path in code point order ("/Alpha" <
#: "/Zeta" < "/_under" < "/alpha" < ...), which a linguistic collation would not give.
TIED = ["/zulu", "/_under", "/éclair", "/Zeta", "/alpha", "/Ωmega", "/Alpha"]
#: Limits high enough for the 50,000-row answers (the defaults refuse them, see below).
ROOMY = {"max_query_cost": 1_000_000, "rate_limit_points": 10_000_000,
         "max_graphql_body_bytes": 4 * 1024 * 1024}


@contextlib.asynccontextmanager
async def serve(db_url: str, **settings: object) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(db_url, **settings), manage_db=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as client:
        yield client


async def post(client: httpx.AsyncClient, query: str, variables: dict[str, Any] | None = None,
               account: str = "big") -> httpx.Response:
    return await client.post("/graphql", json={"query": query, "variables": variables or {}},
                             headers={"Authorization": f"Bearer {token('admin', account)}"})


def big_events() -> list[dict[str, Any]]:
    """50,000 random paths with random credits, plus the tied and leading ones, in a
    shuffled order (ids are given in order of first appearance, unlike path order)."""
    rng = random.Random(50_000)
    paths = [f"/big/{rng.randrange(10**9):09d}/{i}" for i in range(N_ENDPOINTS)]
    events = [(path, rng.randrange(1000)) for path in paths]
    events += [(p, 5000) for p in TIED]
    events += [("/top", 6000), ("/two-calls", 2500), ("/two-calls", 2500)]
    rng.shuffle(events)
    return [event(f"b{i}", "big", "k1", "admin", path, "api", credits,
                  START + timedelta(seconds=rng.randrange(2 * 86400)))
            for i, (path, credits) in enumerate(events)]


def totals_by_path(events: list[dict[str, Any]]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for e in events:
        out[e["endpoint"]][0] += 1
        out[e["endpoint"]][1] += e["credits"]
    return out


def ordered(totals: dict[str, list[int]]) -> list[tuple[str, int, int]]:
    """The API's order, written from the spec: credits, calls (descending), then key."""
    return sorted(((k, c, cr) for k, (c, cr) in totals.items()), key=lambda r: (-r[2], -r[1], r[0]))


async def load_big(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    """Reference data through the service API; the 50,000 endpoints and their events
    straight into the tables ingestion writes (``endpoint``, ``account_endpoint``,
    ``usage_event`` and its pending copy ``usage_pending``, which every answer adds to
    the cube), in seconds rather than the minute ingestion and compaction would take."""
    await make_account(client, "big", users=[("admin", "ADMIN")], keys=["k1"])
    await make_account(client, "other", users=[("admin", "ADMIN")], keys=["o1"])
    # The other account's own path, and one event of "big" through ingestion (its source).
    await ingest(client, [event("o", "other", "o1", "admin", "/other/secret", "api", 1, START)])
    # The vendor's published catalogue: one path nobody used, and "/top" (below).
    await Endpoint.create(path="/listed/unused", listed=True)
    events = big_events()
    conn = connection()
    account = (await conn.execute_query_dict(
        "SELECT id FROM account WHERE external_id = 'big'"))[0]["id"]
    key = (await conn.execute_query_dict(
        f"SELECT id FROM api_key WHERE account_id = {account}"))[0]["id"]
    user = (await conn.execute_query_dict(
        f"SELECT id FROM app_user WHERE account_id = {account}"))[0]["id"]
    source = (await conn.execute_query_dict("SELECT id FROM source WHERE \"key\" = 'api'"))[0]["id"]
    first = (await conn.execute_query_dict("SELECT MAX(id) AS m FROM endpoint"))[0]["m"] + 1
    p = "?" if dialect(conn) == "sqlite" else "${}"
    marks = ", ".join(p.format(i + 1) for i in range(2))
    paths = list(dict.fromkeys(e["endpoint"] for e in events))
    endpoint_ids = {path: first + i for i, path in enumerate(paths)}
    await conn.execute_many(f"INSERT INTO endpoint (id, path, listed) VALUES ({marks}, "
                            "false)", [[endpoint_ids[path], path] for path in paths])
    await conn.execute_many(f"INSERT INTO account_endpoint (account_id, endpoint_id) VALUES "
                            f"({marks})", [[account, i] for i in endpoint_ids.values()])
    rows = [[account, e["id"], key, endpoint_ids[e["endpoint"]], source, user, e["credits"],
             calendar.to_us(datetime.fromisoformat(e["occurredAt"]))] for e in events]
    cols = "account_id, event_id, api_key_id, endpoint_id, source_id, user_id, credits, " \
           "occurred_at_us"
    await conn.execute_many(
        f"INSERT INTO usage_event ({cols}, received_at_us) VALUES "
        f"({', '.join(p.format(i + 1) for i in range(9))})", [[*r, r[-1]] for r in rows])
    await conn.execute_many(
        f"INSERT INTO usage_pending ({cols.replace('event_id, ', '')}) VALUES "
        f"({', '.join(p.format(i + 1) for i in range(7))})",
        [[r[0], *r[2:]] for r in rows])
    if dialect(conn) == "postgres":
        await conn.execute_script("ANALYZE")
    await Endpoint.filter(path="/top").update(listed=True)
    return events


def bound_values(statement: str) -> list[int]:
    """The integers bound to a logged statement (``"<sql>: <parameters>"``)."""
    return [int(v) for v in re.findall(r"\d+", statement.rsplit(": ", 1)[1])]


async def test_50000_endpoints(db_url):
    async with serve(db_url, **ROOMY) as client:
        events = await load_big(client)
        totals = totals_by_path(events)
        assert len(totals) == N_ENDPOINTS + len(TIED) + 2
        expected = ordered(totals)
        all_credits = sum(cr for _, _, cr in expected)
        all_calls = len(events)

        # --- breakdown(limit: 5): the exact top 5, shares of the whole report, cut in SQL.
        top5 = """query($f: UsageFilter!) { account { usage(filter: $f) { calls credits
            breakdown(by: ENDPOINT, limit: 5) { key label calls credits shareOfCredits
                                                endpoint { path } } } } }"""
        with StatementCounter() as sql:
            response = await post(client, top5, {"f": MONTH})
        body = response.json()
        assert "errors" not in body, body
        usage = body["data"]["account"]["usage"]
        assert (usage["calls"], usage["credits"]) == (all_calls, all_credits)
        assert [r["key"] for r in usage["breakdown"]][:2] == ["/top", "/two-calls"]
        assert [(r["key"], r["calls"], r["credits"]) for r in usage["breakdown"]] == \
            expected[:5]
        assert [r["key"] for r in usage["breakdown"]][2:] == ["/Alpha", "/Zeta", "/_under"]
        for row, (path, _, credits) in zip(usage["breakdown"], expected, strict=False):
            assert row["label"] == row["endpoint"]["path"] == path
            assert row["shareOfCredits"] == pytest.approx(100 * credits / all_credits,
                                                          rel=1e-12)
        # The cut is in the statement, and only the 5 rows' endpoints are looked up.
        assert any("LIMIT 5)" in s for s in sql.statements)
        lookups = [s for s in sql.statements if 'FROM "endpoint" WHERE "id"' in s]
        assert len(lookups) == 1 and len(bound_values(lookups[0])) == 5
        # Cost: account 1 + usage (5 + 1) + breakdown (5 + 5 x (1 + endpoint 1)).
        assert response.headers["X-Query-Cost"] == str(1 + 6 + 5 + 5 * 2)

        # --- breakdown without limit: every row, priced by the account's 50,009 paths.
        used = len(totals)
        everything = """query($f: UsageFilter!) { account { usage(filter: $f) {
            breakdown(by: ENDPOINT) { key calls credits } } } rateLimit { cost } }"""
        response = await post(client, everything, {"f": MONTH})
        body = response.json()
        assert "errors" not in body, body
        assert body["data"]["rateLimit"]["cost"] == 1 + 6 + 5 + used
        assert response.headers["X-Query-Cost"] == str(1 + 6 + 5 + used)
        rows = body["data"]["account"]["usage"]["breakdown"]
        assert [(r["key"], r["calls"], r["credits"]) for r in rows] == expected

        # --- account.endpoints: the account's paths and the listed catalogue.
        response = await post(client, "{ account { endpoints { path } } }")
        body = response.json()
        assert "errors" not in body, body
        paths = [e["path"] for e in body["data"]["account"]["endpoints"]]
        assert sorted(paths) == sorted([*totals, "/listed/unused"])
        assert response.headers["X-Query-Cost"] == str(1 + used + 1)

        # --- a filter naming 33,000 endpoints (10 of them unknown): exact numbers.
        rng = random.Random(33_000)
        named = rng.sample(sorted(totals), 32_990) + [f"/unknown/{i}" for i in range(10)]
        chosen = {p: totals[p] for p in named if p in totals}
        filtered = """query($f: UsageFilter!) { account { usage(filter: $f) { calls credits
            breakdown(by: ENDPOINT, limit: 3) { key calls credits shareOfCredits } } } }"""
        response = await post(client, filtered, {"f": {**MONTH, "endpoints": named}})
        body = response.json()
        assert "errors" not in body, body
        usage = body["data"]["account"]["usage"]
        chosen_credits = sum(cr for _, cr in chosen.values())
        assert (usage["calls"], usage["credits"]) == (sum(c for c, _ in chosen.values()),
                                                      chosen_credits)
        assert [(r["key"], r["calls"], r["credits"]) for r in usage["breakdown"]] == \
            ordered(chosen)[:3]
        assert usage["breakdown"][0]["shareOfCredits"] == pytest.approx(
            100 * ordered(chosen)[0][2] / chosen_credits, rel=1e-12)

    # --- with the default limits the unlimited lists are refused, before any usage SQL,
    # with the cost they would have (the counts are one statement after authentication).
    async with serve(db_url) as client:
        with StatementCounter() as sql:
            body = (await post(client, everything, {"f": MONTH})).json()
        assert body["data"] is None
        assert body["errors"][0]["extensions"] == {
            "code": "QUERY_TOO_COSTLY", "cost": 1 + 6 + 5 + used, "maxCost": 5000}
        assert sql.count == 2
        body = (await post(client, "{ account { endpoints { path } } }")).json()
        assert body["errors"][0]["extensions"]["cost"] == 1 + used + 1
        # ... while the top rows stay cheap.
        body = (await post(client, top5, {"f": MONTH})).json()
        assert "errors" not in body, body


# External ids whose global ids (base64 of "<Type>:<id>") sort differently from the ids.
IDS = ["a", "B", "~x", "é", "0", "zz", "A_", "+", "ab", "a-"]
SOURCES = ["Zsrc", "asrc", "_src", "ésrc", "Bsrc"]


async def test_ties_are_broken_by_the_key_in_every_dimension(db_url):
    """Equal credits and calls everywhere: the SQL cut must keep the rows whose API key
    comes first, for paths and source keys (code point order) and for API key and user
    ids (global ids), at every limit."""
    assert sorted(IDS) != [x for _, x in sorted((gid("ApiKey", x), x) for x in IDS)]
    assert sorted(IDS) != [x for _, x in sorted((gid("User", x), x) for x in IDS)]
    async with serve(db_url) as client:
        await make_account(client, "ties", users=[("admin", "ADMIN"), *[(u, "MEMBER")
                                                                        for u in IDS]],
                           keys=IDS)
        events = [event(f"t{i}", "ties", key, key, f"/{key}", SOURCES[i % len(SOURCES)], 7,
                        START + timedelta(minutes=i)) for i, key in enumerate(IDS)]
        assert (await ingest(client, events))["accepted"] == len(IDS)
        expected = {
            "API_KEY": sorted(gid("ApiKey", x) for x in IDS),
            "USER": sorted(gid("User", x) for x in IDS),
            "ENDPOINT": sorted(f"/{x}" for x in IDS),
            "SOURCE": sorted(SOURCES),
        }
        for by, keys in expected.items():
            for limit in range(len(keys) + 2):
                body = (await post(client, """query($f: UsageFilter!, $by: UsageDimension!,
                    $n: Int) { account { usage(filter: $f) { breakdown(by: $by, limit: $n) {
                    key calls credits shareOfCredits } } } }""",
                    {"f": MONTH, "by": by, "n": limit}, account="ties")).json()
                assert "errors" not in body, body
                rows = body["data"]["account"]["usage"]["breakdown"]
                assert [r["key"] for r in rows] == keys[:limit], (by, limit)
                share = 100 * (len(IDS) // len(keys)) / len(IDS)
                assert all(r["shareOfCredits"] == pytest.approx(share) for r in rows)


async def test_list_costs_follow_the_accounts_real_sizes(db_url):
    """A list costs what the account holds (at least 100): counted in one statement, and
    not at all when the cost at 100 per list is refused anyway."""
    keys = [f"key{i:03}" for i in range(150)]
    async with serve(db_url) as client:
        await make_account(client, "big", users=[("admin", "ADMIN")], keys=keys)
        for key in keys[:20]:  # 20 revoked: 130 active
            await put(client, f"/v1/accounts/big/api-keys/{key}", {
                "name": key, "prefix": "pk", "createdBy": "admin",
                "createdAt": "2025-06-01T00:00:00Z", "revokedAt": "2025-12-01T00:00:00Z"})
        await ingest(client, [event("e1", "big", "key100", "admin", "/v2/a", "api", 3,
                                    START)])
        report = '{ account { usage(filter: {from: "2026-01-01T00:00:00Z", ' \
                 'to: "2026-02-01T00:00:00Z"}) { breakdown(by: %s%s) { key } } } }'
        cases = [
            ("{ account { apiKeys { id } } }", 1 + 130),
            ("{ account { apiKeys(includeRevoked: true) { id } } }", 1 + 150),
            ("{ account { sources { key } } }", 1 + 100),  # 1 source: priced at 100
            ("{ account { endpoints { path } } }", 1 + 100),
            (report % ("API_KEY", ", limit: 120"), 1 + 6 + 5 + 120),
            (report % ("API_KEY", ", limit: 500"), 1 + 6 + 5 + 150),
            (report % ("API_KEY", ""), 1 + 6 + 5 + 150),
            (report % ("ENDPOINT", ", limit: 500"), 1 + 6 + 5 + 100),
            (report % ("USER", ""), 1 + 6 + 5 + 100),
        ]
        for query, cost in cases:
            response = await post(client, query + " ", None)
            body = response.json()
            assert "errors" not in body, body
            assert response.headers["X-Query-Cost"] == str(cost), query
        # rateLimit.cost says the same
        body = (await post(client, "{ account { apiKeys { id } } rateLimit { cost } }")).json()
        assert body["data"]["rateLimit"]["cost"] == 1 + 130

    async with serve(db_url, max_query_cost=120) as client:
        # Authentication alone, then the counts, for a list query; nothing more.
        with StatementCounter() as sql:
            body = (await post(client, "{ account { apiKeys { id } } }")).json()
        assert body["errors"][0]["extensions"]["cost"] == 131 and sql.count == 2
        # Priced at 100 the query is already too dear: refused without counting.
        with StatementCounter() as sql:
            body = (await post(client, "{ account { sources { key } endpoints { path } } }"
                               )).json()
        assert body["errors"][0]["extensions"] == {"code": "QUERY_TOO_COSTLY", "cost": 201,
                                                   "maxCost": 120}
        assert sql.count == 1


async def test_filters_take_id_lists_past_the_bind_limit(db_url):
    """Global ids of 33,000 API keys and users in one filter (one array parameter in the
    loaders' lookups): unknown ids match nothing, the known ones count exactly."""
    async with serve(db_url, **ROOMY) as client:
        await make_account(client, "big", users=[("admin", "ADMIN")], keys=["k1", "k2"])
        await ingest(client, [event(f"e{i}", "big", f"k{1 + i % 2}", "admin", "/v2/a", "api",
                                    1 + i, START) for i in range(10)])
        ghosts = [gid("ApiKey", f"ghost{i}") for i in range(33_000)]
        response = await post(client, """query($f: UsageFilter!) { account {
            usage(filter: $f) { calls credits } } }""",
            {"f": {**MONTH, "apiKeyIds": [*ghosts, gid("ApiKey", "k2")],
                   "userIds": [gid("User", f"ghost{i}") for i in range(33_000)]
                   + [gid("User", "admin")]}})
        body = response.json()
        assert "errors" not in body, body
        usage = body["data"]["account"]["usage"]
        assert (usage["calls"], usage["credits"]) == (5, sum(1 + i for i in range(1, 10, 2)))

"""Distributed mode on a real Citus cluster (a coordinator and two workers that this
module starts, tests/support/citus_server.py): the migrations place the tables as
``gql_usage.storage.distribution`` declares, the numbers are exact across accounts, every
statement about one account runs on one shard (ingestion, analytics, compaction, viewer
and access-token lookups, the alert outbox: recorded while one account is served, then
EXPLAINed), compaction takes no cluster-wide lock, alerts are delivered, and a worker
killed mid-ingestion loses and duplicates nothing. Skipped, saying why, without Citus."""

from __future__ import annotations

import ast
import asyncio
import random
import re
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from support.alerts import PERIOD, SECRET, at, ev, expected_alerts, verified
from support.citus_server import CitusCluster, citus_cluster, citus_missing
from support.config import make_settings
from support.database import connect
from support.events import ENDPOINTS, KEYS, SOURCES, USERS
from support.helpers import SERVICE, event, gid, gql, make_account, put, token
from support.webhook_receiver import DEADLINE_S, webhook_receiver
from tortoise import Tortoise

from bench.dashboard import DASHBOARD, DASHBOARD_V2
from gql_usage.alerts import outbox
from gql_usage.alerts.delivery import AlertDelivery, DeliveryConfig
from gql_usage.alerts.thresholds import DEFAULT_THRESHOLDS
from gql_usage.app import create_app
from gql_usage.ingest import store_citus
from gql_usage.ingest.rows import now_us
from gql_usage.storage import cube
from gql_usage.storage.db import StatementCounter, run_migrations
from gql_usage.storage.distribution import (
    DISTRIBUTED_TABLES,
    REFERENCE_TABLES,
    distribute,
    placement,
)

pytestmark = pytest.mark.skipif(citus_missing() is not None, reason=citus_missing() or "")

RANGE = 'from: "2026-01-01T00:00:00Z", to: "2026-02-01T00:00:00Z"'
ACCOUNTS = ["acme", "beta", "gamma", "delta", "omega"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[CitusCluster]:
    with citus_cluster(workers=2) as started:
        yield started


@pytest.fixture(scope="module")
async def citus_url(cluster: CitusCluster) -> str:
    url = cluster.create_database("gql_citus")
    await run_migrations(url)  # what `gql-usage migrate` and the server's start-up run
    return url


def _dsn(url: str) -> str:
    return url.replace("postgres://", "postgresql://", 1)


@pytest.fixture
async def client(citus_url: str) -> AsyncIterator[httpx.AsyncClient]:
    await connect(citus_url)
    app = create_app(make_settings(citus_url), manage_db=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as c:
        yield c
    await Tortoise.close_connections()


async def test_migrate_places_every_table_as_declared(citus_url: str, cluster: CitusCluster):
    conn = await asyncpg.connect(_dsn(citus_url))
    try:
        placed = await placement(conn)
        assert {t: placed.get(t) for t in DISTRIBUTED_TABLES} == dict.fromkeys(
            DISTRIBUTED_TABLES, "distributed")
        assert {t: placed.get(t) for t in REFERENCE_TABLES} == dict.fromkeys(
            REFERENCE_TABLES, "reference")
        # One co-location group: an account's rows of every table on one node.
        groups = await conn.fetch(
            "SELECT DISTINCT colocationid FROM pg_dist_partition WHERE partmethod = 'h'")
        assert len(groups) == 1
        # Every key of a distributed table leads with (or holds) account_id.
        keys = await conn.fetch(
            "SELECT conrelid::regclass::text AS t, pg_get_constraintdef(oid) AS d"
            " FROM pg_constraint WHERE contype IN ('p', 'u', 'f')"
            " AND conrelid::regclass::text = ANY($1::text[])", list(DISTRIBUTED_TABLES))
        lacking = [(r["t"], r["d"]) for r in keys
                   if "account_id" not in r["d"].split("REFERENCES")[0]]
        assert lacking == []
        assert {(r["t"], r["d"]) for r in keys} >= {
            ("usage_event", "PRIMARY KEY (account_id, id)"),
            ("api_key", "FOREIGN KEY (account_id, created_by_id) "
                        "REFERENCES app_user(account_id, id)")}
        # The shards are spread over both workers.
        ports = await conn.fetch(
            "SELECT DISTINCT nodeport FROM pg_dist_shard_placement p JOIN pg_dist_shard s"
            " USING (shardid) WHERE s.logicalrelid = 'usage_event'::regclass")
        assert {r["nodeport"] for r in ports} == {w.port for w in cluster.workers}
        # Migrating again changes nothing.
        assert await distribute(conn) == []
    finally:
        await conn.close()
    await run_migrations(citus_url)


def _events(rng: random.Random, account: str, n: int) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        occurred = datetime(2026, 1, 1, tzinfo=UTC).timestamp() + rng.randrange(0, 31 * 86400)
        out.append(event(f"{account}-{i}", account, rng.choice(KEYS), rng.choice(USERS)[0],
                         rng.choice(ENDPOINTS), rng.choice(SOURCES), rng.randrange(0, 50),
                         datetime.fromtimestamp(occurred + rng.random(), UTC)))
    return out


def _expected(events: list[dict[str, Any]]) -> dict[str, Any]:
    by_key: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for e in events:
        by_key[e["apiKeyId"]][0] += 1
        by_key[e["apiKeyId"]][1] += e["credits"]
    return {"calls": len(events), "credits": sum(e["credits"] for e in events),
            "byKey": {gid("ApiKey", k): (c, cr) for k, (c, cr) in by_key.items()}}


async def _report(client: httpx.AsyncClient, account: str) -> dict[str, Any]:
    body = await gql(client, f"{{ account {{ usage(filter: {{{RANGE}}}) {{ calls credits"
                             " breakdown(by: API_KEY) { key calls credits } } } }",
                     user="admin", account=account)
    assert "errors" not in body, body
    usage = body["data"]["account"]["usage"]
    return {"calls": usage["calls"], "credits": usage["credits"],
            "byKey": {r["key"]: (r["calls"], r["credits"]) for r in usage["breakdown"]}}


@pytest.mark.parametrize("cube_after", [cube.CUBE_AFTER_EVENTS, 0, 300])
async def test_totals_are_exact_for_every_account(client: httpx.AsyncClient, cube_after: int):
    """Batches mixing five accounts, resent in part, concurrent, with compaction in
    between: each account's totals and breakdown equal its own events, counted here.
    Adaptive cube (``cube.compact_account``): every account raw (the default threshold),
    every account in the cube (0), or some entering it between the two rounds (300)."""
    rng = random.Random(20261201)
    sent: dict[str, list[dict[str, Any]]] = {}
    for account in ACCOUNTS:
        name = f"x{cube_after}-{account}"
        await make_account(client, name, users=USERS, keys=KEYS)
        sent[name] = _events(rng, name, rng.randrange(150, 400))
    mixed = [e for events in sent.values() for e in events]
    rng.shuffle(mixed)
    batches = [mixed[i:i + 250] for i in range(0, len(mixed), 250)]
    resent = [rng.sample(b, 40) for b in batches[:3]]

    async def post(batch: list[dict[str, Any]]) -> None:
        response = await client.post("/v1/usage-events", json=batch, headers=SERVICE)
        assert response.status_code == 200, response.text

    await asyncio.gather(*(post(b) for b in batches[: len(batches) // 2]))
    assert await cube.compact_all(cube_after) > 0
    await asyncio.gather(*(post(b) for b in batches[len(batches) // 2:] + resent))
    for account, events in sent.items():  # answered from the cube and pending events
        assert await _report(client, account) == _expected(events), account
    await cube.compact_all(cube_after)
    for account, events in sent.items():  # answered from the cube alone (or raw events)
        assert await _report(client, account) == _expected(events), account


async def _tasks(dsn: str, sql: str, params: list[Any]) -> int:
    """Citus's task count of a statement (1: one shard, a router plan)."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            plan = [r[0] for r in await conn.fetch(f"EXPLAIN {sql}", *params)]
    finally:
        await conn.close()
    counts = [int(line.split(":")[1]) for line in plan if "Task Count:" in line]
    # "Router" plans of one shard show one task; a plan without distributed subplans
    # has exactly one Task Count line.
    assert len(counts) == 1, plan
    return counts[0]


async def test_one_accounts_analytics_and_compaction_run_on_one_shard(
        client: httpx.AsyncClient, citus_url: str):
    await make_account(client, "router", users=USERS, keys=KEYS)
    batch = _events(random.Random(7), "router", 60)
    response = await client.post("/v1/usage-events", json=batch, headers=SERVICE)
    assert response.status_code == 200
    with StatementCounter() as counter:
        body = await gql(client, f"{{ account {{ usage(filter: {{{RANGE}}}) {{ calls credits"
                                 " series(granularity: WEEK) { calls }"
                                 " breakdown(by: API_KEY, limit: 2) { key credits } } } }",
                         user="admin", account="router")
    assert body["data"]["account"]["usage"]["calls"] == 60
    analytics = [s.rsplit(": ", 1)[0] for s in counter.statements
                 if "usage_cube" in s or "usage_event" in s or "usage_pending" in s]
    assert analytics and all(s.endswith(": []") for s in counter.statements
                             if s.rsplit(": ", 1)[0] in analytics)
    dsn = _dsn(citus_url)
    for sql in analytics:
        assert await _tasks(dsn, sql, []) == 1, sql
    conn = await asyncpg.connect(dsn)
    account = await conn.fetchval("SELECT id FROM account WHERE external_id = 'router'")
    await conn.close()
    for sql in (cube._ACCOUNT_FOLD, cube._ACCOUNT_DELETE):
        assert await _tasks(dsn, sql, [account]) == 1, sql


async def test_the_viewer_lookup_runs_on_one_shard_once_the_account_is_known(
        client: httpx.AsyncClient, citus_url: str):
    await make_account(client, "viewer", users=USERS, keys=KEYS)
    assert "errors" not in await gql(client, "{ account { name } }", account="viewer")
    with StatementCounter() as counter:
        body = await gql(client, "{ account { name } }", account="viewer")
    assert body == {"data": {"account": {"name": "Account viewer"}}}
    lookups = [s for s in counter.statements if "FROM app_user u JOIN account a" in s]
    assert len(lookups) == 1
    sql, params = lookups[0].rsplit(": ", 1)
    assert sql.endswith("AND u.account_id = $3")
    assert await _tasks(_dsn(citus_url), sql, ast.literal_eval(params)) == 1


async def test_the_access_token_lookup_runs_on_one_shard_once_the_account_is_known(
        client: httpx.AsyncClient, citus_url: str):
    """``access_token`` is distributed; a token names its account's external id, so the
    lookup by hash also names the account (one shard), and the token reads its account."""
    await make_account(client, "tokens", users=USERS, keys=KEYS)
    made = await gql(client, 'mutation { createAccessToken(name: "partner") { token } }',
                     account="tokens")
    secret = made["data"]["createAccessToken"]["token"]
    assert "errors" not in await gql(client, "{ account { name } }", bearer=secret)
    with StatementCounter() as counter:
        body = await gql(client, "{ account { name } }", bearer=secret)
    assert body == {"data": {"account": {"name": "Account tokens"}}}
    lookups = [s for s in counter.statements if "FROM access_token t JOIN account a" in s]
    assert len(lookups) == 1
    sql, params = lookups[0].rsplit(": ", 1)
    assert sql.endswith("AND t.account_id = $3")
    assert await _tasks(_dsn(citus_url), sql, ast.literal_eval(params)) == 1
    # Another account's part on the same secret finds nothing, on the cluster too.
    other = secret.split(".")[0] + "." + secret.split(".")[1][:-2] + "Zg"
    refused = await gql(client, "{ account { name } }", bearer=other)
    assert refused["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED", refused


#: Statements that are not about one account, each with why; every other statement the
#: requests below send must run on one shard. Matched by how the statement begins.
NOT_PER_ACCOUNT: dict[str, str] = {
    cube.PENDING_ACCOUNTS:
        "compaction's scheduling: which accounts have pending events (every shard, no lock);"
        " each account's round is then routed",
    "SELECT account_id FROM usage_alert WHERE delivered_at_us IS NULL":
        "alert delivery's scheduling: which accounts have due alerts (every shard, no lock);"
        " each account's claim is then routed",
    "SELECT min(next_attempt_at_us) FROM usage_alert":
        "alert delivery's timer: when the next alert of any account falls due",
}
#: Not sent below, and not per account either: the migrations and ``distribute`` (DDL),
#: and the viewer / access-token lookup of an account the process does not know yet
#: (the credential names only its external id; after it, ``u.account_id = <id>``).
#: Session commands (``SET ...``) name no table.
_SESSION = ("SET ", "BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")
_TABLES = re.compile(r"\b(" + "|".join((*DISTRIBUTED_TABLES, *REFERENCE_TABLES)) + r")\b")


#: Statements the requests below must send (so that a change that stops sending one is
#: seen): ingestion's five and the resend lookup, the cube's reads and rounds, the
#: viewer's and access token's lookups, the service API, the outbox.
_EXERCISED = ("INSERT INTO usage_event", store_citus.CITUS_PENDING, store_citus.CITUS_KEYS,
              store_citus.CITUS_TOTALS, "INSERT INTO usage_alert", "FROM unnest(",
              "FROM usage_cube", "INSERT INTO usage_cube ", "DELETE FROM usage_pending",
              "FROM app_user u JOIN account a", "FROM access_token t JOIN account a",
              'UPDATE "api_key"', "DELETE FROM usage_period_total",
              "UPDATE usage_alert SET next_attempt_at_us", "UPDATE usage_alert SET delivered_at_us",
              "UPDATE usage_alert SET attempts")


async def _plans(dsn: str, calls: list[tuple[str, list[Any]]]
                 ) -> list[tuple[str, list[Any], list[str]]]:
    """Each distinct statement of ``calls`` with its Citus ``EXPLAIN`` (in a transaction
    rolled back: nothing runs), except the listed and session ones."""
    seen: set[str] = set()
    out = []
    conn = await asyncpg.connect(dsn)
    try:
        for sql, params in calls:
            if sql.lstrip().upper().startswith(_SESSION) or any(
                    sql.lstrip().startswith(p) for p in NOT_PER_ACCOUNT):
                continue
            if (key := f"{sql} {params!r}") in seen:
                continue
            seen.add(key)
            tx = conn.transaction()
            await tx.start()
            try:
                plan = [r[0] for r in await conn.fetch(f"EXPLAIN (COSTS off) {sql}", *params)]
            finally:
                await tx.rollback()
            out.append((sql, params, plan))
    finally:
        await conn.close()
    return out


def _one_shard(sql: str, plan: list[str]) -> str | None:
    """Why ``plan`` is not a one-shard (router) plan, or None."""
    if not any("Citus" in line for line in plan):
        # Planned by PostgreSQL alone: it must name no table of the cluster (a catalogue
        # check, an advisory lock).
        names = _TABLES.findall(sql)
        return f"a plain plan naming {names}" if names else None
    counts = [int(line.split(":")[1]) for line in plan if "Task Count:" in line]
    if counts != [1] or any("Subplan" in line or "pull to coordinator" in line
                            or "repartition" in line for line in plan):
        return f"tasks {counts}"
    return None


async def _account_ids(dsn: str, account: str) -> tuple[int, dict[str, int]]:
    conn = await asyncpg.connect(dsn)
    try:
        account_id = await conn.fetchval("SELECT id FROM account WHERE external_id = $1",
                                         account)
        keys = {r["external_id"]: r["id"] for r in await conn.fetch(
            "SELECT external_id, id FROM api_key WHERE account_id = $1", account_id)}
    finally:
        await conn.close()
    return int(account_id), keys


def _store_statements(calls: list[tuple[str, list[Any]]]) -> list[str]:
    """The ingestion statements among ``calls`` (what ``store_citus`` sends)."""
    marks = ("INSERT INTO usage_event", store_citus.CITUS_PENDING, store_citus.CITUS_KEYS,
             store_citus.CITUS_TOTALS, "INSERT INTO usage_alert")
    return [next(m for m in marks if sql.startswith(m)) for sql, _ in calls
            if any(sql.startswith(m) for m in marks)]


async def test_a_batch_is_routed_per_account_in_at_most_five_statements(
        client: httpx.AsyncClient, citus_url: str):
    """A batch of two accounts whose credits reach thresholds: per account the events,
    their pending copies, the keys (last use; period, pool and budgets read), the running
    totals and the alerts, each one a router statement; a resend is one statement per
    account. The totals and alerts are exact (``expected_alerts``, computed here)."""
    dsn = _dsn(citus_url)
    accounts = ["ingest1", "ingest2"]
    for account in accounts:
        await make_account(client, account, users=[("admin", "ADMIN")], keys=["k1", "k2"],
                           granted=1000, period=(PERIOD[0].isoformat(), PERIOD[1].isoformat()))
    sent = {a: [ev(f"{a}-{i}", 150 + i, at(2 + i), account=a, key=("k1", "k2")[i % 2])
                for i in range(6)] for a in accounts}
    mixed = [e for pair in zip(*sent.values(), strict=True) for e in pair]
    assert "errors" not in await gql(client, "{ viewer { name } }", account=accounts[0])
    with StatementCounter() as counter:
        response = await client.post("/v1/usage-events", json=mixed, headers=SERVICE)
    assert response.json() == {"accepted": 12, "duplicates": 0, "rejected": []}
    per_account = ["INSERT INTO usage_event", store_citus.CITUS_PENDING,
                   store_citus.CITUS_KEYS, store_citus.CITUS_TOTALS, "INSERT INTO usage_alert"]
    assert _store_statements(counter.calls) == per_account * 2
    stored = [c for c in counter.calls if _store_statements([c])]
    for sql, _, plan in await _plans(dsn, stored):
        assert _one_shard(sql, plan) is None, (sql, plan)
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT a.external_id, u.threshold, u.used FROM usage_alert u"
            " JOIN account a ON a.id = u.account_id WHERE a.external_id = ANY($1::text[])"
            " AND u.api_key_id = 0", accounts)
    finally:
        await conn.close()
    assert sorted(tuple(r) for r in rows) == sorted(
        (a, x["threshold"], x["used"]) for a in accounts
        for x in expected_alerts([sent[a]], granted=1000, thresholds=DEFAULT_THRESHOLDS))
    with StatementCounter() as counter:
        again = await client.post("/v1/usage-events", json=mixed, headers=SERVICE)
    assert again.json() == {"accepted": 0, "duplicates": 12, "rejected": []}
    assert _store_statements(counter.calls) == ["INSERT INTO usage_event"] * 2


async def test_every_statement_about_one_account_runs_on_one_shard(
        client: httpx.AsyncClient, citus_url: str):
    """Every statement sent while one account is served (ingestion with alerts and a
    conflicting resend, the v1 and v2 dashboards, breakdowns by every dimension, keys
    and budgets, the pool and its forecast, spikes, alerts, access tokens, CSV exports,
    the viewer and access-token lookups, service API upserts, compaction rounds entering
    and then feeding the cube, the alert outbox's claim and outcomes) is recorded, then
    run again under ``EXPLAIN`` on the cluster: each is a router plan of one task, but
    the scheduling statements ``NOT_PER_ACCOUNT`` lists."""
    dsn = _dsn(citus_url)
    await make_account(client, "route", users=USERS, keys=KEYS, granted=2000)
    assert "errors" not in await gql(client, "{ viewer { name } }", account="route")
    made = await gql(client, 'mutation { createAccessToken(name: "ro") { token } }',
                     account="route")
    secret = made["data"]["createAccessToken"]["token"]
    account_id, _ = await _account_ids(dsn, "route")
    rng = random.Random(15)
    batch = _events(rng, "route", 120)
    variables = {"f": {"from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z"}}
    by_every = " ".join(f"{d.lower()}: breakdown(by: {d}, limit: 2, other: true)"
                        " { key label calls credits isOther groupCount }"
                        for d in ("ENDPOINT", "API_KEY", "SOURCE", "USER"))
    report = (f"{{ account {{ usage(filter: {{{RANGE}}}) {{ calls credits"
              f" series(granularity: HOUR) {{ calls }} {by_every}"
              " spikes(granularity: DAY, by: USER) { score drivers { row { key } } }"
              " previous { calls byKey: breakdown(by: API_KEY) { key } } } } }")
    others = ("{ account { name creditPool { used remaining overage forecast"
              " { burnRatePerDay projectedUsed exhaustsAt } }"
              " apiKeys(includeRevoked: true) { id lastUsedAt createdBy { name }"
              f" budget {{ limit used remaining }} usage(filter: {{{RANGE}}}) {{ calls }} }}"
              " endpoints { path } sources { key } alerts(first: 5) { id used apiKey { name } }"
              " accessTokens { name } } viewer { name role } }")

    async def dashboards() -> None:
        for query in (DASHBOARD, DASHBOARD_V2):
            body = await gql(client, query, variables, account="route")
            assert "errors" not in body, body
        for query in (report, others):
            body = await gql(client, query, account="route")
            assert "errors" not in body, body
        admin = {"Authorization": f"Bearer {token('admin', 'route')}"}
        for by in ("", "&by=ENDPOINT", "&by=USER"):
            response = await client.get(
                "/export/usage.csv?from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z"
                f"&granularity=DAY{by}", headers=admin)
            assert response.status_code == 200, response.text

    with StatementCounter() as counter:
        await put(client, "/v1/accounts/route/api-keys/k1", {
            "name": "Key k1", "prefix": "pk_k1", "createdBy": "admin",
            "createdAt": "2025-06-01T00:00:00Z", "revokedAt": None, "creditBudget": 300})
        await put(client, "/v1/accounts/route/users/bob", {
            "name": "Bob", "email": "bob@route.example", "role": "MEMBER"})
        response = await client.post("/v1/usage-events", json=batch, headers=SERVICE)
        assert response.json()["accepted"] == len(batch)
        resent = [*batch[:5], {**batch[5], "credits": batch[5]["credits"] + 1}]
        response = await client.post("/v1/usage-events", json=resent, headers=SERVICE)
        assert response.json()["duplicates"] == 5, response.text
        assert [r["index"] for r in response.json()["rejected"]] == [5], response.text
        await dashboards()  # the account raw
        assert await cube.compact_account(account_id, 0) == len(batch)  # it enters the cube
        more = [{**e, "id": "more-" + e["id"]} for e in _events(rng, "route", 30)]
        response = await client.post("/v1/usage-events", json=more, headers=SERVICE)
        assert response.json()["accepted"] == len(more)
        await dashboards()  # from the cube and pending events
        assert await cube.compact_account(account_id, 0) == len(more)  # folded
        body = await gql(client, "{ account { name } }", bearer=secret)
        assert body == {"data": {"account": {"name": "Account route"}}}, body
        claimed = [a for a in await outbox.claim(now_us(), 60_000_000, 100)
                   if a.account == "route"]
        assert claimed
        await outbox.delivered(claimed[0], now_us())
        await outbox.failed(claimed[-1], "refused", now_us() + 1)
    plans = await _plans(dsn, counter.calls)
    missing = [m for m in _EXERCISED if not any(m in sql for sql, _, _ in plans)]
    assert missing == [], f"not exercised: {missing}"
    # Compaction's only lock is the account's own (no cluster-wide lock).
    locks = [(sql, params) for sql, params in counter.calls if "advisory" in sql]
    assert locks and all(params == [account_id] for _, params in locks), locks
    wrong = [(sql, why) for sql, _, plan in plans if (why := _one_shard(sql, plan))]
    assert wrong == [], wrong
    print(f"{len(plans)} distinct statements EXPLAINed, each on one shard; "
          f"{sum(1 for p in plans if any('Citus' in line for line in p[2]))} routed by Citus")


async def test_a_round_holds_only_its_accounts_lock(client: httpx.AsyncClient, citus_url: str):
    """While one account's round is held (its advisory lock taken elsewhere), another
    account's events are folded: compaction takes no cluster-wide lock."""
    for account in ("lock_a", "lock_b"):
        await make_account(client, account, users=USERS, keys=KEYS)
        response = await client.post("/v1/usage-events", headers=SERVICE,
                                     json=_events(random.Random(3), account, 30))
        assert response.status_code == 200
    await cube.compact_all()  # whatever other tests left
    for account in ("lock_a", "lock_b"):
        response = await client.post("/v1/usage-events", headers=SERVICE, json=[
            {**e, "id": "again-" + e["id"]} for e in _events(random.Random(4), account, 25)])
        assert response.status_code == 200
    holder = await asyncpg.connect(_dsn(citus_url))
    try:
        a = await holder.fetchval("SELECT id FROM account WHERE external_id = 'lock_a'")
        b = await holder.fetchval("SELECT id FROM account WHERE external_id = 'lock_b'")
        async with holder.transaction():
            await holder.execute("SELECT pg_advisory_xact_lock($1, $2)", cube._LOCK_KEY, a)
            assert await asyncio.wait_for(cube.compact_account(a), 30) == 0
            assert await asyncio.wait_for(cube.compact_account(b), 30) == 25
        assert await cube.compact_account(a) == 25
    finally:
        await holder.close()


async def test_alerts_recorded_by_ingestion_are_delivered_from_the_cluster(
        client: httpx.AsyncClient, citus_url: str):
    """Two accounts' batches, mixed, cross thresholds: every alert ingestion records is
    claimed (per account, one shard each), signed and delivered to a real receiver once,
    the first attempt refused (500) and retried."""
    accounts = ["alerts_a", "alerts_b"]
    conn = await asyncpg.connect(_dsn(citus_url))
    try:  # other tests' accounts crossed thresholds too: their alerts are not this test's
        await conn.execute("UPDATE usage_alert SET delivered_at_us = 0"
                           " WHERE delivered_at_us IS NULL")
    finally:
        await conn.close()
    for account in accounts:
        await make_account(client, account, users=[("admin", "ADMIN")], keys=["k1"],
                           granted=1000, period=(PERIOD[0].isoformat(), PERIOD[1].isoformat()))
    sent = {"alerts_a": [ev("a1", 600, at(2), account="alerts_a"),
                         ev("a2", 250, at(3), account="alerts_a")],
            "alerts_b": [ev("b1", 1000, at(4), account="alerts_b")]}
    mixed = [sent["alerts_a"][0], sent["alerts_b"][0], sent["alerts_a"][1]]
    response = await client.post("/v1/usage-events", json=mixed, headers=SERVICE)
    assert response.json()["accepted"] == 3, response.text
    expected = sorted(
        (account, a["threshold"], a["used"]) for account in accounts
        for a in expected_alerts([sent[account]], granted=1000,
                                 thresholds=DEFAULT_THRESHOLDS))
    assert len({a for a, _, _ in expected}) == 2  # both accounts have alerts
    with webhook_receiver(statuses=[500]) as receiver:
        delivery = AlertDelivery(DeliveryConfig(receiver.url, SECRET, timeout_s=5,
                                                retry_base_s=0.05, retry_max_s=0.2))
        try:
            deadline = asyncio.get_running_loop().time() + DEADLINE_S
            while True:
                await delivery.deliver_due()
                conn = await asyncpg.connect(_dsn(citus_url))
                try:
                    rows = await conn.fetch(
                        "SELECT a.external_id, u.uid, u.attempts, u.delivered_at_us"
                        " FROM usage_alert u JOIN account a ON a.id = u.account_id"
                        " WHERE a.external_id = ANY($1::text[])", accounts)
                finally:
                    await conn.close()
                if rows and all(r["delivered_at_us"] is not None for r in rows):
                    break
                assert asyncio.get_running_loop().time() < deadline, [dict(r) for r in rows]
                await asyncio.sleep(0.1)
        finally:
            await delivery.aclose()
        requests = list(receiver.requests)
    payloads = [verified(r) for r in requests]
    # One refused, then sent again; ``used`` is each account's own total (Citus saw the
    # batch's events in the baseline once and counted the first batch twice).
    assert len(payloads) == len(expected) + 1, payloads
    delivered = {p["id"]: p for p in payloads}
    assert sorted((p["account"], p["threshold"], p["used"]) for p in delivered.values()) == (
        expected)
    assert {r["uid"] for r in rows} == set(delivered)
    assert sorted(r["attempts"] for r in rows) == [1] * (len(rows) - 1) + [2]


async def _worker_port(dsn: str, account_id: int) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(
            "SELECT nodeport FROM pg_dist_shard_placement WHERE shardid ="
            " get_shard_id_for_distribution_column('usage_event', $1::int)", account_id))
    finally:
        await conn.close()


async def test_a_worker_killed_mid_ingestion_loses_and_duplicates_nothing(
        client: httpx.AsyncClient, cluster: CitusCluster, citus_url: str):
    """A sender posts mixed batches and resends each until it is acknowledged (200); a
    worker holding some of the accounts is killed (SIGKILL) while it sends, and started
    again. Afterwards every acknowledged event is stored once, and each account's totals
    equal its own events: nothing lost, nothing counted twice."""
    dsn = _dsn(citus_url)
    victim = cluster.workers[0]
    on_node: dict[int, list[str]] = defaultdict(list)
    n = 0
    while len(on_node[victim.port]) < 2 or len(on_node[cluster.workers[1].port]) < 2:
        name = f"kill{n}"
        n += 1
        await make_account(client, name, users=USERS, keys=KEYS)
        conn = await asyncpg.connect(dsn)
        account_id = await conn.fetchval("SELECT id FROM account WHERE external_id = $1", name)
        await conn.close()
        on_node[await _worker_port(dsn, account_id)].append(name)
    accounts = on_node[victim.port][:2] + on_node[cluster.workers[1].port][:2]
    rng = random.Random(1515)
    sent = {a: _events(rng, a, 240) for a in accounts}
    mixed = [e for events in sent.values() for e in events]
    rng.shuffle(mixed)
    batches = [mixed[i:i + 40] for i in range(0, len(mixed), 40)]
    acknowledged: list[int] = []
    refused: list[str] = []
    killed = asyncio.Event()

    async def sender() -> None:
        deadline = asyncio.get_running_loop().time() + 180
        for i, batch in enumerate(batches):
            while True:
                try:
                    response = await client.post("/v1/usage-events", json=batch,
                                                 headers=SERVICE, timeout=60)
                    status = response.status_code
                except httpx.HTTPError as exc:
                    status = -1
                    refused.append(repr(exc))
                if status == 200:
                    body = response.json()
                    assert body["rejected"] == [], body
                    acknowledged.append(i)
                    break
                refused.append(str(status))
                assert asyncio.get_running_loop().time() < deadline, refused[-5:]
                await asyncio.sleep(0.2)
            if i == len(batches) // 3:
                killed.set()
                await asyncio.sleep(0)  # let the kill happen between two batches' sends

    async def crash() -> None:
        await killed.wait()
        await asyncio.to_thread(victim.kill)
        await asyncio.sleep(2)  # the sender meets the dead worker meanwhile
        await asyncio.to_thread(victim.start)

    await asyncio.gather(sender(), crash())
    assert acknowledged == list(range(len(batches)))
    assert refused, "no batch met the dead worker: the kill came too late"
    print(f"worker killed mid-ingestion: {len(batches)} batches acknowledged after "
          f"{len(refused)} refused attempts ({sorted(set(refused))[:5]})")
    # A batch whose answer was lost, resent whole, is a duplicate, not a second copy.
    again = await client.post("/v1/usage-events", json=batches[0], headers=SERVICE)
    assert again.json() == {"accepted": 0, "duplicates": len(batches[0]), "rejected": []}
    conn = await asyncpg.connect(dsn)
    try:
        # Transactions the worker had prepared when it died are finished now, as Citus's
        # maintenance daemon would within a minute.
        await conn.fetchval("SELECT recover_prepared_transactions()")
        rows = await conn.fetch(
            "SELECT a.external_id, count(*) AS n, count(DISTINCT e.event_id) AS d"
            " FROM usage_event e JOIN account a ON a.id = e.account_id"
            " WHERE a.external_id = ANY($1::text[]) GROUP BY a.external_id", accounts)
    finally:
        await conn.close()
    assert {r["external_id"]: (r["n"], r["d"]) for r in rows} == {
        a: (len(events), len(events)) for a, events in sent.items()}
    for account, events in sent.items():
        assert await _report(client, account) == _expected(events), account
    await cube.compact_all()
    for account, events in sent.items():
        assert await _report(client, account) == _expected(events), account

"""Quick side-by-side figures on SQLite and PostgreSQL, in one run.

    python -m bench.quick [--events 120000] [--runs 30]

For each database: seeds the demo organisation (``gql_usage.demo``) through the real
ingestion path and reports the ingest rate, then sends the dashboard page query through
the full ASGI stack (auth, GraphQL, loaders, SQL) ``--runs`` times and reports the median
and p95 latency and the SQL statements per request. Baseline for the query: the same
totals computed by a hand-written ``GROUP BY`` over the raw ``usage_event`` table.
PostgreSQL is started in a temporary directory (``tests/pg_server.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from tortoise import Tortoise
from tortoise.backends.base.executor import EXECUTOR_CACHE

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from pg_server import create_database, start_postgres  # noqa: E402

from gql_usage.app import create_app  # noqa: E402
from gql_usage.auth import issue_token  # noqa: E402
from gql_usage.db import StatementCounter, connection, init_db  # noqa: E402
from gql_usage.demo import seed_demo  # noqa: E402
from gql_usage.settings import Settings  # noqa: E402

SECRET = "bench-secret-0123456789abcdef0123456789abcdef"
DASHBOARD = """query Dashboard($f: UsageFilter!) {
  account {
    name
    usage(filter: $f) {
      calls credits
      series(granularity: DAY) { start calls credits }
      byEndpoint: breakdown(by: ENDPOINT) { key label calls credits shareOfCredits }
      byKey: breakdown(by: API_KEY) { key label calls credits shareOfCredits }
    }
    apiKeys { id name usage(filter: $f) { calls credits } }
  }
}"""


async def measure(url: str, events: int, runs: int) -> dict[str, float]:
    EXECUTOR_CACHE.clear()
    await init_db(url)
    started = time.perf_counter()
    info = await seed_demo(events=events)
    seed_s = time.perf_counter() - started
    user, account = info.paid_admin
    app = create_app(Settings(database_url=url, jwt_secret=SECRET, service_token="x"),
                     manage_db=False)
    token = issue_token(SECRET, user, account, 3600)
    _, rows = await connection().execute_query(
        "SELECT MIN(occurred_at_us), MAX(occurred_at_us) FROM usage_event")
    hi = int(rows[0][1])
    from gql_usage.calendar import from_us

    variables = {"f": {"from": from_us(hi - 365 * 86400 * 10**6).isoformat(),
                       "to": from_us(hi + 1).isoformat()}}
    times: list[float] = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://bench") as client:
        for i in range(runs + 3):
            with StatementCounter() as counter:
                t0 = time.perf_counter()
                r = await client.post("/graphql", json={"query": DASHBOARD,
                                                        "variables": variables},
                                      headers={"Authorization": f"Bearer {token}"})
                elapsed = time.perf_counter() - t0
            body = r.json()
            assert "errors" not in body, body
            if i >= 3:  # warm-up
                times.append(elapsed * 1000)
    usage = body["data"]["account"]["usage"]
    # Baseline: the same totals, by hand, over the raw events.
    account_id = int((await connection().execute_query(
        "SELECT id FROM account WHERE external_id = 'acme'"))[1][0][0])
    raw_times = []
    for _ in range(5):
        t0 = time.perf_counter()
        _, raw = await connection().execute_query(
            f"SELECT endpoint_id, COUNT(*), SUM(credits) FROM usage_event WHERE account_id = "
            f"{account_id} AND occurred_at_us >= {hi - 365 * 86400 * 10**6} AND "
            f"occurred_at_us < {hi + 1} GROUP BY endpoint_id")
        raw_times.append((time.perf_counter() - t0) * 1000)
    assert sum(int(r[2]) for r in raw) == usage["credits"], "GraphQL and raw SQL disagree"
    await Tortoise.close_connections()
    return {"events": events, "seed_s": seed_s, "ingest_events_per_s": events / seed_s,
            "dashboard_p50_ms": statistics.median(times),
            "dashboard_p95_ms": sorted(times)[int(0.95 * (len(times) - 1))],
            "statements_per_request": counter.count,
            "raw_groupby_one_breakdown_ms": statistics.median(raw_times)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=120_000)
    p.add_argument("--runs", type=int, default=30)
    args = p.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["sqlite"] = asyncio.run(measure(f"sqlite://{tmp}/bench.sqlite3", args.events,
                                                args.runs))
    with start_postgres() as base:
        results["postgres"] = asyncio.run(measure(create_database(base, "bench"), args.events,
                                                  args.runs))
    keys = list(results["sqlite"])
    print(f"{'metric':32} {'sqlite':>14} {'postgres':>14}")
    for k in keys:
        print(f"{k:32} {results['sqlite'][k]:>14,.1f} {results['postgres'][k]:>14,.1f}")


if __name__ == "__main__":
    main()

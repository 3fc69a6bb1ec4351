"""The benchmark: ingestion and dashboard latency on a realistic dataset, side by side with
baselines, in one run.

    python -m bench [--events 10000000] [--db postgres|sqlite|citus] [--runs 30]

One run, one process tree: starts PostgreSQL in a temporary directory
(``tests/support/pg_server.py``; or uses a SQLite file), runs ``gql-usage serve`` on 127.0.0.1,
and then

1. creates the accounts, keys and users through the service API and posts every event of
   the dataset (``bench/data.py``) to ``POST /v1/usage-events`` in batches of 1,000 from 4
   concurrent clients, 2% of the batches sent twice: ``ingest_events_per_s``. Baseline:
   PostgreSQL ``COPY`` of the same rows into a bare table without indexes
   (``copy_events_per_s``, the floor). Latency of a batch: first deliveries
   (``ingest_batch_p50_ms``/``p99``) and resends of batches already stored
   (``resend_p50_ms``/``p99``: the retried batches during the load, then ``--resends``
   stored batches sent again once everything is in, one at a time). It waits until the
   compactor has folded every event into the cube: ``ingest_s``, ``drain_s`` (from the
   last batch's answer), ``ingest_folded_events_per_s`` (events over both), the pending
   count every second; then the sizes of the events and the cube (``events_rows``,
   ``events_mb``, ``cube_rows``, ``cube_mb``: tables with their indexes); then the
   sparse mix (``bench.data.SparseMix``: ``--sparse-accounts`` accounts of
   ``--sparse-events`` events each, interleaved in time order) the same way:
   ``sparse_folded_events_per_s``;
2. for the dashboard page query over the last 30, 90 and 365 days of the large account:
   checks that the GraphQL answer equals hand-written SQL ``GROUP BY``s over the raw
   events (a mismatch aborts the run), then times end-to-end HTTP latency
   (``graphql_p50_ms``/``graphql_p99_ms``), the raw SQL (``raw_sql_ms``, the naive
   baseline) and gql_usage's own analytics statement sent directly through the driver
   (``floor_sql_ms``), the request and the statement alternating run by run;
3. counts the SQL statements of one dashboard request (in-process, from Tortoise's log);
4. sends the 365-day dashboard from 32 concurrent clients (``requests_per_s``,
   ``requests_p50_ms``/``p99``);
5. reports the server's peak RSS;
6. the mixed run, the realistic case: a server of ``--load-workers`` processes (2) on the
   same database, the 365-day page from the same 32 clients while new events arrive at
   half the top rate measured in 1 (``--mixed-ingest-share``): ``load_workers``,
   ``load_requests_per_s``, ``load_p50_ms``/``load_p99_ms``, and the rate reached,
   ``load_ingest_events_per_s`` against ``load_ingest_target_per_s``.

Every timed dashboard request (2, 4, 6) asks for a range of its own: "the last N days"
ended a different number of hours, minutes and seconds ago (``dashboard.window``), so
that no cache of answers could serve them.

Prints a table, then one line of JSON.

``--db citus`` runs the same workload twice in one invocation, on single-node PostgreSQL
and then on a throwaway Citus cluster (``tests/support/citus_server.py``: a coordinator and
``--worker-nodes`` workers on loopback), and prints one table with a column per database;
the JSON line holds the PostgreSQL run's fields as ``--db postgres`` does, plus a ``citus``
object with the same fields for the cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.citus_server import citus_cluster, citus_missing  # noqa: E402
from support.pg_server import create_database, psql, start_postgres  # noqa: E402

from bench import dashboard, pending  # noqa: E402
from bench.data import END, AccountSpec, Dataset, SparseMix  # noqa: E402
from bench.pending import scalar  # noqa: E402
from bench.server import SECRET, SERVICE_TOKEN, Server  # noqa: E402
from gql_usage.auth import issue_token  # noqa: E402
from gql_usage.storage.db import POSTGRES_SESSION, run_migrations  # noqa: E402

RANGES = (30, 90, 365)
#: The benchmark measures, it does not shed load: a request slower than the server's
#: default 30 s timeout (a batch mixing hundreds of accounts on Citus takes about that
#: on this machine) would abort the run with a 503 instead of being measured.
SERVER_ENV = {"GQL_USAGE_REQUEST_TIMEOUT_SECONDS": "600"}
SERVICE = {"Authorization": f"Bearer {SERVICE_TOKEN}"}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


@dataclass(frozen=True)
class Db:
    """A fresh, empty benchmark database: its Tortoise URL, its asyncpg DSN (``None`` on
    SQLite) and, on Citus, the DSN of the database on every node (coordinator first)."""

    kind: str  # postgres | sqlite | citus
    url: str
    dsn: str | None
    nodes: tuple[str, ...] = ()

    @property
    def dialect(self) -> str:
        """The SQL dialect gql_usage speaks to it (Citus is PostgreSQL to the client)."""
        return "sqlite" if self.kind == "sqlite" else "postgres"

    @property
    def distributed(self) -> bool:
        return self.kind == "citus"


def _dsn(url: str) -> str:
    return url.replace("postgres://", "postgresql://", 1)


@contextlib.contextmanager
def database(kind: str, worker_nodes: int = 2) -> Iterator[Db]:
    """A fresh, empty database of ``kind``, removed on exit. On Citus: a coordinator and
    ``worker_nodes`` workers (``support.citus_server``, as the tests start them), with
    ``synchronous_commit=off`` like the single PostgreSQL server, so both runs make the
    same durability trade-off."""
    if kind == "postgres":
        with start_postgres() as base:
            url = create_database(base, "bench")
            yield Db(kind, url, _dsn(url))
    elif kind == "citus":
        with citus_cluster(workers=worker_nodes) as cluster:
            for node in cluster.nodes:
                psql(node.url, "ALTER SYSTEM SET synchronous_commit = off")
                psql(node.url, "SELECT pg_reload_conf()")
            url = cluster.create_database("bench")
            yield Db(kind, url, _dsn(url),
                     tuple(_dsn(cluster.node_url(n, "bench")) for n in cluster.nodes))
    else:
        with tempfile.TemporaryDirectory(prefix="gql_usage_bench_") as tmp:
            yield Db(kind, f"sqlite://{tmp}/bench.sqlite3", None)


async def put_reference_data(client: httpx.AsyncClient, accounts: list[AccountSpec],
                             created_at: datetime) -> None:
    period = {"periodStart": (END.replace(day=1)).isoformat(),
              "periodEnd": (END.replace(day=28)).isoformat()}
    semaphore = asyncio.Semaphore(16)

    async def put(path: str, body: dict[str, Any]) -> None:
        async with semaphore:
            r = await client.put(path, json=body, headers=SERVICE)
            if r.status_code >= 300:
                raise RuntimeError(f"PUT {path}: {r.status_code} {r.text}")

    await asyncio.gather(*(put(f"/v1/accounts/{account.external_id}", {
        "name": account.external_id.title(), "plan": account.plan,
        "timeZone": account.time_zone, "creditsGranted": 10**9, **period})
        for account in accounts))
    await asyncio.gather(*(
        put(f"/v1/accounts/{a.external_id}/users/{u}", {
            "name": u.replace("-", " ").title(), "email": f"{u}@{a.external_id}.example",
            "role": "ADMIN" if i == 0 else "MEMBER"})
        for a in accounts for i, u in enumerate(a.users)))
    await asyncio.gather(*(
        put(f"/v1/accounts/{a.external_id}/api-keys/{k}", {
            "name": f"Key {k}", "prefix": k[:8], "createdBy": a.key_owner[k],
            "createdAt": created_at.isoformat()})
        for a in accounts for k in a.keys))


async def create_accounts(url: str, accounts: list[AccountSpec], created_at: datetime) -> None:
    """The accounts, users and keys of ``accounts`` created with the ORM, in this process:
    the sparse mix's 30,000 through the service API took minutes (its events still go
    through the service API)."""
    from gql_usage.storage.db import close_db, init_db
    from gql_usage.storage.models import Account, ApiKey, Plan, Role, User

    await init_db(url, migrate=False)
    try:
        start = END.replace(day=1)
        await Account.bulk_create([Account(
            external_id=a.external_id, name=a.external_id.title(), plan=Plan(a.plan),
            time_zone=a.time_zone, credits_granted=10**9, period_start=start,
            period_end=END.replace(day=28)) for a in accounts], batch_size=1000)
        ids = dict(await Account.filter(external_id__in=[a.external_id for a in accounts])
                   .values_list("external_id", "id"))
        await User.bulk_create([User(
            account_id=ids[a.external_id], external_id=u, name=u.title(),
            email=f"{u}@{a.external_id}.example", role=Role.ADMIN if i == 0 else Role.MEMBER)
            for a in accounts for i, u in enumerate(a.users)], batch_size=1000)
        users = {(int(account), external): int(user) for account, external, user in
                 await User.filter(account_id__in=list(ids.values()))
                 .values_list("account_id", "external_id", "id")}
        await ApiKey.bulk_create([ApiKey(
            account_id=ids[a.external_id], external_id=k, name=f"Key {k}", prefix=k[:8],
            created_by_id=users[(ids[a.external_id], a.key_owner[k])], created_at=created_at)
            for a in accounts for k in a.keys], batch_size=1000)
    finally:
        await close_db()


@dataclass
class IngestFigures:
    events_posted: int
    accepted: int
    duplicates: int
    seconds: float
    first_ms: list[float]
    resend_ms: list[float]

    @property
    def per_s(self) -> float:
        return self.events_posted / self.seconds


async def post_batch(client: httpx.AsyncClient, body: bytes) -> httpx.Response:
    """One batch (a JSON array body) sent to the ingestion API."""
    return await client.post("/v1/usage-events", content=body,
                             headers={**SERVICE, "Content-Type": "application/json"})


def stored(r: httpx.Response) -> dict[str, Any]:
    """The answer to a batch, which must have rejected nothing (else the run stops)."""
    result: dict[str, Any] = r.json()
    if r.status_code != 200 or result["rejected"]:
        raise RuntimeError(f"ingestion failed: {r.status_code} {str(result)[:500]}")
    return result


async def ingest(client: httpx.AsyncClient, bodies: list[bytes], clients: int) -> IngestFigures:
    """Every body once, every 50th twice (a producer retrying), from ``clients`` senders."""
    sends: list[tuple[bytes, bool]] = []  # (body, resent)
    for i, body in enumerate(bodies):
        sends.append((body, False))
        if i % 50 == 49:
            sends.append((bodies[i - 25], True))
    queue: asyncio.Queue[tuple[bytes, bool]] = asyncio.Queue()
    for send in sends:
        queue.put_nowait(send)
    totals = [0, 0, 0]
    first_ms: list[float] = []
    resend_ms: list[float] = []

    async def sender() -> None:
        while not queue.empty():
            body, resent = queue.get_nowait()
            sent = time.perf_counter()
            r = await post_batch(client, body)
            (resend_ms if resent else first_ms).append((time.perf_counter() - sent) * 1000)
            result = stored(r)
            totals[0] += result["accepted"] + result["duplicates"]
            totals[1] += result["accepted"]
            totals[2] += result["duplicates"]

    started = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(clients)))
    return IngestFigures(totals[0], totals[1], totals[2], time.perf_counter() - started,
                         first_ms, resend_ms)


async def resend(client: httpx.AsyncClient, bodies: list[bytes], count: int) -> list[float]:
    """Latencies (ms) of ``count`` stored batches sent again, one at a time, spread over
    the whole load (a producer retrying after a lost acknowledgement): every event must
    come back as a duplicate."""
    latencies = []
    for i in range(count):
        body = bodies[(i * 7919) % len(bodies)]
        sent = time.perf_counter()
        r = await post_batch(client, body)
        latencies.append((time.perf_counter() - sent) * 1000)
        result = r.json()
        if r.status_code != 200 or result["accepted"] or result["rejected"]:
            raise RuntimeError(f"resend not all duplicates: {r.status_code} {str(result)[:500]}")
    return latencies


async def wait_until_folded(url: str, dsn: str | None) -> float:
    """Seconds until the server's compactor has folded every pending event into the cube
    (queries are exact either way; the timings below are of the steady state)."""
    started = time.perf_counter()
    while await pending.pending_events(url, dsn):  # noqa: ASYNC110 - polling another process
        await asyncio.sleep(0.2)
    return time.perf_counter() - started


@dataclass
class FoldFigures:
    """One dataset sent at full speed, then folded: ``ingest`` the sending, ``drain_s``
    from the last batch's answer until nothing is pending, ``timeline`` the pending count
    every second throughout."""

    ingest: IngestFigures
    drain_s: float
    timeline: pending.Timeline

    @property
    def folded_per_s(self) -> float:
        """Events per second from the first batch until all are folded into the cube."""
        return self.ingest.accepted / (self.ingest.seconds + self.drain_s)


async def ingest_and_fold(client: httpx.AsyncClient, bodies: list[bytes], clients: int,
                          url: str, dsn: str | None) -> FoldFigures:
    async with pending.sampling(url, dsn) as timeline:
        figures = await ingest(client, bodies, clients)
        drain_s = await wait_until_folded(url, dsn)
    return FoldFigures(figures, drain_s, timeline)


async def settle(url: str, dsn: str | None, nodes: tuple[str, ...] = ()) -> None:
    """``VACUUM ANALYZE`` before timing, as after any bulk load: the compactor's own
    vacuum of the cube and autovacuum of 10 million new events would otherwise run during
    the timed queries, ours and the baselines alike (a first 10M run measured the 30-day
    page at 389 ms during them, 32 ms after). On Citus on every node (``nodes``), where
    the shards are: a database-wide ``VACUUM`` on the coordinator stays local."""
    if dsn:
        for target in nodes or (dsn,):
            conn = await asyncpg.connect(target)
            try:
                await conn.execute("VACUUM ANALYZE")
            finally:
                await conn.close()
    else:
        import sqlite3

        with sqlite3.connect(url.removeprefix("sqlite://")) as c:
            c.execute("ANALYZE")


async def copy_floor(dsn: str, distributed: bool = False) -> float:
    """Rows per second of a binary ``COPY`` of the stored events into a bare table (on
    Citus a bare table distributed like ``usage_event``: the cluster's own ``COPY``)."""
    conn = await asyncpg.connect(dsn)
    try:
        buffer = io.BytesIO()
        await conn.copy_from_table("usage_event", output=buffer, format="binary")
        rows = int(await conn.fetchval("SELECT COUNT(*) FROM usage_event"))
        await conn.execute("CREATE TABLE copy_floor (LIKE usage_event)")
        if distributed:
            await conn.execute("SELECT create_distributed_table('copy_floor', 'account_id',"
                               " colocate_with => 'usage_event')")
        await conn.execute("CHECKPOINT")
        buffer.seek(0)
        started = time.perf_counter()
        await conn.copy_to_table("copy_floor", source=buffer, format="binary")
        elapsed = time.perf_counter() - started
        await conn.execute("DROP TABLE copy_floor")
        return rows / elapsed
    finally:
        await conn.close()


@dataclass
class RangeFigures:
    days: int
    graphql_p50_ms: float
    graphql_p99_ms: float
    raw_sql_ms: float | None
    floor_sql_ms: float | None

    @property
    def speedup_vs_raw(self) -> float | None:
        return self.raw_sql_ms / self.graphql_p50_ms if self.raw_sql_ms else None

    @property
    def overhead_vs_floor(self) -> float | None:
        return self.graphql_p50_ms / self.floor_sql_ms if self.floor_sql_ms else None


async def post_dashboard(client: httpx.AsyncClient, token: str, days: int,
                         query: str = dashboard.DASHBOARD, shift: int = 0) -> dict[str, Any]:
    """The page over the last ``days`` days, ended ``shift`` steps earlier
    (``dashboard.window``)."""
    r = await client.post("/graphql", json={"query": query,
                                            "variables": dashboard.variables(days, shift)},
                          headers={"Authorization": f"Bearer {token}"})
    return dict(r.json())


async def measure_v2(client: httpx.AsyncClient, token: str, days: int, runs: int
                     ) -> tuple[float, float]:
    """(p50 ms of ``DASHBOARD``, p50 ms of ``DASHBOARD_V2``), alternating request by
    request so both see the same machine; the v2 answer's shared part is checked equal."""
    v1 = await post_dashboard(client, token, days)
    v2 = await post_dashboard(client, token, days, dashboard.DASHBOARD_V2)
    if v2.get("errors"):
        raise SystemExit(f"the v2 dashboard failed: {v2['errors']}")
    if dashboard.graphql_answer(v2).differences(dashboard.graphql_answer(v1)):
        raise SystemExit("the v2 dashboard's shared fields differ from the v1 dashboard's")
    plain: list[float] = []
    full: list[float] = []
    for i in range(1, runs + 1):  # each pair on a range of its own
        plain += await timed_ms(
            lambda i=i: post_dashboard(client, token, days, shift=i), 1)
        full += await timed_ms(lambda i=i: post_dashboard(
            client, token, days, dashboard.DASHBOARD_V2, i), 1)
    return statistics.median(plain), statistics.median(full)


async def timed_ms(coro_factory: Any, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await coro_factory()
        times.append((time.perf_counter() - started) * 1000)
    return times


async def measure_range(client: httpx.AsyncClient, token: str, days: int, runs: int,
                        db: str, url: str, dsn: str | None, account_id: int) -> RangeFigures:
    """Verify the answer (on the whole local days and on a range ended at another minute
    and second), then time our request and the floor statement side by side
    (alternating, so that anything else the machine does weighs on both alike), each
    run on a range of its own (``dashboard.window``'s shift), then the raw SQL."""
    path = url.removeprefix("sqlite://")
    conn = await asyncpg.connect(dsn) if dsn else None
    # The floor statement runs with the session settings of the server's pool (JIT off);
    # the raw SQL, a user's hand-written query, on a connection as it comes.
    floor_conn = await asyncpg.connect(dsn, server_settings=POSTGRES_SESSION) if dsn else None
    try:
        for shift in (0, runs + 1):
            await _verify(client, token, days, shift, conn, path)
        floors = [dashboard.floor_sql(account_id, days, db, shift)
                  for shift in range(1, runs + 1)]
        raw_runs = 3 if days >= 365 else 5
        if conn is not None and floor_conn is not None:
            pg, floor_pg = conn, floor_conn

            def floor(i: int) -> Any:
                return floor_pg.fetch(floors[i][0], *floors[i][1])

            def naive() -> Any:
                return dashboard.raw_answer_postgres(pg, days)
        else:
            def floor(i: int) -> Any:
                return asyncio.to_thread(_sqlite_fetch, path, *floors[i])

            def naive() -> Any:
                return asyncio.to_thread(dashboard.raw_answer_sqlite, path, days)
        for _ in range(3):  # warm-up (ranges of their own, not timed)
            await post_dashboard(client, token, days, shift=runs + 2)
            await floor(0)
        graphql: list[float] = []
        floor_ms: list[float] = []
        for i in range(runs):
            graphql += await timed_ms(lambda i=i: post_dashboard(
                client, token, days, shift=i + 1), 1)
            floor_ms += await timed_ms(lambda i=i: floor(i), 1)
        await naive()  # warm-up
        raw_ms = statistics.median(await timed_ms(naive, raw_runs))
    finally:
        for c in (conn, floor_conn):
            if c is not None:
                await c.close()
    return RangeFigures(days, statistics.median(graphql), percentile(graphql, 99),
                        raw_ms, statistics.median(floor_ms))


async def _verify(client: httpx.AsyncClient, token: str, days: int, shift: int,
                  conn: asyncpg.Connection | None, path: str) -> None:
    """The page's numbers equal hand-written SQL over the raw events, or the run stops."""
    ours = dashboard.graphql_answer(await post_dashboard(client, token, days, shift=shift))
    if conn is not None:
        raw = await dashboard.raw_answer_postgres(conn, days, shift)
    else:
        raw = dashboard.raw_answer_sqlite(path, days, shift)
        raw.days = ours.days
        series_sum = (sum(c for c, _ in ours.days.values()),
                      sum(cr for _, cr in ours.days.values()))
        if series_sum != raw.totals:
            raise SystemExit(f"MISMATCH {days} days: series sums to {series_sum}, "
                             f"raw totals {raw.totals}")
    problems = ours.differences(raw)
    if problems:
        raise SystemExit(f"MISMATCH on the {days}-day dashboard (shift {shift}), run "
                         "aborted:\n" + "\n".join(problems))


def _sqlite_fetch(path: str, text: str, params: list[Any]) -> list[Any]:
    import sqlite3

    with sqlite3.connect(path) as conn:
        return conn.execute(text, params).fetchall()


async def statements_per_request(url: str, token: str, days: int
                                 ) -> tuple[int, bool, int]:
    """Statements of one dashboard request, counted in-process from Tortoise's log,
    whether the analytics statement among them is exactly ``floor_sql``'s, and the
    statements of one ``DASHBOARD_V2`` request."""
    from gql_usage.app import create_app
    from gql_usage.settings import Settings
    from gql_usage.storage.db import StatementCounter, close_db, connection, init_db

    await init_db(url)
    try:
        app = create_app(Settings(database_url=url, jwt_secret=SECRET,
                                  service_token=SERVICE_TOKEN, rate_limit_points=10**12),
                         manage_db=False)
        _, rows = await connection().execute_query(
            "SELECT id FROM account WHERE external_id = 'bigco'")
        account_id = int(rows[0][0])
        text, _ = dashboard.floor_sql(account_id, days, "postgres" if url.startswith(
            "postgres") else "sqlite")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://bench") as client:
            await post_dashboard(client, token, days)
            with StatementCounter() as counter:
                body = await post_dashboard(client, token, days)
            await post_dashboard(client, token, days, dashboard.DASHBOARD_V2)
            with StatementCounter() as counter_v2:
                body_v2 = await post_dashboard(client, token, days, dashboard.DASHBOARD_V2)
        dashboard.graphql_answer(body)
        dashboard.graphql_answer(body_v2)
        return (counter.count, any(text in s for s in counter.statements),
                counter_v2.count)
    finally:
        await close_db()


async def load(client: httpx.AsyncClient, token: str, clients: int, requests: int
               ) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) of the 365-day dashboard from ``clients`` at once,
    every request on a range of its own."""
    latencies: list[float] = []
    remaining = [requests]

    async def worker() -> None:
        while remaining[0] > 0:
            shift = remaining[0]
            remaining[0] -= 1
            started = time.perf_counter()
            body = await post_dashboard(client, token, 365, shift=shift)
            latencies.append((time.perf_counter() - started) * 1000)
            if body.get("errors"):
                raise RuntimeError(f"errors under load: {body['errors']}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, percentile(latencies, 50), percentile(latencies, 99)


@dataclass(frozen=True)
class MixedFigures:
    """The mixed run: the 365-day page from many clients while ingestion runs at a share
    of its top rate, on a server of ``workers`` processes."""

    workers: int
    clients: int
    requests: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    ingest_target_per_s: float
    ingest_accepted: int
    ingest_per_s: float
    #: Before the mixed run, on the same server: new events at full speed, then folded.
    top: FoldFigures


async def paced_ingest(client: httpx.AsyncClient, bodies: Iterator[bytes], rate: float,
                       senders: int, stop: asyncio.Event) -> tuple[int, float]:
    """Sends ``bodies`` at ``rate`` events/s (``senders`` at once, each batch when its time
    comes) until ``stop`` is set or they run out; (events accepted, seconds)."""
    started = time.perf_counter()
    scheduled = [0]  # events whose sending time has been given out
    accepted = [0]

    async def sender() -> None:
        while not stop.is_set():
            body = next(bodies, None)
            if body is None:
                return
            due = started + scheduled[0] / rate
            scheduled[0] += body.count(b'"id":')
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, due - time.perf_counter()))
            if stop.is_set():
                return
            accepted[0] += stored(await post_batch(client, body))["accepted"]

    await asyncio.gather(*(sender() for _ in range(senders)))
    return accepted[0], time.perf_counter() - started


#: Events the mixed run's server ingests at full speed before the mixed run (its top
#: rate on ``--load-workers`` workers, and how fast that is folded).
TOP_RATE_EVENTS = 1_000_000


async def mixed_load(url: str, dsn: str | None, args: argparse.Namespace, token: str
                     ) -> MixedFigures:
    """The realistic case: ``serve --workers args.load_workers`` on the same database.

    First its top ingestion rate: up to ``TOP_RATE_EVENTS`` new events
    (``Dataset(id_prefix="mixed-")``, at most half of its large account) sent at full
    speed from ``args.clients`` senders per worker, then folded (the drain timed). Then
    ``args.load_clients`` clients send the 365-day page (every request on a range of its
    own) while the dataset's next events arrive at ``args.mixed_ingest_share`` of that
    top rate."""
    data = Dataset(events=args.events, seed=args.seed + 1000, id_prefix="mixed-")
    bodies = iter(data.batches())
    # At most half the large account's batches: the rest are the mixed run's to pace.
    first = list(itertools.islice(bodies, max(1, min(args.events // 2, TOP_RATE_EVENTS)
                                              // data.batch_size)))
    senders = args.clients * args.load_workers
    server = Server(url, workers=args.load_workers, env=SERVER_ENV)
    async with server.running(), http(server.url, args.load_clients + senders) as client:
        await post_dashboard(client, token, 365)  # every worker's first request out of the way
        top = await ingest_and_fold(client, first, senders, url, dsn)
        del first
        target = top.ingest.accepted / top.ingest.seconds * args.mixed_ingest_share
        stop = asyncio.Event()
        ingesting = asyncio.create_task(paced_ingest(client, bodies, target, senders, stop))
        try:
            rps, p50, p99 = await load(client, token, args.load_clients, args.load_requests)
        finally:
            stop.set()
        accepted, seconds = await ingesting
    return MixedFigures(args.load_workers, args.load_clients, args.load_requests, rps, p50,
                        p99, target, accepted, accepted / seconds if seconds else 0.0, top)


@contextlib.asynccontextmanager
async def http(base_url: str, connections: int) -> AsyncIterator[httpx.AsyncClient]:
    # Idle connections are dropped after 2 s, before the server's 5 s keep-alive timeout
    # (uvicorn's): at httpx's default of 5 s both ends closed and reused the same idle
    # connection at once, and a PUT failed with ReadError on the loaded machine.
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections,
                          keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=base_url, timeout=600, limits=limits) as client:
        yield client


def databases(db: str) -> list[str]:
    """The databases one invocation runs on: ``citus`` is compared with single-node
    PostgreSQL in the same run (PostgreSQL first)."""
    return ["postgres", "citus"] if db == "citus" else [db]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every database of ``databases(args.db)`` in turn, on the same dataset; the first
    run's figures at the top level of the result, the others' under their name."""
    if args.db == "citus":
        missing = citus_missing()
        if missing:
            raise SystemExit(f"--db citus: {missing}")
    result: dict[str, Any] = {}
    for kind in databases(args.db):
        figures = await run_one(args, kind)
        if result:
            result[kind] = figures
        else:
            result = figures
    return result


async def run_one(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    """The whole workload on a fresh database of ``kind``; its figures."""
    data = Dataset(events=args.events, seed=args.seed)
    sparse = SparseMix(accounts=args.sparse_accounts, per_account=args.sparse_events,
                       seed=args.seed)
    log = print if not args.quiet else (lambda *a, **k: None)
    started = time.perf_counter()
    # Generated again for each database rather than kept: 10M events' bodies are GBs.
    bodies = list(data.batches())
    log(f"{kind}: generated {data.total_events:,} events ({len(data.accounts):,} accounts) "
        f"in {len(bodies):,} batches in {time.perf_counter() - started:.1f} s")
    with database(kind, args.worker_nodes) as db:
        url, dsn = db.url, db.dsn
        await run_migrations(url)
        server = Server(url, workers=args.workers, env=SERVER_ENV)
        async with server.running(), http(server.url, max(args.clients, args.load_clients)
                                          ) as client:
            await put_reference_data(client, data.accounts, data.start)
            folding = await ingest_and_fold(client, bodies, args.clients, url, dsn)
            figures = folding.ingest
            resend_ms = figures.resend_ms + await resend(client, bodies, args.resends)
            del bodies
            if figures.accepted != data.total_events:
                raise SystemExit(f"accepted {figures.accepted:,} events, expected "
                                 f"{data.total_events:,}")
            log(f"{kind}: ingested {figures.events_posted:,} events ({figures.duplicates:,} "
                f"duplicates) in {figures.seconds:.1f} s: {figures.per_s:,.0f} events/s")
            drain_s = folding.drain_s
            log(f"{kind}: compaction finished {drain_s:.1f} s after the last batch; pending "
                f"events every 5 s from the first batch:\n{folding.timeline.text()}")
            sizes = await pending.table_sizes(url, dsn, db.distributed)
            sparse_folding = None
            if sparse.total_events:
                await create_accounts(url, sparse.specs, data.start)
                sparse_folding = await ingest_and_fold(client, list(sparse.batches()),
                                                       args.clients, url, dsn)
                if sparse_folding.ingest.accepted != sparse.total_events:
                    raise SystemExit(f"accepted {sparse_folding.ingest.accepted:,} sparse "
                                     f"events, expected {sparse.total_events:,}")
                log(f"{kind}: sparse mix: {sparse.total_events:,} events of {sparse.accounts:,} "
                    f"accounts ingested in {sparse_folding.ingest.seconds:.1f} s, folded "
                    f"{sparse_folding.drain_s:.1f} s after the last batch; pending every 5 s:"
                    f"\n{sparse_folding.timeline.text()}")
            await settle(url, dsn, db.nodes)
            copy_rate = await copy_floor(dsn, db.distributed) if dsn else None
            token = issue_token(SECRET, data.large.users[0], data.large.external_id, 86_400)
            account_id = await _account_id(url, dsn)
            ranges = []
            for days in RANGES:
                r = await measure_range(client, token, days, args.runs, db.dialect, url,
                                        dsn, account_id)
                log(f"{kind}: {days}-day dashboard: verified; p50 {r.graphql_p50_ms:.1f} ms")
                ranges.append(r)
            v1_p50, v2_p50 = await measure_v2(client, token, RANGES[-1], args.runs)
            log(f"{RANGES[-1]}-day dashboard, v1 and v2 alternating: p50 {v1_p50:.1f} ms "
                f"and {v2_p50:.1f} ms")
            rps, load_p50, load_p99 = await load(client, token, args.load_clients,
                                                 args.load_requests)
        statements, floor_matches, statements_v2 = await statements_per_request(
            url, token, 365)
        if not floor_matches:
            raise SystemExit("the measured floor SQL is not the statement the server sends")
        mixed = await mixed_load(url, dsn, args, token)
        log(f"{kind}: {mixed.workers} workers ingested {mixed.top.ingest.accepted:,} new "
            f"events at {mixed.top.ingest.per_s:,.0f} events/s, folded "
            f"{mixed.top.drain_s:.1f} s after the last batch")
        log(f"{kind}: mixed run, {mixed.workers} workers: {mixed.requests_per_s:.1f} "
            f"requests/s, p99 {mixed.p99_ms:.0f} ms, while {mixed.ingest_per_s:,.0f} "
            f"events/s were ingested (target {mixed.ingest_target_per_s:,.0f})")
    main_range = ranges[-1]
    result: dict[str, Any] = {
        "db": kind,
        **({"worker_nodes": args.worker_nodes} if db.distributed else {}),
        "events": data.total_events,
        "large_account_events": data.events,
        "accounts": len(data.accounts),
        "ingest_events_per_s": round(figures.per_s),
        "ingest_accepted_per_s": round(figures.accepted / figures.seconds),
        "compaction_drain_s": round(drain_s, 1),
        "ingest_s": round(figures.seconds, 1),
        "drain_s": round(drain_s, 1),
        "ingest_folded_events_per_s": round(folding.folded_per_s),
        "sparse_accounts": sparse.accounts,
        "sparse_events": sparse.total_events,
        "sparse_ingest_s": _round(sparse_folding.ingest.seconds if sparse_folding else None, 1),
        "sparse_drain_s": _round(sparse_folding.drain_s if sparse_folding else None, 1),
        "sparse_folded_events_per_s": (round(sparse_folding.folded_per_s) if sparse_folding
                                       else None),
        "events_rows": sizes.events_rows,
        "events_mb": round(sizes.events_mb, 1),
        "cube_rows": sizes.cube_rows,
        "cube_mb": round(sizes.cube_mb, 1),
        "cube_vs_events": round(sizes.cube_mb / sizes.events_mb, 3) if sizes.events_mb else None,
        "copy_events_per_s": round(copy_rate) if copy_rate else None,
        "ingest_vs_copy": round(figures.per_s / copy_rate, 3) if copy_rate else None,
        "ingest_batch_p50_ms": round(percentile(figures.first_ms, 50), 1),
        "ingest_batch_p99_ms": round(percentile(figures.first_ms, 99), 1),
        "resends": len(resend_ms),
        "resend_p50_ms": round(percentile(resend_ms, 50), 1),
        "resend_p99_ms": round(percentile(resend_ms, 99), 1),
        "graphql_p50_ms": round(main_range.graphql_p50_ms, 2),
        "graphql_p99_ms": round(main_range.graphql_p99_ms, 2),
        "raw_sql_ms": _round(main_range.raw_sql_ms),
        "floor_sql_ms": _round(main_range.floor_sql_ms),
        "speedup_vs_raw": _round(main_range.speedup_vs_raw, 1),
        "overhead_vs_floor": _round(main_range.overhead_vs_floor, 2),
        "statements_per_request": statements,
        "dashboard_v1_p50_ms": round(v1_p50, 2),
        "dashboard_v2_p50_ms": round(v2_p50, 2),
        "statements_per_request_v2": statements_v2,
        # The page alone from load_clients clients on the one-worker server ...
        "requests_per_s": round(rps, 1),
        "requests_p50_ms": round(load_p50, 1),
        "requests_p99_ms": round(load_p99, 1),
        # ... and the mixed run: the same on --load-workers workers while ingesting.
        "load_workers": mixed.workers,
        "load_clients": mixed.clients,
        "load_requests": mixed.requests,
        "load_requests_per_s": round(mixed.requests_per_s, 1),
        "load_p50_ms": round(mixed.p50_ms, 1),
        "load_p99_ms": round(mixed.p99_ms, 1),
        "load_ingest_top_events": mixed.top.ingest.accepted,
        "load_ingest_top_events_per_s": round(mixed.top.ingest.per_s),
        "load_ingest_top_accepted_per_s": round(mixed.top.ingest.accepted
                                                / mixed.top.ingest.seconds),
        "load_ingest_top_drain_s": round(mixed.top.drain_s, 1),
        "load_ingest_top_folded_events_per_s": round(mixed.top.folded_per_s),
        "load_ingest_target_per_s": round(mixed.ingest_target_per_s),
        "load_ingest_events_per_s": round(mixed.ingest_per_s),
        "server_peak_rss_mib": round(server.peak_rss_kib / 1024, 1),
        "ranges": {str(r.days): {
            "graphql_p50_ms": round(r.graphql_p50_ms, 2),
            "graphql_p99_ms": round(r.graphql_p99_ms, 2),
            "raw_sql_ms": _round(r.raw_sql_ms), "floor_sql_ms": _round(r.floor_sql_ms),
            "speedup_vs_raw": _round(r.speedup_vs_raw, 1),
            "overhead_vs_floor": _round(r.overhead_vs_floor, 2)} for r in ranges},
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                   f"{platform.python_version()}",
    }
    return result


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


async def _account_id(url: str, dsn: str | None) -> int:
    return await scalar(url, dsn, "SELECT id FROM account WHERE external_id = 'bigco'")


def print_table(result: dict[str, Any]) -> None:
    print(f"\n{result['db']}: {result['events']:,} events, {result['accounts']:,} accounts "
          f"({result['machine']})")
    copy = result["copy_events_per_s"]
    print(f"  ingest   {result['ingest_events_per_s']:>10,} events/s   COPY floor "
          + (f"{copy:,} events/s   ratio {result['ingest_vs_copy']}" if copy else "n/a"))
    print(f"  folded: ingest {result['ingest_s']} s + drain {result['drain_s']} s -> "
          f"{result['ingest_folded_events_per_s']:,} events/s; sparse mix "
          f"({result['sparse_accounts']:,} accounts, {result['sparse_events']:,} events): "
          f"ingest {result['sparse_ingest_s']} s + drain {result['sparse_drain_s']} s -> "
          f"{result['sparse_folded_events_per_s']} events/s")
    print(f"  size: events {result['events_rows']:,} rows, {result['events_mb']} MB; cube "
          f"{result['cube_rows']:,} rows, {result['cube_mb']} MB "
          f"(cube/events {result['cube_vs_events']})")
    print(f"  batch of 1,000: first delivery p50 {result['ingest_batch_p50_ms']} ms, p99 "
          f"{result['ingest_batch_p99_ms']} ms; resend ({result['resends']}) p50 "
          f"{result['resend_p50_ms']} ms, p99 {result['resend_p99_ms']} ms")
    print(f"  {'range':>6} {'p50 ms':>9} {'p99 ms':>9} {'raw ms':>10} {'floor ms':>9} "
          f"{'vs raw':>8} {'vs floor':>9}")
    for days, r in result["ranges"].items():
        print(f"  {days + 'd':>6} {r['graphql_p50_ms']:>9} {r['graphql_p99_ms']:>9} "
              f"{r['raw_sql_ms']!s:>10} {r['floor_sql_ms']!s:>9} {r['speedup_vs_raw']!s:>8} "
              f"{r['overhead_vs_floor']!s:>9}")
    print(f"  {list(result['ranges'])[-1]}d dashboard alternating with version 2's "
          f"(+ previous, spikes): p50 {result['dashboard_v1_p50_ms']} ms vs "
          f"{result['dashboard_v2_p50_ms']} ms; statements "
          f"{result['statements_per_request']} vs {result['statements_per_request_v2']}")
    print(f"  statements/request {result['statements_per_request']}; "
          f"{result['load_clients']} clients, 1 worker: {result['requests_per_s']} req/s, "
          f"p99 {result['requests_p99_ms']} ms; server peak RSS "
          f"{result['server_peak_rss_mib']} MiB")
    print(f"  ingest on {result['load_workers']} workers: "
          f"{result['load_ingest_top_events_per_s']:,} events/s "
          f"({result['load_ingest_top_events']:,} new events), drain "
          f"{result['load_ingest_top_drain_s']} s -> "
          f"{result['load_ingest_top_folded_events_per_s']:,} events/s folded")
    print(f"  mixed run, {result['load_workers']} workers: {result['load_clients']} clients "
          f"{result['load_requests_per_s']} req/s, p50 {result['load_p50_ms']} ms, p99 "
          f"{result['load_p99_ms']} ms, while ingesting {result['load_ingest_events_per_s']:,}"
          f" events/s (target {result['load_ingest_target_per_s']:,})")


#: The side-by-side table: (label, figure of one run).
COMPARED: tuple[tuple[str, Any], ...] = (
    ("ingest events/s (4 clients)", lambda r: f"{r['ingest_events_per_s']:,}"),
    ("COPY floor events/s", lambda r: f"{r['copy_events_per_s']:,}"),
    ("ingest / COPY", lambda r: r["ingest_vs_copy"]),
    ("batch of 1,000: p50 / p99 ms",
     lambda r: f"{r['ingest_batch_p50_ms']} / {r['ingest_batch_p99_ms']}"),
    ("resend: p50 / p99 ms", lambda r: f"{r['resend_p50_ms']} / {r['resend_p99_ms']}"),
    ("ingest s + drain s", lambda r: f"{r['ingest_s']} + {r['drain_s']}"),
    ("folded events/s", lambda r: f"{r['ingest_folded_events_per_s']:,}"),
    ("sparse mix: ingest s + drain s",
     lambda r: f"{r['sparse_ingest_s']} + {r['sparse_drain_s']}"),
    ("sparse mix folded events/s", lambda r: r["sparse_folded_events_per_s"]),
    ("events MB / cube MB", lambda r: f"{r['events_mb']} / {r['cube_mb']}"),
    *((f"{d}d page p50 / p99 ms", lambda r, d=d: f"{r['ranges'][d]['graphql_p50_ms']} / "
       f"{r['ranges'][d]['graphql_p99_ms']}") for d in map(str, RANGES)),
    *((f"{d}d floor SQL ms (ratio)", lambda r, d=d: f"{r['ranges'][d]['floor_sql_ms']} "
       f"({r['ranges'][d]['overhead_vs_floor']})") for d in map(str, RANGES)),
    *((f"{d}d raw SQL ms", lambda r, d=d: r["ranges"][d]["raw_sql_ms"]) for d in map(str, RANGES)),
    (f"{RANGES[-1]}d v1 / v2 p50 ms",
     lambda r: f"{r['dashboard_v1_p50_ms']} / {r['dashboard_v2_p50_ms']}"),
    ("statements/request v1 / v2",
     lambda r: f"{r['statements_per_request']} / {r['statements_per_request_v2']}"),
    ("load, 1 worker: req/s, p99 ms", lambda r: f"{r['requests_per_s']}, "
     f"{r['requests_p99_ms']}"),
    ("ingest on load workers: events/s, folded",
     lambda r: f"{r['load_ingest_top_events_per_s']:,}, "
     f"{r['load_ingest_top_folded_events_per_s']:,}"),
    ("mixed run: workers, req/s, p99 ms",
     lambda r: f"{r['load_workers']}, {r['load_requests_per_s']}, {r['load_p99_ms']}"),
    ("mixed run: ingested / target events/s",
     lambda r: f"{r['load_ingest_events_per_s']:,} / {r['load_ingest_target_per_s']:,}"),
    ("server peak RSS MiB", lambda r: r["server_peak_rss_mib"]),
)


def print_comparison(result: dict[str, Any]) -> None:
    """One row per figure, one column per database of the run."""
    runs = [result] + [result[k] for k in ("citus",) if k in result]
    names = [r["db"] + (f" ({r['worker_nodes']} workers)" if "worker_nodes" in r else "")
             for r in runs]
    print(f"\n{result['events']:,} events, {result['accounts']:,} accounts "
          f"({result['machine']}); each database in turn, same run")
    width = max(len(label) for label, _ in COMPARED)
    print(f"  {'':<{width}}" + "".join(f" {n:>22}" for n in names))
    for label, figure in COMPARED:
        print(f"  {label:<{width}}" + "".join(f" {figure(r)!s:>22}" for r in runs))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000,
                        help="events of the large account (small accounts add 5%%)")
    parser.add_argument("--db", choices=("postgres", "sqlite", "citus"), default="postgres",
                        help="citus: the same workload on single-node PostgreSQL and then on "
                             "a local Citus cluster, side by side")
    parser.add_argument("--worker-nodes", type=int, default=2,
                        help="Citus workers besides the coordinator (--db citus)")
    parser.add_argument("--runs", type=int, default=30, help="timed runs per range")
    parser.add_argument("--clients", type=int, default=4, help="concurrent ingest clients")
    parser.add_argument("--resends", type=int, default=50,
                        help="stored batches sent again after the load (resend latency)")
    parser.add_argument("--load-clients", type=int, default=32)
    parser.add_argument("--load-requests", type=int, default=320)
    parser.add_argument("--workers", type=int, default=1, help="server worker processes")
    parser.add_argument("--load-workers", type=int, default=2,
                        help="server worker processes of the mixed run")
    parser.add_argument("--mixed-ingest-share", type=float, default=0.5,
                        help="the mixed run's ingestion rate, as a share of the top rate")
    parser.add_argument("--sparse-accounts", type=int, default=10_000,
                        help="accounts of the sparse mix, sent after the dataset is folded "
                             "(0: none)")
    parser.add_argument("--sparse-events", type=int, default=100,
                        help="events per account of the sparse mix")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quiet", action="store_true", help="print only the JSON line")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = asyncio.run(run(args))
    if not args.quiet:
        if "citus" in result:
            print_comparison(result)
        else:
            print_table(result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

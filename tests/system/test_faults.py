"""Faults: database outages and restarts, killed and terminated server processes, and the
age of events.

Whatever happens, the stored raw events are exactly the acknowledged ones (no loss, no
duplicate, nothing half-stored), every report equals an aggregation of those raw events,
and the service recovers from a database outage without a restart. Clients here do what
the service API asks of producers: retry every batch that was not acknowledged (a 503,
or a connection error) until it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import h11
import httpx
import pytest
from support.citus_server import citus_cluster, citus_missing
from support.config import make_settings
from support.events import KEYS, USERS, random_events
from support.helpers import SERVICE, event, gid, gql, make_account, token
from support.pg_server import CrashablePostgres, crashable_postgres, create_database
from support.serve import RETRY_AFTER, Server, served
from tortoise import Tortoise
from tortoise.backends.base.executor import EXECUTOR_CACHE

from gql_usage.app import create_app
from gql_usage.faults import SERVICE_UNAVAILABLE, UNAVAILABLE_MESSAGE, is_unavailable
from gql_usage.settings import MissingSetting, load_settings
from gql_usage.storage.db import connection, run_migrations, tortoise_config

pytestmark = pytest.mark.citus

#: Every generated event lies in [WINDOW_START, WINDOW_START + 3 days); reports cover
#: whole hours around it, so they read every event through the rollups.
WINDOW_START = datetime(2025, 3, 10, tzinfo=UTC)
REPORT = {"from": "2025-03-09T00:00:00Z", "to": "2025-03-14T00:00:00Z"}

REPORT_QUERY = """query Report($f: UsageFilter!) { viewer { name } account { usage(filter: $f) {
  calls credits
  day: series(granularity: DAY) { start calls credits }
  hour: series(granularity: HOUR) { start calls credits }
  endpoint: breakdown(by: ENDPOINT) { key calls credits }
  apiKey: breakdown(by: API_KEY) { key calls credits }
  source: breakdown(by: SOURCE) { key calls credits }
  user: breakdown(by: USER) { key calls credits } } } }"""


# --- workload -------------------------------------------------------------------------


def make_events(rng: random.Random, n: int, prefix: str = "ev") -> list[dict[str, Any]]:
    return random_events(rng, n, start=WINDOW_START, days=3, credits=25, prefix=prefix)


def plan_batches(rng: random.Random, events: list[dict[str, Any]], clients: int,
                 batch_size: int, overlap: int) -> list[list[list[dict[str, Any]]]]:
    """Per client, its batches: its own share of the events plus ``overlap`` events drawn
    from everybody's (deliberate duplicates, within and across batches and clients)."""
    shares = [events[c::clients] for c in range(clients)]
    return [[share[i:i + batch_size] + rng.sample(events, overlap)
             for i in range(0, len(share), batch_size)] for share in shares]


@dataclass
class Run:
    """What the clients saw."""

    acked: dict[str, dict[str, Any]] = field(default_factory=dict)
    acked_batches: int = 0
    unavailable: int = 0          # 503 answers, each with Retry-After
    connection_errors: int = 0    # requests whose connection broke (server killed)
    acked_after_fault: int = 0
    fault_done: bool = False
    #: Set once ``milestone`` batches are acknowledged (when to inject the fault).
    milestone: int = 1
    reached: asyncio.Event = field(default_factory=asyncio.Event)


async def deliver(client: httpx.AsyncClient, batch: list[dict[str, Any]], run: Run) -> None:
    """Send ``batch`` until it is acknowledged (a 200 that accounts for every event)."""
    while True:
        try:
            response = await client.post("/v1/usage-events", json=batch, headers=SERVICE,
                                         timeout=60)
        except httpx.TransportError:
            run.connection_errors += 1
            await asyncio.sleep(0.05)
            continue
        if response.status_code == 503:
            assert response.headers.get("retry-after") == str(RETRY_AFTER), response.headers
            assert response.json()["error"] == UNAVAILABLE_MESSAGE
            run.unavailable += 1
            await asyncio.sleep(0.05)
            continue
        assert response.status_code == 200, (response.status_code, response.text)
        body = response.json()
        assert body["rejected"] == [], body
        assert body["accepted"] + body["duplicates"] == len(batch), body
        for e in batch:
            run.acked[e["id"]] = e
        run.acked_batches += 1
        if run.acked_batches >= run.milestone:
            run.reached.set()
        run.acked_after_fault += run.fault_done
        return


async def run_clients(client: httpx.AsyncClient, plans: list[list[list[dict[str, Any]]]],
                      run: Run) -> None:
    async def one(batches: list[list[dict[str, Any]]]) -> None:
        for batch in batches:
            await deliver(client, batch, run)

    await asyncio.gather(*(one(batches) for batches in plans))




# --- exactness ------------------------------------------------------------------------

#: Per-account tables are joined on the account too (Citus joins them shard by shard).
_JOINS = ("FROM usage_event e JOIN account a ON a.id = e.account_id "
          "JOIN api_key k ON k.account_id = e.account_id AND k.id = e.api_key_id "
          "JOIN endpoint en ON en.id = e.endpoint_id JOIN source s ON s.id = e.source_id "
          "JOIN app_user u ON u.account_id = e.account_id AND u.id = e.user_id "
          "WHERE a.external_id = 'acme'")


def _us(e: dict[str, Any]) -> int:
    t = datetime.fromisoformat(e["occurredAt"])
    return (t - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


async def group_by(expr: str) -> dict[Any, tuple[int, int]]:
    """Calls and credits per ``expr``, straight from the raw events (not the rollups)."""
    _, rows = await connection().execute_query(
        f"SELECT {expr}, COUNT(*), SUM(e.credits) {_JOINS} GROUP BY {expr}")
    return {r[0] if isinstance(r[0], str) else int(r[0]): (int(r[1]), int(r[2]))
            for r in rows}


async def assert_exact(client: httpx.AsyncClient, acked: dict[str, dict[str, Any]]) -> None:
    """Stored raw events == the acknowledged ones, and every report == the raw events."""
    _, rows = await connection().execute_query(
        "SELECT e.event_id, k.external_id, en.path, s.key, u.external_id, e.credits, "
        f"e.occurred_at_us {_JOINS}")
    stored = [(str(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), int(r[5]), int(r[6]))
              for r in rows]
    assert len(stored) == len({s[0] for s in stored}), "an event is stored twice"
    assert sorted(stored) == sorted(
        (e["id"], e["apiKeyId"], e["endpoint"], e["source"], e["userId"], e["credits"], _us(e))
        for e in acked.values())

    day, hour = await group_by("e.occurred_at_us / 86400000000"), \
        await group_by("e.occurred_at_us / 3600000000")
    expected_rows = {
        "endpoint": await group_by("en.path"), "source": await group_by("s.key"),
        "apiKey": {gid("ApiKey", k): v for k, v in (await group_by("k.external_id")).items()},
        "user": {gid("User", k): v for k, v in (await group_by("u.external_id")).items()},
    }
    # ... and those groups are the acknowledged events', counted in Python.
    assert sum(c for c, _ in day.values()) == len(acked)
    assert sum(cr for _, cr in day.values()) == sum(e["credits"] for e in acked.values())

    answer = await gql(client, REPORT_QUERY, {"f": REPORT})
    assert "errors" not in answer, answer
    usage = answer["data"]["account"]["usage"]
    assert (usage["calls"], usage["credits"]) == (
        len(acked), sum(e["credits"] for e in acked.values()))
    for name, groups, seconds in (("day", day, 86400), ("hour", hour, 3600)):
        buckets = {int(datetime.fromisoformat(b["start"]).timestamp()) // seconds:
                   (b["calls"], b["credits"]) for b in usage[name] if b["calls"]}
        assert buckets == groups, name
    for name, groups in expected_rows.items():
        assert {r["key"]: (r["calls"], r["credits"]) for r in usage[name]} == groups, name


# --- servers --------------------------------------------------------------------------


class HeldPost:
    """A ``POST`` over a plain socket with ``Expect: 100-continue``, sent piece by piece.

    uvicorn answers ``100 Continue`` when the app first reads the body, so once ``open``
    returns the server itself has said that the request is in flight (headers parsed, the
    app running and reading the body). Faults are injected on that word, never after a
    sleep that a quiet or a loaded machine could outlast."""

    def __init__(self, port: int, path: str, body: bytes) -> None:
        self.port = port
        self.path = path
        self.body = body
        self.conn = h11.Connection(h11.CLIENT)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        headers = [("Host", f"127.0.0.1:{self.port}"), ("Content-Type", "application/json"),
                   ("Content-Length", str(len(self.body))), ("Expect", "100-continue"),
                   *SERVICE.items()]
        await self._write(h11.Request(method="POST", target=self.path, headers=headers))
        event = await self._next_event()
        assert isinstance(event, h11.InformationalResponse) and event.status_code == 100, event

    async def send(self, data: bytes) -> None:
        await self._write(h11.Data(data=data))

    async def finish(self) -> tuple[int, Any]:
        """Send the end of the body; the status and JSON body of the answer."""
        await self._write(h11.EndOfMessage())
        response = await self._next_event()
        assert isinstance(response, h11.Response), response
        chunks = []
        while not isinstance(event := await self._next_event(), h11.EndOfMessage):
            assert isinstance(event, h11.Data), event
            chunks.append(event.data)
        return response.status_code, json.loads(b"".join(chunks))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    async def _write(self, event: h11.Event) -> None:
        assert self.writer is not None
        data = self.conn.send(event)
        if data:
            self.writer.write(data)
            await self.writer.drain()

    async def _next_event(self) -> h11.Event | type[h11.PAUSED]:
        assert self.reader is not None
        while (event := self.conn.next_event()) is h11.NEED_DATA:
            self.conn.receive_data(await asyncio.wait_for(self.reader.read(65536), 60))
        if isinstance(event, h11.ConnectionClosed):
            raise ConnectionResetError("the server closed the connection")
        return event


def json_body(events: list[dict[str, Any]]) -> bytes:
    return json.dumps(events).encode()


async def wait_for_log(server: Server, text: str, within: float = 30) -> None:
    """Until the server's own log says ``text``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while text not in server.log(lines=100_000):
        assert loop.time() < deadline, f"the server never logged {text!r}:\n{server.log()}"
        await asyncio.sleep(0.02)


@contextlib.contextmanager
def dedicated_postgres() -> Iterator[tuple[CrashablePostgres, str]]:
    with crashable_postgres() as pg:
        yield pg, create_database(pg.url, "faults")


# --- 1. PostgreSQL killed and restarted during ingestion --------------------------------


async def _outage_in_process(server: CrashablePostgres, url: str) -> None:
    """``_postgres_outage`` against the app run in-process on ``url``, whose database
    server ``server`` the outage kills and restarts."""
    await run_migrations(url)
    EXECUTOR_CACHE.clear()
    await Tortoise.init(config=tortoise_config(url), _enable_global_fallback=True)
    try:
        app = create_app(make_settings(url, retry_after_seconds=RETRY_AFTER), manage_db=False)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://testserver") as client:
            await _postgres_outage(client, server, url)
    finally:
        await Tortoise.close_connections()


async def test_postgres_sigkill_during_ingestion_loses_and_duplicates_nothing():
    """PostgreSQL only: the fault is the PostgreSQL server crashing (SIGKILL of the
    postmaster and its backends) and restarting with crash recovery; a dedicated server,
    so that the suite's shared one is never killed. The app runs in-process."""
    with dedicated_postgres() as (pg, url):
        await _outage_in_process(pg, url)


@pytest.mark.skipif(citus_missing() is not None, reason=citus_missing() or "")
async def test_citus_coordinator_sigkill_during_ingestion_loses_and_duplicates_nothing():
    """Citus's analogue of the test above: the server the app talks to, the coordinator of
    a dedicated cluster (a coordinator and two workers), is killed and restarted with
    crash recovery, mid-ingestion and then under a waiting report; the same outcome. (A
    *worker* killed mid-ingestion: tests/system/test_citus.py.)"""
    with citus_cluster(workers=2) as cluster:
        url = cluster.create_database("faults")
        await _outage_in_process(cluster.coordinator, url)


async def _postgres_outage(client: httpx.AsyncClient, pg: CrashablePostgres, url: str) -> None:
    await make_account(client, "acme", users=USERS, keys=KEYS)
    rng = random.Random(5)
    events = make_events(rng, 8000)
    plans = plan_batches(rng, events, clients=4, batch_size=250, overlap=25)
    total_batches = sum(len(p) for p in plans)
    run = Run(milestone=total_batches // 4)
    during: dict[str, httpx.Response] = {}

    async def crash_and_restart() -> None:
        await asyncio.wait_for(run.reached.wait(), 60)
        await asyncio.to_thread(pg.kill)
        # While it is down: every route says 503 with Retry-After, in its own shape.
        during["graphql"] = await gql_response(client)
        during["put"] = await client.put("/v1/accounts/acme/users/u4", headers=SERVICE, json={
            "name": "U4", "email": "u4@acme.example", "role": "MEMBER"})
        during["readyz"] = await client.get("/readyz")
        await asyncio.sleep(1.0)
        await asyncio.to_thread(pg.start)
        run.fault_done = True

    await asyncio.gather(run_clients(client, plans, run), crash_and_restart())

    assert run.unavailable > 0  # ingestion saw the outage as 503 + Retry-After ...
    assert run.acked_after_fault > 0  # ... in the middle of the run, and recovered
    assert run.acked_batches == total_batches and len(run.acked) == len(events)
    graphql = during["graphql"]
    assert graphql.status_code == 503 and graphql.headers["retry-after"] == str(RETRY_AFTER)
    assert graphql.json()["errors"][0]["extensions"]["code"] == SERVICE_UNAVAILABLE
    assert during["put"].status_code == 503, during["put"].text
    assert during["put"].headers["retry-after"] == str(RETRY_AFTER)
    assert during["put"].json() == {"error": UNAVAILABLE_MESSAGE, "code": SERVICE_UNAVAILABLE}
    assert during["readyz"].status_code == 503
    assert (await client.get("/readyz")).status_code == 200
    await assert_exact(client, run.acked)

    # A crash while a resolver's query runs (authentication already done): that field's
    # error says SERVICE_UNAVAILABLE and the answer is 503, then the next query works.
    locker = await asyncpg.connect(url.replace("postgres://", "postgresql://"))
    transaction = locker.transaction()
    await transaction.start()
    tables = [r[0] for r in await locker.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename LIKE 'usage%'")]
    await locker.execute(f"LOCK TABLE {', '.join(tables)} IN ACCESS EXCLUSIVE MODE")
    report = asyncio.create_task(gql_response(client))
    for _ in range(1000):
        if await locker.fetchval("SELECT count(*) FROM pg_stat_activity "
                                 "WHERE wait_event_type = 'Lock'"):
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the report query never waited for the lock")
    await asyncio.to_thread(pg.kill)
    response = await report
    assert response.status_code == 503 and response.headers["retry-after"] == str(RETRY_AFTER)
    body = response.json()
    assert body["data"]["viewer"] == {"name": "User admin"}
    assert body["data"]["account"]["usage"] is None
    assert body["errors"] and all(e["extensions"]["code"] == SERVICE_UNAVAILABLE
                                  and e["message"] == UNAVAILABLE_MESSAGE for e in body["errors"])
    locker.terminate()
    await asyncio.to_thread(pg.start)
    await assert_exact(client, run.acked)


async def gql_response(client: httpx.AsyncClient) -> httpx.Response:
    return await client.post("/graphql", json={"query": REPORT_QUERY, "variables": {"f": REPORT}},
                             headers={"Authorization": "Bearer " + token("admin", "acme")})


# --- 2. the gql_usage process killed mid-batch ----------------------------------------


async def test_server_sigkill_mid_batch_loses_and_duplicates_nothing(db_url, tmp_path):
    rng = random.Random(11)
    events = make_events(rng, 9000)
    plans = plan_batches(rng, events, clients=3, batch_size=1500, overlap=150)
    run = Run()
    held_batch = rng.sample(events, 1500)
    async with served(db_url, tmp_path) as server, httpx.AsyncClient(
            base_url=server.base_url) as client:
        await make_account(client, "acme", users=USERS, keys=KEYS)

        async def kill_and_restart() -> None:
            await asyncio.wait_for(run.reached.wait(), 60)
            # One more producer's batch, held half-sent: the server is reading it (its own
            # 100 Continue says so) when it is killed, whatever the other clients' timing.
            body = json_body(held_batch)
            held = HeldPost(server.port, "/v1/usage-events", body)
            await held.open()
            await held.send(body[:len(body) // 2])
            server.signal(signal.SIGKILL)
            assert server.wait(timeout=30) == -signal.SIGKILL
            with pytest.raises((h11.RemoteProtocolError, OSError)):
                await held.send(body[len(body) // 2:])
                await held.finish()
            held.close()
            run.connection_errors += 1
            await server.start()
            run.fault_done = True
            await deliver(client, held_batch, run)  # the producer sends it again

        await asyncio.gather(run_clients(client, plans, run), kill_and_restart())
        assert run.connection_errors > 0  # requests were in flight when it died
        assert run.acked_after_fault > 0
        assert len(run.acked) == len(events)
        await assert_exact(client, run.acked)


# --- 3. graceful shutdown -------------------------------------------------------------


async def test_sigterm_finishes_in_flight_batches_then_exits_cleanly(db_url, tmp_path):
    rng = random.Random(3)
    whole = json_body(make_events(rng, 5000, prefix="whole"))
    streamed_events = make_events(rng, 1000, prefix="streamed")
    streamed = json_body(streamed_events)
    async with served(db_url, tmp_path) as server, httpx.AsyncClient(
            base_url=server.base_url) as client:
        await make_account(client, "acme", users=USERS, keys=KEYS)
        # Both requests are in flight by the server's own word (100 Continue): one with
        # its whole body sent, one with half of it; the rest comes once the server has
        # logged that it is shutting down.
        first = HeldPost(server.port, "/v1/usage-events", whole)
        second = HeldPost(server.port, "/v1/usage-events", streamed)
        await first.open()
        await first.send(whole)
        await second.open()
        await second.send(streamed[:len(streamed) // 2])
        server.signal(signal.SIGTERM)
        await wait_for_log(server, "Shutting down")
        await second.send(streamed[len(streamed) // 2:])
        answers = await asyncio.gather(first.finish(), second.finish())
        first.close()
        second.close()
        assert answers == [(200, {"accepted": 5000, "duplicates": 0, "rejected": []}),
                           (200, {"accepted": 1000, "duplicates": 0, "rejected": []})]
        # uvicorn finishes its shutdown (connections, then the lifespan: the database is
        # closed), then re-raises the signal so that the parent sees "terminated by SIGTERM".
        assert await asyncio.to_thread(server.wait, 30) == -signal.SIGTERM, server.log()
        shutdown = server.log(lines=1000).split("Shutting down", 1)[1]
        assert "Application shutdown complete" in shutdown and "Finished server process" in \
            shutdown and "Traceback" not in shutdown and "ERROR" not in shutdown, shutdown
        with pytest.raises(httpx.TransportError):  # it stopped taking requests
            await client.get("/healthz")
    _, rows = await connection().execute_query("SELECT COUNT(*), SUM(credits) FROM usage_event")
    assert (int(rows[0][0]), int(rows[0][1])) == (
        6000, sum(e["credits"] for e in json.loads(whole) + streamed_events))


# --- 4. event age ---------------------------------------------------------------------


def _app_client(db_url: str, **settings: Any) -> httpx.AsyncClient:
    app = create_app(make_settings(db_url, **settings), manage_db=False)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def _post(client: httpx.AsyncClient, events: Sequence[dict[str, Any]]) -> dict[str, Any]:
    response = await client.post("/v1/usage-events", json=list(events), headers=SERVICE)
    assert response.status_code == 200, response.text
    return response.json()


async def _day_series(client: httpx.AsyncClient, day: datetime) -> list[tuple[int, int]]:
    answer = await gql(client, """query($f: UsageFilter!) { account { usage(filter: $f) {
        series(granularity: DAY) { calls credits } } } }""", {"f": {
        "from": day.isoformat(), "to": (day + timedelta(days=2)).isoformat()}})
    assert "errors" not in answer, answer
    return [(b["calls"], b["credits"]) for b in answer["data"]["account"]["usage"]["series"]]


async def test_future_events_are_rejected_and_any_past_age_is_accepted_by_default(db_url):
    now = datetime.now(UTC)
    old = (now - timedelta(days=3 * 365)).replace(hour=10, minute=0, second=0, microsecond=0)
    day = old.replace(hour=0)

    def e(event_id: str, when: datetime, credits: int) -> dict[str, Any]:
        return event(event_id, "acme", "k1", "admin", "/v2/person", "api", credits, when)

    async with _app_client(db_url) as client:
        await make_account(client, "acme", users=USERS, keys=KEYS)
        result = await _post(client, [
            e("far-future", now + timedelta(minutes=10), 5),
            e("skewed", now + timedelta(seconds=60), 6),      # within the 300 s allowance
            e("three-years-old", old, 7)])
        assert result["accepted"] == 2 and result["duplicates"] == 0
        [rejection] = result["rejected"]
        assert rejection["index"] == 0
        assert rejection["reason"].startswith("occurredAt: ")
        assert "more than 300 seconds in the future" in rejection["reason"]
        assert await _day_series(client, day) == [(1, 7), (0, 0)]

        # A very late event, arriving after its bucket was read, updates that bucket.
        assert (await _post(client, [e("later-still", old + timedelta(hours=5), 4)]))[
            "accepted"] == 1
        assert await _day_series(client, day) == [(2, 11), (0, 0)]


async def test_a_configured_maximum_age_rejects_older_events_naming_occurred_at(db_url):
    now = datetime.now(UTC)
    async with _app_client(db_url, max_age_seconds=86400) as client:
        await make_account(client, "acme", users=USERS, keys=KEYS)
        result = await _post(client, [
            event("two-days-old", "acme", "k1", "admin", "/v2/person", "api", 3,
                  now - timedelta(days=2)),
            event("an-hour-old", "acme", "k1", "admin", "/v2/person", "api", 4,
                  now - timedelta(hours=1))])
        assert result == {"accepted": 1, "duplicates": 0, "rejected": [{
            "index": 0,
            "reason": "occurredAt: older than the configured maximum age of 86400 seconds"}],
            "rejectedCount": 1, "rejectedIndexes": [0]}
    _, rows = await connection().execute_query("SELECT event_id FROM usage_event")
    assert [r[0] for r in rows] == ["an-hour-old"]


def test_maximum_age_setting_is_off_by_default_and_validated(monkeypatch):
    monkeypatch.delenv("GQL_USAGE_MAX_AGE_SECONDS", raising=False)
    assert load_settings().max_age_seconds is None
    for off in ("", "off", "None"):
        monkeypatch.setenv("GQL_USAGE_MAX_AGE_SECONDS", off)
        assert load_settings().max_age_seconds is None
    monkeypatch.setenv("GQL_USAGE_MAX_AGE_SECONDS", "604800")
    assert load_settings().max_age_seconds == 604800
    for bad in ("0", "-5", "a week"):
        monkeypatch.setenv("GQL_USAGE_MAX_AGE_SECONDS", bad)
        with pytest.raises(MissingSetting, match="GQL_USAGE_MAX_AGE_SECONDS"):
            load_settings()


# --- 5. SQLite locked by another writer -----------------------------------------------


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_sqlite_locked_by_another_writer_answers_503_and_stores_nothing(db_url):
    """SQLite only: "database is locked" is SQLite's failure mode for a second writer
    (PostgreSQL waits on row locks instead; its outages are covered above)."""
    path = db_url.removeprefix("sqlite://")
    # A short busy timeout (the default waits 5 s per statement, times the retries).
    await Tortoise.close_connections()
    await Tortoise.init(config=tortoise_config(f"{db_url}?busy_timeout=50"),
                        _enable_global_fallback=True)
    async with _app_client(db_url, retry_after_seconds=RETRY_AFTER) as client:
        await make_account(client, "acme", users=USERS, keys=KEYS)
        first = make_events(random.Random(1), 300, prefix="first")
        assert (await _post(client, first))["accepted"] == 300
        # New endpoints and sources too: their catalogue rows must not be half-stored.
        second = make_events(random.Random(2), 300, prefix="second")
        second[0] = {**second[0], "endpoint": "/v3/brand-new", "source": "zapier"}

        holder = sqlite3.connect(path, isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            for request in (
                client.post("/v1/usage-events", json=second, headers=SERVICE),
                client.post("/v1/usage-events", json=second[1:], headers=SERVICE),
                client.put("/v1/accounts/acme/users/u4", headers=SERVICE, json={
                    "name": "U4", "email": "u4@acme.example", "role": "MEMBER"}),
            ):
                response = await request
                assert response.status_code == 503, response.text
                assert response.headers["retry-after"] == str(RETRY_AFTER)
                assert response.json() == {"error": UNAVAILABLE_MESSAGE,
                                           "code": SERVICE_UNAVAILABLE}
            # Reads go on while the writer holds its lock (WAL): reports stay available.
            await assert_exact(client, {e["id"]: e for e in first})
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        _, rows = await connection().execute_query(
            "SELECT (SELECT COUNT(*) FROM endpoint WHERE path = '/v3/brand-new'), "
            "(SELECT COUNT(*) FROM source WHERE key = 'zapier'), "
            "(SELECT COUNT(*) FROM app_user WHERE external_id = 'u4')")
        assert tuple(int(v) for v in rows[0]) == (0, 0, 0)

        # The lock is gone: the retried batch is stored, once, and the service is whole.
        assert (await _post(client, second)) == {"accepted": 300, "duplicates": 0,
                                                 "rejected": []}
        await assert_exact(client, {e["id"]: e for e in first + second})


# --- the classification itself ---------------------------------------------------------


def test_classification_of_database_exceptions():
    from tortoise.exceptions import DBConnectionError, IntegrityError, OperationalError

    unavailable = [
        ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)"),
        OSError("Multiple exceptions: [Errno 111] Connect call failed"),
        TimeoutError(),
        DBConnectionError("can't connect"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.ConnectionDoesNotExistError(
            "connection was closed in the middle of operation"),
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator "
                                              "command"),
        asyncpg.exceptions.InterfaceError("cannot call Transaction.rollback(): the underlying "
                                          "connection is closed"),
        OperationalError(sqlite3.OperationalError("database is locked")),
        OperationalError("the database system is shutting down"),
        asyncpg.exceptions.InternalClientError(
            "cannot switch to state 12; another operation (2) is in progress"),
        # A Citus coordinator killed while a backend waited on a worker (its COMMIT).
        asyncpg.exceptions.InternalServerError("postmaster was shut down, exiting"),
    ]
    wrapped = OperationalError("wrapper")
    wrapped.__cause__ = asyncpg.exceptions.CrashShutdownError("crash")
    unavailable.append(wrapped)
    available = [
        ValueError("x"), KeyError("k"), FileNotFoundError(2, "no such file"),
        PermissionError(13, "denied"),
        IntegrityError("duplicate key value violates unique constraint"),
        OperationalError("syntax error at or near SELEC"),
        asyncpg.exceptions.InterfaceError("cannot perform operation: another operation is "
                                          "in progress"),
        asyncpg.exceptions.UndefinedTableError('relation "x" does not exist'),
        asyncpg.exceptions.InternalClientError("unexpected error while performing "
                                               "authentication"),
        asyncpg.exceptions.InternalServerError("the query contains a join that requires "
                                               "repartitioning"),
    ]
    assert [is_unavailable(e) for e in unavailable] == [True] * len(unavailable)
    assert [is_unavailable(e) for e in available] == [False] * len(available)

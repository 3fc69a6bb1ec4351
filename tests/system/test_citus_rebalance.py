"""Rebalancing a working Citus cluster loses no number (issue 15, point 4).

A coordinator and two workers (tests/support/citus_server.py) hold accounts on every
shard. While a sender posts mixed batches (resending each until acknowledged), dashboard
readers read, and compaction folds pending events into the cube, a third worker is added
and ``citus_rebalance_start()`` moves shards to it with the default ``shard_transfer_mode``
(logical replication). Exact means:

* each reader owns accounts no one else writes to, and alternates: post a batch for one
  of them and wait for its 200, then read that account's report, which must equal the
  totals of that account's acknowledged events, counted here;
* readers also read the sender's accounts; such a read must lie between the totals of
  the events acknowledged before it started and of those sent before it ended;
* afterwards every account's report (before and after compaction) equals its
  acknowledged events, each stored once.

Overlap is established, not hoped for: a transfer (the rebalance first copies the
reference tables to the new node, then moves shard groups) cannot get past creating its
replication slot while a transaction with an id is open on its source node (logical
decoding waits for running transactions). The test holds one on each old worker until a
slot is seen waiting and the workload has completed batches, reads and compactions since,
checks the job is still running, then lets it go; the workload goes on until
``citus_rebalance_wait()`` returns. Skipped, saying why, without Citus."""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from support.citus_server import CitusCluster, citus_cluster, citus_missing
from support.config import make_settings
from support.database import connect
from support.events import ENDPOINTS, KEYS, SOURCES, USERS
from support.helpers import SERVICE, event, gid, gql, make_account, put
from tortoise import Tortoise

from gql_usage.app import create_app
from gql_usage.storage import cube
from gql_usage.storage.db import run_migrations

pytestmark = pytest.mark.skipif(citus_missing() is not None, reason=citus_missing() or "")

RANGE = 'from: "2026-01-01T00:00:00Z", to: "2026-02-01T00:00:00Z"'
#: Accounts enter the cube once compaction has seen this many of their events: some are
#: in it from the start, some enter it during the rebalance, some stay raw.
CUBE_AFTER = 500
#: What the workload must complete, each kind, while a transfer is held.
HELD_OPERATIONS = 2
#: The workload's kinds of operation.
KINDS = ("batch", "read", "bounded", "compaction")
#: Longest wait for any one step. Each step waits for progress, not for time, so this only
#: bounds a hang: a fresh-clone run beside a 10M-event benchmark (load ~6) needed over 90 s
#: for the workload to complete two of each operation while a transfer was held.
DEADLINE_S = 300


def _dsn(url: str) -> str:
    return url.replace("postgres://", "postgresql://", 1)


@dataclass
class Totals:
    """An account's report: calls, credits, and both per API key."""

    calls: int = 0
    credits: int = 0
    by_key: dict[str, tuple[int, int]] = field(default_factory=dict)

    @classmethod
    def of(cls, events: list[dict[str, Any]]) -> Totals:
        by_key: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for e in events:
            by_key[gid("ApiKey", e["apiKeyId"])][0] += 1
            by_key[gid("ApiKey", e["apiKeyId"])][1] += e["credits"]
        return cls(len(events), sum(e["credits"] for e in events),
                   {k: (c, cr) for k, (c, cr) in by_key.items()})


@dataclass
class Workload:
    """What the concurrent tasks did: events per account, and when each operation ran."""

    acknowledged: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: defaultdict(list))
    sent: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    #: (kind, started, ended) per completed operation; kind: batch, read, bounded, compaction.
    operations: list[tuple[str, float, float]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    numbers: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def done(self, kind: str, started: float) -> None:
        self.operations.append((kind, started, time.monotonic()))

    def within(self, kind: str, start: float, end: float = float("inf")) -> int:
        """Operations of ``kind`` begun at or after ``start`` and ended by ``end``."""
        return sum(1 for k, s, e in self.operations if k == kind and s >= start and e <= end)

    def events(self, rng: random.Random, account: str, n: int) -> list[dict[str, Any]]:
        out = []
        for _ in range(n):
            self.numbers[account] += 1
            occurred = (datetime(2026, 1, 1, tzinfo=UTC).timestamp()
                        + rng.randrange(0, 31 * 86400) + rng.random())
            out.append(event(f"{account}-{self.numbers[account]}", account, rng.choice(KEYS),
                             rng.choice(USERS)[0], rng.choice(ENDPOINTS), rng.choice(SOURCES),
                             rng.randrange(0, 50), datetime.fromtimestamp(occurred, UTC)))
        return out


async def _report(client: httpx.AsyncClient, account: str) -> Totals:
    body = await gql(client, f"{{ account {{ usage(filter: {{{RANGE}}}) {{ calls credits"
                             " breakdown(by: API_KEY) { key calls credits } } } }",
                     user="admin", account=account)
    assert "errors" not in body, body
    usage = body["data"]["account"]["usage"]
    return Totals(usage["calls"], usage["credits"],
                  {r["key"]: (r["calls"], r["credits"]) for r in usage["breakdown"]})


async def _post_until_acknowledged(client: httpx.AsyncClient, work: Workload,
                                   batch: list[dict[str, Any]]) -> None:
    """Post ``batch`` until it is acknowledged (200), as a gateway would."""
    for e in batch:
        work.sent[e["accountId"]].append(e)
    started = time.monotonic()
    while True:
        try:
            response = await client.post("/v1/usage-events", json=batch, headers=SERVICE,
                                         timeout=60)
            if response.status_code == 200:
                assert response.json()["rejected"] == [], response.text
                break
            work.refused.append(f"{response.status_code}: {response.text[:200]}")
        except httpx.HTTPError as exc:
            work.refused.append(repr(exc))
        assert time.monotonic() - started < DEADLINE_S, work.refused[-5:]
        await asyncio.sleep(0.1)
    for e in batch:
        work.acknowledged[e["accountId"]].append(e)
    work.done("batch", started)


async def _sender(client: httpx.AsyncClient, work: Workload, accounts: list[str]) -> None:
    """Mixed batches of the sender's accounts until told to stop."""
    rng = random.Random(41)
    while not work.stop.is_set():
        batch = [e for a in accounts for e in work.events(rng, a, rng.randrange(5, 15))]
        rng.shuffle(batch)
        await _post_until_acknowledged(client, work, batch)


async def _reader(client: httpx.AsyncClient, work: Workload, owned: list[str],
                  others: list[str], seed: int) -> None:
    """Per owned account: a batch, acknowledged, then an exact read; and a bounded read of
    one of the sender's accounts."""
    rng = random.Random(seed)
    while not work.stop.is_set():
        for account in owned:
            await _post_until_acknowledged(client, work, work.events(rng, account, 20))
            started = time.monotonic()
            assert await _report(client, account) == Totals.of(work.acknowledged[account]), (
                account)
            work.done("read", started)
        other = rng.choice(others)
        started = time.monotonic()
        low = Totals.of(list(work.acknowledged[other]))
        read = await _report(client, other)
        high = Totals.of(list(work.sent[other]))
        assert low.calls <= read.calls and low.credits <= read.credits, (other, low, read)
        assert read.calls <= high.calls and read.credits <= high.credits, (other, read, high)
        work.done("bounded", started)


async def _compactor(work: Workload) -> None:
    """Rounds, as the server's compactor runs them (``compact``: one round over the
    accounts with pending events). Not ``compact_all``, which folds until nothing is
    pending: under a steady sender it never ended (0 of them in 300 s against 4,341
    batches, beside the 10M-event benchmark)."""
    while not work.stop.is_set():
        started = time.monotonic()
        await cube.compact(CUBE_AFTER)
        work.done("compaction", started)
        await asyncio.sleep(0.05)  # let the others at the event loop


async def _until(what: str, check: Callable[[], Awaitable[bool]],
                 tasks: list[asyncio.Task[None]],
                 detail: Callable[[], str] = lambda: "") -> None:
    """Wait until ``check()`` holds, failing at once if a workload task failed (saying
    ``detail()`` when the deadline passes)."""
    deadline = time.monotonic() + DEADLINE_S
    while not await check():
        for task in tasks:
            if task.done():
                task.result()  # raises the task's failure
                raise AssertionError(f"a workload task ended before: {what}")
        assert time.monotonic() < deadline, f"not within {DEADLINE_S} s: {what}; {detail()}"
        await asyncio.sleep(0.1)


async def _accounts_on_every_shard(client: httpx.AsyncClient, dsn: str) -> dict[str, int]:
    """One account per shard of the co-location group: {account: shard of usage_event}."""
    conn = await asyncpg.connect(dsn)
    try:
        shards = await conn.fetchval(
            "SELECT count(*) FROM pg_dist_shard WHERE logicalrelid = 'usage_event'::regclass")
        chosen: dict[str, int] = {}
        for n in range(300):
            name = f"rb{n}"
            await put(client, f"/v1/accounts/{name}", {
                "name": name, "plan": "PRO", "timeZone": "UTC", "creditsGranted": 1000,
                "periodStart": "2026-01-01T00:00:00Z", "periodEnd": "2026-02-01T00:00:00Z"})
            shard = await conn.fetchval(
                "SELECT get_shard_id_for_distribution_column('usage_event', id)"
                " FROM account WHERE external_id = $1", name)
            if shard not in chosen.values():
                await make_account(client, name, users=USERS, keys=KEYS)
                chosen[name] = shard
            if len(chosen) == shards:
                return chosen
    finally:
        await conn.close()
    raise AssertionError(f"no account on every shard: {chosen}")


async def test_rebalancing_onto_a_new_worker_keeps_every_number_exact(
        caplog: pytest.LogCaptureFixture) -> None:
    with citus_cluster(workers=2) as cluster:
        url = cluster.create_database("gql_rebalance")
        await run_migrations(url)
        await connect(url)
        app = create_app(make_settings(url), manage_db=False)
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://testserver") as client:
                await _rebalance_under_load(client, cluster, _dsn(url), caplog)
        finally:
            await Tortoise.close_connections()


async def _rebalance_under_load(client: httpx.AsyncClient, cluster: CitusCluster,
                               dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    conn = await asyncpg.connect(dsn)
    try:  # usage_pending has no key: every shard of it identifies rows by the whole row
        identities = await conn.fetch(
            "SELECT result FROM run_command_on_shards('usage_pending', $$SELECT relreplident"
            " FROM pg_class WHERE oid = '%s'::regclass$$)")
        assert [r["result"] for r in identities] == ["f"] * len(identities) != [], identities
        # the job's tasks are picked up within 0.2 s rather than 5 (test speed only)
        await conn.execute("ALTER SYSTEM SET citus.background_task_queue_interval = '200ms'")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()
    shard_of = await _accounts_on_every_shard(client, dsn)
    accounts = sorted(shard_of, key=shard_of.__getitem__)
    conn = await asyncpg.connect(dsn)
    try:
        node_of = {a: await conn.fetchval("SELECT nodeport FROM pg_dist_shard_placement"
                                          " WHERE shardid = $1", shard_of[a]) for a in accounts}
    finally:
        await conn.close()
    # The sender's accounts and the readers' each on both old workers.
    mixed, owned = [], []
    for worker in cluster.workers:
        on_worker = [a for a in accounts if node_of[a] == worker.port]
        mixed += on_worker[0::2]
        owned += on_worker[1::2]
    assert {node_of[a] for a in mixed} == {node_of[a] for a in owned} == {
        w.port for w in cluster.workers}, node_of
    work = Workload()
    rng = random.Random(1504)
    for account in accounts:  # history: some accounts in the cube already, some raw
        await _post_until_acknowledged(client, work, work.events(rng, account,
                                                                 rng.randrange(100, 800)))
    await cube.compact_all(CUBE_AFTER)
    preloaded = sum(len(v) for v in work.acknowledged.values())

    tasks = [asyncio.create_task(_sender(client, work, mixed)),
             asyncio.create_task(_reader(client, work, owned[: len(owned) // 2], mixed, 1)),
             asyncio.create_task(_reader(client, work, owned[len(owned) // 2:], mixed, 2)),
             asyncio.create_task(_compactor(work))]
    # The new node is started, given the database and added while the workload runs.
    adding = asyncio.create_task(asyncio.to_thread(cluster.add_worker))
    coordinator = await asyncpg.connect(dsn)
    holders: list[asyncpg.Connection] = []
    watchers: list[asyncpg.Connection] = []
    try:
        await _until("the workload runs", _completed(work, time.monotonic()), tasks)
        new = await adding
        # A transaction with an id on each old worker: the first transfer waits for it.
        for node in cluster.workers[:2]:
            watchers.append(await asyncpg.connect(_dsn(cluster.node_url(node, "gql_rebalance"))))
            holder = await asyncpg.connect(_dsn(cluster.node_url(node, "gql_rebalance")))
            holders.append(holder)
            await holder.execute("BEGIN")
            await holder.fetchval("SELECT txid_current()")
        started = time.monotonic()
        job = await coordinator.fetchval("SELECT citus_rebalance_start()")
        assert job is not None, "nothing to rebalance"

        async def waiting() -> bool:  # a transfer's slot waits for a held transaction
            for watcher in watchers:
                if await watcher.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender'"
                        " AND query LIKE 'CREATE_REPLICATION_SLOT%'"
                        " AND wait_event = 'transactionid'"):
                    return True
            return False

        await _until("the rebalance waits for a held transaction", waiting, tasks)
        held_from = time.monotonic()
        await _until("the workload runs during the move", _completed(work, held_from), tasks,
                     lambda: f"done since the hold: {_counts(work, held_from)}")
        state = await coordinator.fetchval(
            "SELECT state FROM citus_rebalance_status() WHERE job_id = $1", job)
        assert state == "running", state  # the workload above ran while the job ran
        assert await waiting()  # and while the transfer still waited
        released = time.monotonic()
        for holder in holders:
            await holder.execute("COMMIT")
        await asyncio.wait_for(coordinator.execute("SELECT citus_rebalance_wait()"),
                               DEADLINE_S)
        ended = time.monotonic()
        state = await coordinator.fetchval(
            "SELECT state FROM citus_rebalance_status() WHERE job_id = $1", job)
        assert state == "finished", state
        work.stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), DEADLINE_S)
    finally:
        work.stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, adding, return_exceptions=True)
        for conn in (*holders, *watchers, coordinator):
            await conn.close()

    conn = await asyncpg.connect(dsn)
    try:
        moved = await conn.fetch(
            "SELECT s.shardid, s.logicalrelid::regclass::text AS t FROM pg_dist_shard s"
            " JOIN pg_dist_shard_placement p USING (shardid)"
            " WHERE p.nodeport = $1 AND s.logicalrelid = ANY("
            "  SELECT logicalrelid FROM pg_dist_partition WHERE partmethod = 'h')", new.port)
        groups = {r["shardid"] for r in moved if r["t"] == "usage_event"}
        assert groups, "no shard moved to the new worker"
        on_new = sorted(a for a, shard in shard_of.items() if shard in groups)
        assert on_new  # every shard holds an account: some of them now live on the new node

        async def stored() -> dict[str, tuple[int, int]]:
            rows = await conn.fetch(
                "SELECT a.external_id, count(*) AS n, count(DISTINCT e.event_id) AS d"
                " FROM usage_event e JOIN account a ON a.id = e.account_id GROUP BY 1")
            return {r["external_id"]: (r["n"], r["d"]) for r in rows}

        expected = {a: Totals.of(events) for a, events in work.acknowledged.items()}
        assert {a: len(v) for a, v in work.sent.items()} == {
            a: len(v) for a, v in work.acknowledged.items()}  # every batch was acknowledged
        assert await stored() == {a: (len(v), len(v)) for a, v in work.acknowledged.items()}
        for account in accounts:
            assert await _report(client, account) == expected[account], account
        await cube.compact_all()
        for account in accounts:
            assert await _report(client, account) == expected[account], account
        await cube.compact_all(0)  # every account in the cube now
        assert await conn.fetchval("SELECT count(*) FROM usage_pending") == 0
        for account in accounts:
            assert await _report(client, account) == expected[account], account
        assert await stored() == {a: (len(v), len(v)) for a, v in work.acknowledged.items()}
    finally:
        await conn.close()

    during = {k: work.within(k, started, ended) for k in ("batch", "read", "bounded",
                                                          "compaction")}
    held = {k: work.within(k, held_from, released) for k in during}
    after = {k: work.within(k, released, ended) for k in during}
    assert all(held.values()), held  # established by the hold, checked all the same
    total = sum(len(v) for v in work.acknowledged.values())
    failures = sorted({str(r.exc_info[1]).splitlines()[0] for r in caplog.records
                       if r.exc_info and r.exc_info[1]})
    print(f"\nrebalance onto a third worker: {len(groups)} of {len(shard_of)} shard groups "
          f"moved ({len(moved)} shard placements), accounts now on it: {on_new} (sender's: "
          f"{sorted(set(on_new) & set(mixed))}); "
          f"{ended - started:.1f} s from citus_rebalance_start to the end of "
          f"citus_rebalance_wait, {ended - released:.1f} s of it after the held transfer was "
          f"let go; completed within it: {during} (while a transfer was held: {held}; "
          f"after: {after}); events: {preloaded} before, {total} in all, "
          f"{len(work.refused)} refused attempts, resent (the server's errors: {failures})")


def _counts(work: Workload, since: float) -> dict[str, int]:
    return {kind: work.within(kind, since) for kind in KINDS}


def _completed(work: Workload, since: float) -> Callable[[], Awaitable[bool]]:
    """Whether each kind of operation completed ``HELD_OPERATIONS`` times since ``since``."""
    async def check() -> bool:
        return all(n >= HELD_OPERATIONS for n in _counts(work, since).values())
    return check

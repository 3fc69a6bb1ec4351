"""A bounded load test of a real server on 127.0.0.1 (issue 5, point 6).

    python -m bench.load --seconds 60 --accounts 20 --ingesters 4 --viewers 20 [--db sqlite]

Starts ``gql-usage serve`` as a uvicorn subprocess on 127.0.0.1 against a PostgreSQL
server it starts itself in a temporary directory (``tests/support/pg_server.py``) or a SQLite
file (``--db sqlite``); creates ``--accounts`` paid accounts with users and API keys
through the service API; then, for ``--seconds``, runs ``--ingesters`` clients posting
event batches (mixed accounts, with deliberate duplicate resends) and ``--viewers``
dashboard viewers (admins of different accounts sending ``bench.dashboard.DASHBOARD`` and a
per-user breakdown), all at once, over HTTP with ``httpx.AsyncClient``. The server's RSS
is sampled every second from ``/proc/<pid>/status``.

Afterwards it checks, and exits non-zero when any check fails:

* exactly once: per account, the totals read through GraphQL and with the script's own
  SQL over ``usage_event`` equal the number and credits of the distinct events the
  server acknowledged; every batch answer counted its fresh events as accepted and its
  resends as duplicates;
* tenancy: every id (global ids decoded, breakdown keys) and every name in every answer
  belongs to the viewer's own account, and another account's key id resolves to null;
* memory: the median RSS of the last third of the run is at most the median of the
  first third times ``1 + --rss-growth-pct/100`` plus ``--rss-growth-mib``;
* no errors: no 5xx, no transport error, no GraphQL error.

It prints a table, then one line of JSON (rates, p50/p99 per route, RSS, errors,
checks). Runs are bounded: ``--seconds`` above 600 is refused.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import importlib
import json
import os
import random
import re
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx

from bench.dashboard import DASHBOARD
from gql_usage.auth import issue_token

ROOT = Path(__file__).resolve().parent.parent
MAX_SECONDS = 600
SECRET = "load-secret-0123456789abcdef0123456789abcdef"
SERVICE_TOKEN = "load-service-token-0123456789"
ENDPOINTS = ["/v2/person", "/v2/company", "prospecting/contact/enrich", "/v2/search",
             "/v1/bulk"]
SOURCES = ["api", "chrome_extension", "salesforce", "hubspot"]
ZONES = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=7))]
KEYS_PER_ACCOUNT = 3
USERS_QUERY = """query Users($f: UsageFilter!, $other: ID!) {
  viewer { id name }
  account {
    id name
    usage(filter: $f) {
      byUser: breakdown(by: USER) { key label user { id name email } calls credits }
      bySource: breakdown(by: SOURCE) { key label calls credits }
    }
  }
  other: node(id: $other) { id }
}"""
TOTALS_QUERY = """{ account { usage(filter: {from: "2000-01-01T00:00:00Z",
  to: "2100-01-01T00:00:00Z", timeZone: "UTC"}) { calls credits } } }"""
ACCOUNT_RE = re.compile(r"acc(\d{3})")


def load_pg_server() -> ModuleType:
    """``tests/support/pg_server.py`` (the tests folder is not a package: its root goes on
    ``sys.path``, as pytest's ``pythonpath`` puts it)."""
    tests = str(ROOT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    return importlib.import_module("support.pg_server")


def account_name(i: int) -> str:
    return f"acc{i:03d}"


# --- Measurements ----------------------------------------------------------------------

@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    error_samples: list[str] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)
    ack_mismatches: list[str] = field(default_factory=list)

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        if len(self.error_samples) < 10:
            self.error_samples.append(f"{kind}: {detail[:300]}")


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (``pct`` in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


def tree_rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` and all its descendants (uvicorn workers), in KiB."""
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                pending.extend(int(c) for c in children)
    return total


# --- Server ------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def database(kind: str, workdir: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite://{workdir / 'load.sqlite3'}"
        return
    pg = load_pg_server()
    with pg.start_postgres() as base:
        yield pg.create_database(base, "gql_usage_load")


@contextlib.contextmanager
def server(url: str, workdir: Path, workers: int) -> Iterator[tuple[subprocess.Popen[bytes],
                                                                     str, Path]]:
    """``gql-usage serve`` on 127.0.0.1 and a free port; stopped (SIGTERM, then SIGKILL)."""
    port = free_port()
    log_path = workdir / "server.log"
    env = {**os.environ, "GQL_USAGE_DATABASE_URL": url, "GQL_USAGE_JWT_SECRET": SECRET,
           "GQL_USAGE_SERVICE_TOKEN": SERVICE_TOKEN,
           # The load is the point here: viewers must not be throttled by the rate limit.
           "GQL_USAGE_RATE_LIMIT_POINTS": str(10**12),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    argv = [sys.executable, "-m", "gql_usage.cli", "serve", "--host", "127.0.0.1",
            "--port", str(port)]
    if workers != 1:
        argv += ["--workers", str(workers)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, cwd=workdir, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        yield process, f"http://127.0.0.1:{port}", log_path
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def log_tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:]


async def wait_ready(base: str, process: subprocess.Popen[bytes], log: Path,
                     limit_s: float = 90) -> None:
    deadline = time.monotonic() + limit_s
    async with httpx.AsyncClient(base_url=base, timeout=2) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}:\n"
                                   + log_tail(log))
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get("/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"server not ready after {limit_s} s:\n" + log_tail(log))


# --- Reference data ----------------------------------------------------------------------

SERVICE = {"Authorization": f"Bearer {SERVICE_TOKEN}"}


async def create_accounts(client: httpx.AsyncClient, n: int) -> None:
    plans = ["PRO", "PREMIUM", "SCALE"]
    now = datetime.now(UTC)

    async def put(path: str, body: dict[str, Any]) -> None:
        response = await client.put(path, json=body, headers=SERVICE)
        if response.status_code not in (200, 201):
            raise RuntimeError(f"PUT {path}: {response.status_code} {response.text[:300]}")

    async def one(i: int) -> None:
        acc = account_name(i)
        await put(f"/v1/accounts/{acc}", {
            "name": f"Account {acc}", "plan": plans[i % 3], "timeZone": "Europe/Berlin",
            "creditsGranted": 1_000_000,
            "periodStart": (now - timedelta(days=20)).isoformat(),
            "periodEnd": (now + timedelta(days=10)).isoformat()})
        for user, role in ((f"{acc}-admin", "ADMIN"), (f"{acc}-member", "MEMBER")):
            await put(f"/v1/accounts/{acc}/users/{user}", {
                "name": f"User {user}", "email": f"{user}@{acc}.example", "role": role})
        for k in range(KEYS_PER_ACCOUNT):
            await put(f"/v1/accounts/{acc}/api-keys/{acc}-key-{k}", {
                "name": f"Key {acc}-key-{k}", "prefix": f"pk_{acc}{k}",
                "createdBy": f"{acc}-admin", "createdAt": "2025-06-01T00:00:00Z",
                "revokedAt": None})

    for start in range(0, n, 10):
        await asyncio.gather(*(one(i) for i in range(start, min(n, start + 10))))


# --- Ingestion clients -----------------------------------------------------------------

@dataclass
class Ledger:
    """Distinct events the server acknowledged, per account: event id -> credits."""

    events: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(dict))
    sent_batches: int = 0
    sent_events: int = 0
    resent_events: int = 0

    def acknowledged(self) -> int:
        return sum(len(v) for v in self.events.values())


class Ingester:
    def __init__(self, number: int, accounts: int, batch: int, dup_rate: float,
                 ledger: Ledger, stats: Stats, rng: random.Random) -> None:
        self.number, self.accounts, self.batch = number, accounts, batch
        self.dup_rate, self.ledger, self.stats, self.rng = dup_rate, ledger, stats, rng
        self.seq = 0
        self.last: list[dict[str, Any]] = []
        #: Batches whose outcome is unknown (transport error): sent again until answered.
        self.unknown: list[list[dict[str, Any]]] = []

    def fresh_event(self, now: datetime) -> dict[str, Any]:
        self.seq += 1
        acc = account_name(self.rng.randrange(self.accounts))
        at = now - timedelta(seconds=self.rng.uniform(60, 30 * 86400))
        return {"id": f"i{self.number}-{self.seq}", "accountId": acc,
                "apiKeyId": f"{acc}-key-{self.rng.randrange(KEYS_PER_ACCOUNT)}",
                "userId": f"{acc}-{self.rng.choice(['admin', 'member'])}",
                "endpoint": self.rng.choice(ENDPOINTS), "source": self.rng.choice(SOURCES),
                "credits": self.rng.choice([0, 1, 1, 2, 5, 10, 25]),
                "occurredAt": at.astimezone(self.rng.choice(ZONES)).isoformat()}

    def next_batch(self) -> tuple[list[dict[str, Any]], bool]:
        """(events, whether the outcome of an earlier send of some of them is unknown)."""
        if self.unknown:
            return self.unknown.pop(0), True
        if self.last and self.rng.random() < self.dup_rate / 4:
            # A whole batch again, as a producer does after losing an answer.
            self.ledger.resent_events += len(self.last)
            return list(self.last), False
        now = datetime.now(UTC)
        events = [self.fresh_event(now) for _ in range(self.batch)]
        if self.last and self.rng.random() < self.dup_rate:
            resend = self.rng.sample(self.last, k=min(len(self.last), max(1, self.batch // 10)))
            self.ledger.resent_events += len(resend)
            events += resend
            self.rng.shuffle(events)
        return events, False

    async def send(self, client: httpx.AsyncClient, events: list[dict[str, Any]],
                   ambiguous: bool) -> bool:
        """One batch; records it in the ledger; ``False`` when the outcome is unknown."""
        started = time.perf_counter()
        try:
            response = await client.post("/v1/usage-events", json=events, headers=SERVICE)
        except httpx.HTTPError as exc:
            self.stats.error("ingest-transport", repr(exc))
            self.unknown.append(events)
            return False
        self.stats.latencies["ingest"].append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            self.stats.error(f"ingest-{response.status_code}", response.text)
            if response.status_code >= 500:
                self.unknown.append(events)
            return False
        answer = response.json()
        ids = {(e["accountId"], e["id"]) for e in events}
        fresh = {(a, i) for a, i in ids if i not in self.ledger.events[a]}
        expected = {"accepted": len(fresh), "duplicates": len(events) - len(fresh),
                    "rejected": []}
        if answer["rejected"] or (answer["accepted"] + answer["duplicates"] != len(events)) or (
                not ambiguous and answer != expected):
            self.stats.ack_mismatches.append(f"batch of {len(events)}: answer {answer}, "
                                             f"expected {expected}")
        for e in events:
            self.ledger.events[e["accountId"]][e["id"]] = e["credits"]
        self.ledger.sent_batches += 1
        self.ledger.sent_events += len(events)
        self.last = events
        return True

    async def run(self, client: httpx.AsyncClient, until: float) -> None:
        while time.monotonic() < until:
            events, ambiguous = self.next_batch()
            await self.send(client, events, ambiguous)

    async def drain(self, client: httpx.AsyncClient, attempts: int = 5) -> None:
        """Resend the batches whose outcome is unknown until each is answered."""
        for _ in range(attempts):
            if not self.unknown:
                return
            pending, self.unknown = self.unknown, []
            for events in pending:
                await self.send(client, events, True)
        if self.unknown:
            self.stats.error("ingest-unresolved", f"{len(self.unknown)} batches never answered")


# --- Viewers -----------------------------------------------------------------------------

def decode_global_id(value: str) -> tuple[str, str] | None:
    try:
        text = base64.b64decode(value.encode(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    kind, sep, external = text.partition(":")
    return (kind, external) if sep and kind in ("Account", "ApiKey", "User") else None


def foreign_marks(data: Any, own: str) -> list[str]:
    """Every account a value of the answer points at, other than ``own``: in names and
    labels (``acc007``) and in decoded global ids (ids, breakdown keys)."""
    found: list[str] = []

    def visit(value: Any) -> None:
        if isinstance(value, dict):
            for item in value.values():
                visit(item)
        elif isinstance(value, list):
            for item in value:
                visit(item)
        elif isinstance(value, str):
            texts = [value]
            decoded = decode_global_id(value)
            if decoded is not None:
                texts.append(decoded[1])
            for text in texts:
                found.extend(f"acc{m}" for m in ACCOUNT_RE.findall(text) if f"acc{m}" != own)

    visit(data)
    return found


def own_ids_ok(data: Any, own: str) -> list[str]:
    """Global ids whose external id is not one of ``own``'s objects."""
    bad: list[str] = []

    def visit(value: Any, key: str | None) -> None:
        if isinstance(value, dict):
            for k, item in value.items():
                visit(item, k)
        elif isinstance(value, list):
            for item in value:
                visit(item, key)
        elif isinstance(value, str) and key in ("id", "key"):
            decoded = decode_global_id(value)
            if decoded is None:
                if key == "id":
                    bad.append(value)
                return
            kind, external = decoded
            if kind == "Account" and external != own:
                bad.append(value)
            elif kind != "Account" and not external.startswith(f"{own}-"):
                bad.append(value)

    visit(data, None)
    return bad


class Viewer:
    def __init__(self, number: int, account: int, accounts: int, stats: Stats,
                 think_s: float, started: datetime) -> None:
        self.account = account_name(account)
        other = account_name((account + 1) % accounts) if accounts > 1 else "nobody"
        self.headers = {"Authorization": "Bearer " + issue_token(
            SECRET, f"{self.account}-admin", self.account, 3 * MAX_SECONDS)}
        self.stats, self.think_s, self.number = stats, think_s, number
        window = {"from": (started - timedelta(days=31)).isoformat(),
                  "to": (started + timedelta(days=1)).isoformat()}
        self.requests = [
            ("dashboard", DASHBOARD, {"f": window}),
            ("users", USERS_QUERY, {"f": window, "other": base64.b64encode(
                f"ApiKey:{other}-key-0".encode()).decode()}),
        ]
        self.sent = 0

    async def once(self, client: httpx.AsyncClient) -> None:
        route, query, variables = self.requests[0 if self.sent % 4 else 1]
        self.sent += 1
        started = time.perf_counter()
        try:
            response = await client.post("/graphql", json={"query": query,
                                                           "variables": variables},
                                         headers=self.headers)
        except httpx.HTTPError as exc:
            self.stats.error(f"{route}-transport", repr(exc))
            return
        self.stats.latencies[route].append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            self.stats.error(f"{route}-{response.status_code}", response.text)
            return
        body = response.json()
        if body.get("errors"):
            self.stats.error(f"{route}-graphql", json.dumps(body["errors"])[:300])
        data = body.get("data")
        foreign = foreign_marks(data, self.account) + own_ids_ok(data, self.account)
        if route == "users" and data and data.get("other") is not None:
            foreign.append(f"node(other account's key) = {data['other']}")
        if foreign:
            self.stats.leaks.append(f"{self.account} saw {sorted(set(foreign))[:5]}")

    async def run(self, client: httpx.AsyncClient, until: float) -> None:
        while time.monotonic() < until:
            await self.once(client)
            if self.think_s:
                await asyncio.sleep(self.think_s)


# --- Checks after the run ---------------------------------------------------------------

async def graphql_totals(client: httpx.AsyncClient, accounts: int) -> dict[str, tuple[int, int]]:
    out = {}
    for i in range(accounts):
        acc = account_name(i)
        headers = {"Authorization": "Bearer " + issue_token(SECRET, f"{acc}-admin", acc, 600)}
        response = await client.post("/graphql", json={"query": TOTALS_QUERY}, headers=headers)
        body = response.json()
        if body.get("errors") or response.status_code != 200:
            raise RuntimeError(f"totals of {acc}: {response.status_code} {body}")
        usage = body["data"]["account"]["usage"]
        out[acc] = (int(usage["calls"]), int(usage["credits"]))
    return out


SQL_TOTALS = ("SELECT a.external_id, COUNT(*), COALESCE(SUM(e.credits), 0) FROM usage_event e "
              "JOIN account a ON a.id = e.account_id GROUP BY a.external_id")


async def sql_totals(url: str) -> dict[str, tuple[int, int]]:
    """Per-account totals by the script's own SQL over the raw events."""
    if url.startswith("sqlite://"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite://"))) as conn:
            rows = conn.execute(SQL_TOTALS).fetchall()
    else:
        import asyncpg

        conn = await asyncpg.connect(url.replace("postgres://", "postgresql://", 1))
        try:
            rows = [tuple(r) for r in await conn.fetch(SQL_TOTALS)]
        finally:
            await conn.close()
    return {str(a): (int(c), int(s)) for a, c, s in rows}


# --- The run -----------------------------------------------------------------------------

@dataclass
class Options:
    seconds: float
    accounts: int
    ingesters: int
    viewers: int
    batch: int
    dup_rate: float
    think_ms: float
    db: str
    workers: int
    rss_growth_pct: float
    rss_growth_mib: float
    seed: int


async def sample_rss(pid: int, samples: list[tuple[float, int]], stop: asyncio.Event,
                     t0: float) -> None:
    while not stop.is_set():
        samples.append((time.monotonic() - t0, tree_rss_kib(pid)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1.0)


async def drive(opts: Options, base: str, pid: int, url: str) -> dict[str, Any]:
    stats, ledger = Stats(), Ledger()
    rng = random.Random(opts.seed)
    limits = httpx.Limits(max_connections=opts.ingesters + opts.viewers + 4,
                          max_keepalive_connections=opts.ingesters + opts.viewers + 4)
    timeout = httpx.Timeout(60.0)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=timeout) as client:
        setup_started = time.perf_counter()
        await create_accounts(client, opts.accounts)
        setup_s = time.perf_counter() - setup_started
        started_at = datetime.now(UTC)
        ingesters = [Ingester(n, opts.accounts, opts.batch, opts.dup_rate, ledger, stats,
                              random.Random(rng.random())) for n in range(opts.ingesters)]
        viewers = [Viewer(n, n % opts.accounts, opts.accounts, stats, opts.think_ms / 1000,
                          started_at) for n in range(opts.viewers)]
        samples: list[tuple[float, int]] = []
        stop = asyncio.Event()
        t0 = time.monotonic()
        until = t0 + opts.seconds
        sampler = asyncio.create_task(sample_rss(pid, samples, stop, t0))
        await asyncio.gather(*(i.run(client, until) for i in ingesters),
                             *(v.run(client, until) for v in viewers))
        duration = time.monotonic() - t0
        stop.set()
        await sampler
        for ingester in ingesters:
            await ingester.drain(client)
        via_graphql = await graphql_totals(client, opts.accounts)
    via_sql = await sql_totals(url)
    return summarise(opts, stats, ledger, samples, duration, setup_s, via_graphql, via_sql)


def summarise(opts: Options, stats: Stats, ledger: Ledger, samples: list[tuple[float, int]],
              duration: float, setup_s: float, via_graphql: dict[str, tuple[int, int]],
              via_sql: dict[str, tuple[int, int]]) -> dict[str, Any]:
    expected = {account_name(i): (len(ledger.events[account_name(i)]),
                                  sum(ledger.events[account_name(i)].values()))
                for i in range(opts.accounts)}
    exact_graphql = [f"{a}: graphql {via_graphql.get(a)} != sent {e}"
                     for a, e in expected.items() if via_graphql.get(a) != e]
    exact_sql = [f"{a}: sql {via_sql.get(a, (0, 0))} != sent {e}"
                 for a, e in expected.items() if via_sql.get(a, (0, 0)) != e]
    rss = [kib / 1024 for _, kib in samples] or [0.0]
    third = max(1, len(rss) // 3)
    first_third, last_third = statistics.median(rss[:third]), statistics.median(rss[-third:])
    rss_bound = first_third * (1 + opts.rss_growth_pct / 100) + opts.rss_growth_mib
    routes = {route: {"count": len(values), "p50_ms": round(percentile(values, 50), 1),
                      "p99_ms": round(percentile(values, 99), 1),
                      "max_ms": round(max(values), 1)}
              for route, values in sorted(stats.latencies.items()) if values}
    queries = sum(len(v) for r, v in stats.latencies.items() if r != "ingest")
    checks = {
        "exactly_once_graphql": not exact_graphql,
        "exactly_once_sql": not exact_sql,
        "batch_answers": not stats.ack_mismatches,
        "no_foreign_ids": not stats.leaks,
        "rss_flat": last_third <= rss_bound,
        "no_errors": not stats.errors,
        "did_work": ledger.acknowledged() > 0 and queries > 0,
    }
    return {
        "ok": all(checks.values()), "db": opts.db, "duration_s": round(duration, 1),
        "setup_s": round(setup_s, 1), "accounts": opts.accounts, "ingesters": opts.ingesters,
        "viewers": opts.viewers, "batch": opts.batch,
        "events_acknowledged": ledger.acknowledged(), "events_sent": ledger.sent_events,
        "events_resent": ledger.resent_events, "batches": ledger.sent_batches,
        "events_per_s": round(ledger.acknowledged() / duration, 1),
        "queries": queries, "queries_per_s": round(queries / duration, 1),
        "routes": routes,
        "rss_mib": {"start": round(rss[0], 1), "peak": round(max(rss), 1),
                    "end": round(rss[-1], 1), "first_third_median": round(first_third, 1),
                    "last_third_median": round(last_third, 1), "bound": round(rss_bound, 1),
                    "samples": len(samples)},
        "errors": dict(stats.errors), "checks": checks,
        "problems": (exact_graphql + exact_sql + stats.ack_mismatches[:5] + stats.leaks[:5]
                     + stats.error_samples)[:20],
    }


def print_table(result: dict[str, Any]) -> None:
    print(f"\nload test on {result['db']}: {result['duration_s']} s, {result['accounts']} "
          f"accounts, {result['ingesters']} ingesters, {result['viewers']} viewers")
    print(f"{'route':12} {'count':>8} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}")
    for route, r in result["routes"].items():
        print(f"{route:12} {r['count']:>8} {r['p50_ms']:>9.1f} {r['p99_ms']:>9.1f} "
              f"{r['max_ms']:>9.1f}")
    rss = result["rss_mib"]
    print(f"events acknowledged {result['events_acknowledged']} "
          f"({result['events_per_s']}/s; {result['events_resent']} resent as duplicates), "
          f"queries {result['queries']} ({result['queries_per_s']}/s)")
    print(f"server RSS MiB: start {rss['start']}, peak {rss['peak']}, end {rss['end']}; "
          f"median first third {rss['first_third_median']}, last third "
          f"{rss['last_third_median']} (bound {rss['bound']})")
    for name, ok in result["checks"].items():
        print(f"  {'ok  ' if ok else 'FAIL'} {name}")
    for problem in result["problems"]:
        print(f"  - {problem}")
    sys.stdout.flush()


def run(opts: Options) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gql_usage_load_") as tmp:
        workdir = Path(tmp)
        with database(opts.db, workdir) as url, server(url, workdir, opts.workers) as (
                process, base, log):
            asyncio.run(wait_ready(base, process, log))
            result = asyncio.run(drive(opts, base, process.pid, url))
            if process.poll() is not None:
                result["ok"] = False
                result["problems"].append(f"server exited with {process.returncode}")
            if not result["ok"]:
                result["server_log_tail"] = log_tail(log, 2000)
    return result


def parse_args(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60, help="length of the load phase")
    p.add_argument("--accounts", type=int, default=20)
    p.add_argument("--ingesters", type=int, default=4, help="concurrent ingestion clients")
    p.add_argument("--viewers", type=int, default=20, help="concurrent dashboard viewers")
    p.add_argument("--batch", type=int, default=100, help="fresh events per batch")
    p.add_argument("--dup-rate", type=float, default=0.3,
                   help="share of batches carrying resent events")
    p.add_argument("--think-ms", type=float, default=0, help="viewer pause between queries")
    p.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    p.add_argument("--rss-growth-pct", type=float, default=25)
    p.add_argument("--rss-growth-mib", type=float, default=50)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    if not 0 < args.seconds <= MAX_SECONDS:
        p.error(f"--seconds must be in (0, {MAX_SECONDS}]: this is a bounded load test")
    for name in ("accounts", "ingesters", "viewers", "batch", "workers"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    if not 0 <= args.dup_rate <= 1:
        p.error("--dup-rate must be between 0 and 1")
    if args.accounts > 999:
        p.error("--accounts must be at most 999")
    return Options(**{k.replace("-", "_"): v for k, v in vars(args).items()})


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    result = run(opts)
    log_tail = result.pop("server_log_tail", None)
    print_table(result)
    if log_tail:
        print("--- server log tail ---\n" + log_tail)
    print(json.dumps(result, separators=(",", ":")), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

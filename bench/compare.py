"""One change measured on its own: the server of a baseline commit beside this tree's, on
one database, requests interleaved one by one.

    python -m bench.compare --baseline HEAD~1 [--candidate REV] [--events 300000]
                            [--days 30,365] [--requests 200] [--query dashboard|v2]

Builds one PostgreSQL database from ``--events`` events of the benchmark's dataset
(``bench/data.py``, folded into the cube and vacuumed as ``python -m bench`` does), then
starts two one-worker servers on it: the baseline's code (``git archive`` of
``--baseline`` into a temporary directory) and this working tree's (or, with
``--candidate``, that commit's, archived the same way). Per range, each
server gets ``--requests`` dashboard requests, alternately (A, B, B, A, ...), each
request "the last N days" ended a different number of steps earlier
(``dashboard.window``), the same ranges for both. Before timing, both servers' answers
to every range are compared: a difference aborts the run (a performance change must not
change an answer).

Reported per server and range: the server's CPU per request (its threads' run time from
``/proc/<pid>/task/*/schedstat``, read around each request; Linux only) and the
latency's p50/p99. Two servers measured in alternation see the same machine: the drift
that made separate runs of one commit differ by 20% (docs/performance.md, round 5)
falls on both alike. Each server runs with its own tree as working directory and
``PYTHONPATH`` (``python -m`` puts the working directory first on the path: a server
started elsewhere might import another tree's code).

Prints a table, then one line of JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
import io
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import dashboard
from bench.__main__ import (
    SERVER_ENV,
    database,
    http,
    ingest_and_fold,
    percentile,
    put_reference_data,
    settle,
)
from bench.data import Dataset
from bench.server import SECRET, Server
from gql_usage.auth import issue_token
from gql_usage.storage.db import run_migrations

ROOT = Path(__file__).resolve().parent.parent
QUERIES = {"dashboard": dashboard.DASHBOARD, "v2": dashboard.DASHBOARD_V2}


def cpu_ns(pid: int) -> int:
    """Run time of every thread of ``pid`` so far, in nanoseconds."""
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        with contextlib.suppress(OSError):
            total += int(Path(path).read_text().split()[0])
    return total


@contextlib.contextmanager
def commit_tree(rev: str | None) -> Iterator[Path]:
    """The package of commit ``rev`` (``gql_usage/`` only) in a temporary directory;
    this working tree when ``rev`` is None."""
    if rev is None:
        yield ROOT
        return
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev,
                              "gql_usage"], capture_output=True, check=True).stdout
    with tempfile.TemporaryDirectory(prefix="gql_usage_baseline_") as tmp:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        yield Path(tmp)


@dataclass
class Side:
    """One server under comparison and what it measured, per range."""

    name: str
    tree: Path
    server: Server | None = None
    client: httpx.AsyncClient | None = None
    cpu_ms: dict[int, list[float]] = field(default_factory=dict)
    latency_ms: dict[int, list[float]] = field(default_factory=dict)


async def post(side: Side, query: str, token: str, days: int, shift: int) -> dict[str, Any]:
    assert side.client is not None
    r = await side.client.post("/graphql", json={"query": query,
                                                 "variables": dashboard.variables(days, shift)},
                               headers={"Authorization": f"Bearer {token}"})
    body: dict[str, Any] = r.json()
    if r.status_code != 200 or body.get("errors"):
        raise RuntimeError(f"{side.name}: {r.status_code} {r.text[:500]}")
    return body


async def timed(side: Side, query: str, token: str, days: int, shift: int) -> None:
    assert side.server is not None and side.server.proc is not None
    pid = side.server.proc.pid
    before, start = cpu_ns(pid), time.perf_counter()
    await post(side, query, token, days, shift)
    side.latency_ms.setdefault(days, []).append((time.perf_counter() - start) * 1000)
    side.cpu_ms.setdefault(days, []).append((cpu_ns(pid) - before) / 1e6)


async def compare(args: argparse.Namespace, baseline: Path, candidate: Path
                  ) -> dict[str, Any]:
    data = Dataset(events=args.events, seed=7)
    query = QUERIES[args.query]
    days_list = [int(d) for d in args.days.split(",")]
    sides = [Side(f"baseline ({args.baseline})", baseline),
             Side(f"candidate ({args.candidate or 'this tree'})", candidate)]
    with database("postgres") as db:
        await run_migrations(db.url)
        loader = Server(db.url, workers=1, env=SERVER_ENV)
        async with loader.running(), http(loader.url, 8) as client:
            await put_reference_data(client, data.accounts, data.start)
            await ingest_and_fold(client, list(data.batches()), 4, db.url, db.dsn)
        await settle(db.url, db.dsn)
        token = issue_token(SECRET, data.large.users[0], data.large.external_id, 86_400)
        async with contextlib.AsyncExitStack() as stack:
            for side in sides:
                side.server = Server(db.url, workers=1, env=SERVER_ENV, source=side.tree)
                await stack.enter_async_context(side.server.running())
                side.client = await stack.enter_async_context(http(side.server.url, 2))
            for days in days_list:
                for shift in range(args.requests + 1):
                    answers = [await post(side, query, token, days, shift)
                               for side in sides]
                    if answers[0]["data"] != answers[1]["data"]:
                        raise RuntimeError(f"the two trees answer the last {days} days "
                                           f"(shift {shift}) differently")
                for shift in range(1, args.requests + 1):
                    for side in (sides if shift % 2 else sides[::-1]):
                        await timed(side, query, token, days, shift)
    return figures(args, sides, days_list)


def figures(args: argparse.Namespace, sides: list[Side], days_list: list[int]
            ) -> dict[str, Any]:
    out: dict[str, Any] = {"baseline": args.baseline, "candidate": args.candidate,
                           "events": args.events,
                           "query": args.query, "requests": args.requests, "ranges": {}}
    for days in days_list:
        base, this = ({"cpu_ms": round(statistics.mean(s.cpu_ms[days]), 2),
                       "p50_ms": round(percentile(s.latency_ms[days], 50), 2),
                       "p99_ms": round(percentile(s.latency_ms[days], 99), 2)}
                      for s in sides)
        out["ranges"][str(days)] = {
            "baseline": base, "candidate": this,
            "cpu_change": round(this["cpu_ms"] / base["cpu_ms"] - 1, 3)}
    return out


def table(result: dict[str, Any]) -> str:
    lines = [f"{'range':>6} | {'server CPU per request':>28} | {'p50':>19} | {'p99':>19}",
             f"{'':>6} | {'baseline':>9} {'candid.':>9} {'change':>8} | "
             f"{'baseline':>9} {'candid.':>9} | {'baseline':>9} {'candid.':>9}"]
    for days, r in result["ranges"].items():
        b, t = r["baseline"], r["candidate"]
        lines.append(f"{days + ' d':>6} | {b['cpu_ms']:>7.2f}ms {t['cpu_ms']:>7.2f}ms "
                     f"{r['cpu_change']:>+7.1%} | {b['p50_ms']:>7.2f}ms {t['p50_ms']:>7.2f}ms"
                     f" | {b['p99_ms']:>7.2f}ms {t['p99_ms']:>7.2f}ms")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", required=True, help="commit to compare with")
    parser.add_argument("--candidate", help="commit to measure (default: this working tree)")
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--days", default="30,365", help="ranges, comma-separated")
    parser.add_argument("--requests", type=int, default=200, help="timed, per server and range")
    parser.add_argument("--query", choices=sorted(QUERIES), default="dashboard")
    args = parser.parse_args()
    if not Path("/proc/self/task").is_dir():
        sys.exit("bench.compare reads server CPU from /proc: Linux only")
    with commit_tree(args.baseline) as baseline, commit_tree(args.candidate) as candidate:
        result = asyncio.run(compare(args, baseline, candidate))
    print(f"{args.query} page, {args.events:,} events, {args.requests} requests per server "
          f"and range, interleaved; baseline {args.baseline}, candidate "
          f"{args.candidate or 'this tree'}:")
    print(table(result))
    print(json.dumps(result))


if __name__ == "__main__":
    main()

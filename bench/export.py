"""The CSV export's memory and speed: ``GET /export/usage.csv`` streamed from a real
server, at two data sizes and two ranges, side by side.

    python -m bench.export [--sizes 200000,1000000] [--db postgres|sqlite] [--days 30,365]

Per size: a fresh database and ``gql-usage serve`` (``bench/server.py``), the benchmark's
dataset (``bench/data.py``: the large account ``bigco``, Europe/Berlin, 30 endpoints)
ingested through the service API and folded into the cube; then per range, the last N
days as HOUR buckets by ENDPOINT, streamed and counted as it arrives (the client keeps
nothing). Reported: rows, bytes, seconds, chunks, the server's RSS before the export
and its peak during it (sampled every 20 ms, plus the kernel's high-water mark). The
export's calls must add up to the account's events in the range (else the run aborts).

Prints a table, then one line of JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from bench.__main__ import database, ingest, put_reference_data, settle, wait_until_folded  # noqa: E402
from bench.data import END, Dataset  # noqa: E402
from bench.server import SECRET, Server, rss_kib  # noqa: E402
from gql_usage.auth import issue_token  # noqa: E402
from gql_usage.storage.db import run_migrations  # noqa: E402

SAMPLE_S = 0.02


async def _sample(pid: int, peak: list[int]) -> None:
    while True:
        peak[0] = max(peak[0], rss_kib(pid))
        await asyncio.sleep(SAMPLE_S)


async def export_once(client: httpx.AsyncClient, server: Server, token: str,
                      days: int) -> dict[str, Any]:
    """Stream one export; count rows, bytes and calls without keeping the body."""
    assert server.proc is not None
    params = {"from": (END - timedelta(days=days)).isoformat(), "to": END.isoformat(),
              "granularity": "HOUR", "by": "ENDPOINT", "timeZone": "Europe/Berlin"}
    before = rss_kib(server.proc.pid)
    peak = [before]
    sampler = asyncio.create_task(_sample(server.proc.pid, peak))
    rows = size = chunks = calls = 0
    tail = b""
    started = time.perf_counter()
    try:
        async with client.stream("GET", "/export/usage.csv", params=params,
                                 headers={"Authorization": f"Bearer {token}"}) as response:
            if response.status_code != 200:
                raise SystemExit(f"export failed: {response.status_code} "
                                 f"{(await response.aread())[:500]!r}")
            chunked = response.headers.get("transfer-encoding") == "chunked"
            async for chunk in response.aiter_raw():
                chunks += 1
                size += len(chunk)
                lines = (tail + chunk).split(b"\r\n")
                tail = lines.pop()
                for line in lines:  # no quoted line breaks: paths are plain
                    rows += 1
                    if rows > 1:
                        calls += int(line.rsplit(b",", 2)[1])
        seconds = time.perf_counter() - started
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    return {"days": days, "rows": rows - 1, "bytes": size, "seconds": round(seconds, 2),
            "chunks": chunks, "chunked": chunked, "calls": calls,
            "rss_before_mib": round(before / 1024, 1),
            "rss_peak_mib": round(peak[0] / 1024, 1),
            "rss_growth_mib": round((peak[0] - before) / 1024, 1)}


async def run_size(db: str, events: int, ranges: list[int], log: Any) -> dict[str, Any]:
    data = Dataset(events=events, small_accounts=20)
    bodies = list(data.batches())
    with database(db) as target:
        url, dsn = target.url, target.dsn
        await run_migrations(url)
        server = Server(url)
        limits = httpx.Limits(max_connections=4, max_keepalive_connections=4)
        async with server.running(), httpx.AsyncClient(base_url=server.url, timeout=600,
                                                       limits=limits) as client:
            await put_reference_data(client, data.accounts, data.start)
            figures = await ingest(client, bodies, 4)
            del bodies
            await wait_until_folded(url, dsn)
            await settle(url, dsn)
            log(f"{db}: {figures.accepted:,} events stored in {figures.seconds:.1f} s")
            token = issue_token(SECRET, data.large.users[0], data.large.external_id, 86_400)
            await export_once(client, server, token, 1)  # warm up (imports, caches)
            results = []
            for days in ranges:
                r = await export_once(client, server, token, days)
                log(f"  {days}-day HOUR export by ENDPOINT: {r['rows']:,} rows, "
                    f"{r['bytes']:,} bytes in {r['seconds']} s; RSS {r['rss_before_mib']} -> "
                    f"{r['rss_peak_mib']} MiB")
                results.append(r)
            high_water = rss_kib(server.proc.pid, "VmHWM") if server.proc else 0
    full = next((r for r in results if r["days"] >= data.days), None)
    if full is not None and full["calls"] != data.events:
        raise SystemExit(f"the {full['days']}-day export counts {full['calls']:,} calls; "
                         f"the account has {data.events:,} events")
    return {"db": db, "events": data.events, "exports": results,
            "server_high_water_mib": round(high_water / 1024, 1)}


def print_table(results: list[dict[str, Any]]) -> None:
    print(f"\n{'db':<9} {'events':>10} {'days':>5} {'rows':>9} {'MiB':>7} {'s':>6} "
          f"{'rows/s':>8} {'chunks':>6} {'RSS before':>10} {'RSS peak':>9} {'growth':>7}")
    for size in results:
        for r in size["exports"]:
            print(f"{size['db']:<9} {size['events']:>10,} {r['days']:>5} {r['rows']:>9,} "
                  f"{r['bytes'] / 2**20:>7.1f} {r['seconds']:>6} "
                  f"{r['rows'] / max(r['seconds'], 1e-9):>8,.0f} {r['chunks']:>6} "
                  f"{r['rss_before_mib']:>10} {r['rss_peak_mib']:>9} {r['rss_growth_mib']:>7}")


def numbers(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.export",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=numbers, default=[200_000, 1_000_000],
                        help="events of the large account, one run each")
    parser.add_argument("--days", type=numbers, default=[30, 365], help="export ranges")
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--quiet", action="store_true", help="print only the JSON line")
    args = parser.parse_args(argv)
    log = print if not args.quiet else (lambda *a, **k: None)

    async def run() -> list[dict[str, Any]]:
        return [await run_size(args.db, n, args.days, log) for n in args.sizes]

    results = asyncio.run(run())
    if not args.quiet:
        print_table(results)
    print(json.dumps({"benchmark": "export", "granularity": "HOUR", "by": "ENDPOINT",
                      "results": results,
                      "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                                 f"{platform.python_version()}"}))


if __name__ == "__main__":
    main()

"""How cost grows with data: the benchmark at several sizes, one table.

    python -m bench.growth [--postgres 100000,1000000,10000000] [--sqlite 100000,1000000]

Runs ``python -m bench --quiet`` once per size and database (each a fresh database and
server), then prints the 365-day dashboard latency and the ingest rate per size.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any


def run(db: str, events: int, runs: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench", "--db", db, "--events", str(events), "--runs",
           str(runs), "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(result), flush=True)
    return result


def sizes(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.growth")
    parser.add_argument("--postgres", type=sizes, default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--sqlite", type=sizes, default=[100_000, 1_000_000])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args(argv)
    results = [run("postgres", n, args.runs) for n in args.postgres]
    results += [run("sqlite", n, args.runs) for n in args.sqlite]
    print("\n| db | events | ingest events/s | 365-day p50 ms | p99 ms | raw SQL ms | "
          "floor SQL ms | vs raw | vs floor |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['db']} | {r['events']:,} | {r['ingest_events_per_s']:,} | "
              f"{r['graphql_p50_ms']} | {r['graphql_p99_ms']} | {r['raw_sql_ms']} | "
              f"{r['floor_sql_ms']} | {r['speedup_vs_raw']} | {r['overhead_vs_floor']} |")


if __name__ == "__main__":
    main()

"""The benchmark runs end to end at its smallest size (a smoke test: no timing asserted).

``python -m bench`` checks itself that the GraphQL answers equal the raw-SQL answers
and exits non-zero on a mismatch; here it must finish and report every figure.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIELDS = ("ingest_events_per_s", "copy_events_per_s", "graphql_p50_ms", "graphql_p99_ms",
          "raw_sql_ms", "floor_sql_ms", "speedup_vs_raw", "overhead_vs_floor",
          "statements_per_request", "requests_per_s", "server_peak_rss_mib",
          "ingest_batch_p50_ms", "ingest_batch_p99_ms", "resend_p50_ms", "resend_p99_ms",
          "dashboard_v1_p50_ms", "dashboard_v2_p50_ms", "statements_per_request_v2",
          # issue 14: compaction keeping pace (dense dataset and sparse mix), sizes
          "ingest_s", "drain_s", "ingest_folded_events_per_s", "sparse_folded_events_per_s",
          "events_rows", "events_mb", "cube_rows", "cube_mb",
          # issue 14: the mixed run (the page from many clients on 2 workers, ingesting)
          "load_workers", "load_clients", "load_requests", "load_requests_per_s",
          "load_p50_ms", "load_p99_ms", "load_ingest_target_per_s", "load_ingest_events_per_s",
          "requests_p50_ms", "requests_p99_ms",
          # issue 14, point 5: ingestion at full speed on the mixed run's workers, folded
          "load_ingest_top_events", "load_ingest_top_events_per_s",
          "load_ingest_top_accepted_per_s", "load_ingest_top_drain_s",
          "load_ingest_top_folded_events_per_s")


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_the_benchmark_runs_at_its_smallest_size(db: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--db", db, "--events", "3000", "--runs", "3",
         "--load-clients", "4", "--load-requests", "8", "--sparse-accounts", "20",
         "--sparse-events", "10", "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["db"] == db
    assert result["events"] == 3000 + 150  # the large account plus 5% in small accounts
    for name in FIELDS:
        assert name in result, name
    if db == "postgres":
        assert result["copy_events_per_s"] > 0 and result["raw_sql_ms"] > 0
    assert result["statements_per_request"] <= 6
    # Version 2's page adds the previous period and the spikes with their drivers.
    assert result["statements_per_request"] <= result["statements_per_request_v2"] <= 6
    assert result["dashboard_v2_p50_ms"] > 0 and result["dashboard_v1_p50_ms"] > 0
    assert set(result["ranges"]) == {"30", "90", "365"}
    # Sizes are of the dataset once folded (before the sparse mix), which is all stored.
    assert result["events_rows"] == 3150 and result["events_mb"] > 0
    assert result["cube_rows"] >= 0 and result["cube_mb"] >= 0
    assert result["sparse_events"] == 20 * 10
    assert result["sparse_folded_events_per_s"] > 0 and result["ingest_folded_events_per_s"] > 0
    assert result["ingest_s"] > 0 and result["drain_s"] >= 0
    assert result["load_workers"] == 2 and result["load_requests"] == 8
    assert result["load_requests_per_s"] > 0 and result["load_p99_ms"] >= result["load_p50_ms"]
    assert result["load_ingest_target_per_s"] > 0
    # The mixed dataset's first batches (half of its 3,000 events here) at full speed on 2
    # workers; the paced run is half of that accepted rate.
    assert 0 < result["load_ingest_top_events"] <= 1500
    assert result["load_ingest_events_per_s"] > 0  # the rest is the mixed run's
    assert result["load_ingest_top_folded_events_per_s"] > 0
    assert result["load_ingest_top_drain_s"] >= 0
    assert result["load_ingest_target_per_s"] == pytest.approx(
        result["load_ingest_top_accepted_per_s"] / 2, abs=1)


def test_the_store_cost_benchmark_runs_at_its_smallest_size() -> None:
    """``python -m bench.store_cost`` stores real batches (the ingest statement must
    accept them, or the run fails) and reports both costs."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.store_cost", "--batches", "3", "--preload", "2000"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    line = done.stdout.strip().splitlines()[-1]
    assert line.startswith("ingest statement ") and "ms per 1,000 events; COPY " in line
    # Batches mixing accounts, as one statement and as Citus sends them (one per account).
    for form in ([], ["--per-account"]):
        done = subprocess.run(
            [sys.executable, "-m", "bench.store_cost", "--batches", "2", "--preload", "2000",
             "--accounts", "3", *form], cwd=ROOT, capture_output=True, text=True,
            timeout=300, check=False)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
        line = done.stdout.strip().splitlines()[-1]
        assert line.startswith("ingest statement ") and line.endswith(
            "3 account(s) per batch, " + ("one statement per account" if form
                                          else "one statement")), line


def test_the_comparison_runs_at_its_smallest_size() -> None:
    """``python -m bench.compare`` starts the baseline's server (here HEAD's own code,
    from ``git archive``) beside this tree's, checks they answer alike, and reports both
    servers' CPU and latency per range."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.compare", "--baseline", "HEAD", "--events", "3000",
         "--requests", "4", "--days", "30,365"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["baseline"] == "HEAD" and result["candidate"] is None
    assert result["requests"] == 4
    assert set(result["ranges"]) == {"30", "365"}
    for figures in result["ranges"].values():
        for side in ("baseline", "candidate"):
            assert figures[side]["cpu_ms"] > 0
            assert 0 < figures[side]["p50_ms"] <= figures[side]["p99_ms"]
        assert figures["cpu_change"] == pytest.approx(
            figures["candidate"]["cpu_ms"] / figures["baseline"]["cpu_ms"] - 1, abs=0.001)

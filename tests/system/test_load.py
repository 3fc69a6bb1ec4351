"""The bounded load test (``bench/load.py``, issue 5 point 6) in its smallest size.

``python -m bench.load`` runs as a subprocess: a real uvicorn server on 127.0.0.1 over a
PostgreSQL server or a SQLite file of its own, ingestion clients and dashboard viewers of
different accounts at once. Its checks (exactly-once totals through GraphQL and through
its own SQL, no foreign ids in any answer, flat memory, no errors) make it exit non-zero;
the test asserts exit 0 and reads the JSON line it ends with. The checkers themselves
are tested on made-up answers below, so a check that could never fail would show.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import load

ROOT = Path(__file__).resolve().parents[2]
#: (--seconds, extra arguments) per backend: a few thousand events, a few hundred queries.
SIZES: dict[str, tuple[str, list[str]]] = {"postgres": ("10", []), "sqlite": ("6", [])}


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_smallest_load_run_passes_its_checks(db: str) -> None:
    seconds, extra = SIZES[db]
    argv = [sys.executable, "-m", "bench.load", "--db", db, "--seconds", seconds,
            "--accounts", "4", "--ingesters", "2", "--viewers", "6", "--batch", "50",
            "--seed", "7", *extra]
    run = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=240,
                         stdin=subprocess.DEVNULL, check=False)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    print(f"\nload[{db}]: " + json.dumps({k: result[k] for k in (
        "duration_s", "events_per_s", "queries_per_s", "routes", "rss_mib")}))
    assert result["ok"] is True
    assert all(result["checks"].values()), result["checks"]
    assert result["db"] == db and result["errors"] == {}
    assert float(seconds) <= result["duration_s"] < float(seconds) + 30
    # The ledger holds distinct events; resends were sent on top of them.
    assert result["events_acknowledged"] > 0 and result["events_resent"] > 0
    assert result["events_sent"] == result["events_acknowledged"] + result["events_resent"]
    assert set(result["routes"]) == {"ingest", "dashboard", "users"}
    for route in result["routes"].values():
        assert 0 < route["p50_ms"] <= route["p99_ms"] <= route["max_ms"]
    rss = result["rss_mib"]
    assert rss["samples"] >= int(seconds) - 1
    assert 0 < rss["start"] <= rss["peak"] and rss["end"] <= rss["peak"]
    assert rss["last_third_median"] <= rss["bound"]


def test_refuses_unbounded_runs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        load.parse_args(["--seconds", "601"])
    assert exc.value.code == 2
    assert "--seconds must be in (0, 600]" in capsys.readouterr().err
    assert load.parse_args(["--seconds", "600"]).seconds == 600


def gid(kind: str, external: str) -> str:
    return base64.b64encode(f"{kind}:{external}".encode()).decode()


def test_leak_checkers_flag_another_accounts_ids_and_names() -> None:
    own = {"account": {"id": gid("Account", "acc001"), "name": "Account acc001",
                       "apiKeys": [{"id": gid("ApiKey", "acc001-key-0"),
                                    "name": "Key acc001-key-0"}],
                       "usage": {"byKey": [{"key": gid("ApiKey", "acc001-key-2"),
                                            "label": "Key acc001-key-2"}],
                                 "byEndpoint": [{"key": "/v2/person", "label": "/v2/person"}]}}}
    assert load.foreign_marks(own, "acc001") == []
    assert load.own_ids_ok(own, "acc001") == []
    foreign_key = gid("ApiKey", "acc002-key-0")
    leaked = {"account": {"apiKeys": [{"id": foreign_key, "name": "Key x"}]}}
    assert load.foreign_marks(leaked, "acc001") == ["acc002"]
    assert load.own_ids_ok(leaked, "acc001") == [foreign_key]
    # A foreign name alone, and a foreign account id, are caught too.
    assert load.foreign_marks({"label": "User acc003-admin"}, "acc001") == ["acc003"]
    assert load.own_ids_ok({"id": gid("Account", "acc002")}, "acc001") == [
        gid("Account", "acc002")]


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert load.percentile(values, 50) == 50.0
    assert load.percentile(values, 99) == 99.0
    assert load.percentile(values, 100) == 100.0
    assert load.percentile([7.0], 99) == 7.0

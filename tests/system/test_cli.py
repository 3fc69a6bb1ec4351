"""The ``gql-usage`` command line and the demo data."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import jwt
import pytest
from support.config import BACKENDS, JWT_SECRET, SERVICE_TOKEN
from support.helpers import SERVICE, event, gql, make_account
from support.pg_server import create_database
from support.ports import free_port as _free_port
from support.serve import serve_process as _server

from gql_usage.demo import seed_demo
from gql_usage.storage.db import connection


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GQL_USAGE_")}
    return subprocess.run([sys.executable, "-m", "gql_usage.cli", *args], env={**environ, **env},
                          capture_output=True, text=True, timeout=60, check=False)


def test_a_missing_required_setting_stops_with_a_one_line_message():
    result = run_cli("serve")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "gql-usage: missing required setting GQL_USAGE_JWT_SECRET "
        "(set it in the environment, or run with --demo)"]


def test_token_prints_a_signed_jwt_with_sub_acc_and_exp():
    secret = "s" * 40
    result = run_cli("token", "--user", "u1", "--account", "acme", "--ttl", "120",
                     GQL_USAGE_JWT_SECRET=secret)
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), secret, algorithms=["HS256"])
    assert (claims["sub"], claims["acc"], claims["exp"] - claims["iat"]) == ("u1", "acme", 120)


async def test_demo_seeds_an_empty_database_once(db_url):
    info = await seed_demo(events=3000)
    again = await seed_demo(events=3000)
    assert info.seeded and not again.seeded
    # Folded, nothing pending; the cube holds exactly the events of the accounts in it
    # (the adaptive cube: smaller accounts are answered from their raw events).
    cubed = "account_id IN (SELECT account_id FROM usage_cube_account WHERE cubed = 1)"
    _, rows = await connection().execute_query(
        "SELECT (SELECT COUNT(*) FROM usage_event), (SELECT COUNT(*) FROM usage_pending), "
        f"(SELECT COUNT(*) FROM usage_event WHERE {cubed}), "
        "(SELECT COALESCE(SUM(calls), 0) FROM usage_cube WHERE grain = 900 AND dims = 0), "
        f"(SELECT COALESCE(SUM(credits), 0) FROM usage_event WHERE {cubed}), "
        "(SELECT COALESCE(SUM(credits), 0) FROM usage_cube WHERE grain = 86400 AND dims = 1)")
    events, pending, cubed_events, calls, raw_credits, rollup_credits = (
        int(v) for v in rows[0])
    assert events >= 3000 and pending == 0
    assert cubed_events == calls and raw_credits == rollup_credits
    tokens = info.tokens("x" * 40)
    assert set(tokens) == {"paid_admin", "member", "free_admin"}


def test_serve_refuses_a_worker_count_below_one():
    result = run_cli("serve", "--workers", "0")
    assert result.returncode == 2
    assert "argument --workers: must be a whole number >= 1, got '0'" in result.stderr


_serve_dbs = itertools.count()
#: Longest wait for ``serve`` to answer /readyz (three interpreters start on 2 cores).
SERVE_START_TIMEOUT_S = 60


@pytest.fixture(params=BACKENDS)
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database that exists but has no tables yet (``serve`` must migrate it)."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'serve.sqlite3'}"
    return create_database(request.getfixturevalue("pg_base_url"),
                           f"serve_{os.getpid()}_{next(_serve_dbs)}")


def _read(log: Path) -> str:
    return log.read_text(errors="replace")


async def _wait_ready(client: httpx.AsyncClient, proc: subprocess.Popen[bytes],
                      log: Path) -> None:
    deadline = time.monotonic() + SERVE_START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"serve exited ({proc.returncode}):\n{_read(log)}"
        status = None
        with contextlib.suppress(httpx.TransportError):
            status = (await client.get("/readyz")).status_code
        if status == 200:
            return
        assert status in (None, 503), f"/readyz answered {status}:\n{_read(log)}"
        await asyncio.sleep(0.2)
    raise AssertionError(f"serve not ready in {SERVE_START_TIMEOUT_S} s:\n{_read(log)}")


async def test_serve_with_two_workers_migrates_then_answers(empty_db_url, tmp_path):
    """Production command: the parent migrates the empty database once, two uvicorn worker
    processes (app factory, no migrations of their own) answer the service API and GraphQL,
    and with --proxy-headers the client address comes from a trusted X-Forwarded-For."""
    port, log = _free_port(), tmp_path / "serve.log"
    with _server("--workers", "2", "--host", "127.0.0.1", "--port", str(port),
                 "--proxy-headers", "--forwarded-allow-ips", "127.0.0.1", log=log,
                 GQL_USAGE_DATABASE_URL=empty_db_url, GQL_USAGE_JWT_SECRET=JWT_SECRET,
                 GQL_USAGE_SERVICE_TOKEN=SERVICE_TOKEN) as proc:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            await _wait_ready(c, proc, log)
            await make_account(c, "acme", users=[("admin", "ADMIN")], keys=["k1"])
            t = datetime(2026, 1, 5, 10, 7, tzinfo=UTC)
            # Posted directly: helpers.ingest also compacts in this process's Tortoise.
            response = await c.post("/v1/usage-events", headers=SERVICE, json=[
                event("e1", "acme", "k1", "admin", "/v2/person", "api", 3, t),
                event("e2", "acme", "k1", "admin", "/v2/company", "api", 4, t),
                event("e3", "acme", "k1", "admin", "/v2/person", "salesforce", 0, t)])
            assert response.json() == {"accepted": 3, "duplicates": 0, "rejected": []}
            body = await gql(c, """{ account { usage(filter: {from: "2026-01-01T00:00:00Z",
                to: "2026-02-01T00:00:00Z"}) { calls credits } } }""")
            assert body == {"data": {"account": {"usage": {"calls": 3, "credits": 7}}}}
            forwarded = await c.get("/healthz", headers={"X-Forwarded-For": "203.0.113.7"})
            assert forwarded.status_code == 200
    output = _read(log)
    workers = set(re.findall(r"Started server process \[(\d+)\]", output))
    assert len(workers) == 2, output
    assert "203.0.113.7" in output, output

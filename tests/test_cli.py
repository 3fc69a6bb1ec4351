"""The ``gql-usage`` command line and the demo data."""

from __future__ import annotations

import os
import subprocess
import sys

import jwt

from gql_usage.db import connection
from gql_usage.demo import seed_demo


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
    _, rows = await connection().execute_query(
        "SELECT (SELECT COUNT(*) FROM usage_event), (SELECT SUM(calls) FROM usage_rollup), "
        "(SELECT SUM(credits) FROM usage_event), (SELECT SUM(credits) FROM usage_rollup)")
    events, calls, raw_credits, rollup_credits = (int(v) for v in rows[0])
    assert events == calls >= 3000
    assert raw_credits == rollup_credits
    tokens = info.tokens("x" * 40)
    assert set(tokens) == {"paid_admin", "member", "free_admin"}

"""docs/access-tokens.md works as written: its GraphQL blocks create, list and revoke a
token, and its Python and JavaScript (Node 20) examples, run as they are against a real
``gql-usage serve``, print the numbers of the events ingested here."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.helpers import SERVICE, event, gid, token
from support.serve import ROOT, served

DOC = ROOT / "docs" / "access-tokens.md"
#: (id, account, api key, user, endpoint, source, credits, occurred at)
EVENTS = [
    ("e1", "acme", "k1", "boss", "/v2/person", "api", 30, "2026-01-05T10:00:00Z"),
    ("e2", "acme", "k1", "boss", "/v2/company", "api", 10, "2026-01-06T10:00:00Z"),
    ("e3", "acme", "k1", "boss", "/v2/person", "api", 20, "2026-01-07T10:00:00Z"),
    ("e4", "acme", "k1", "boss", "/v2/person", "api", 99, "2026-02-07T10:00:00Z"),  # out
]
#: What both examples print: January's 3 calls and 60 credits, by endpoint.
EXPECTED = ["3 calls, 60 credits", "  /v2/person: 50 credits (83.3%)",
            "  /v2/company: 10 credits (16.7%)"]


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def run(command: list[str], server_url: str, secret: str, cwd: Path, status: int = 0
        ) -> list[str]:
    env = {**os.environ, "GQL_USAGE_URL": server_url, "GQL_USAGE_TOKEN": secret}
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == status, done.stderr
    return done.stdout.splitlines()


async def graphql(client: httpx.AsyncClient, bearer: str, query: str) -> dict[str, Any]:
    response = await client.post("/graphql", json={"query": query},
                                 headers={"Authorization": f"Bearer {bearer}"})
    body: dict[str, Any] = response.json()
    return body


async def test_the_documented_examples_work(db_url: str, tmp_path: Path) -> None:
    graphql_blocks = blocks("graphql")
    assert len(graphql_blocks) == 3
    create, listing, revoke = graphql_blocks
    async with served(db_url, tmp_path) as server, httpx.AsyncClient(
            base_url=server.base_url, timeout=30) as client:
        for path, body in (
                ("/v1/accounts/acme", {"name": "Acme", "plan": "PRO", "timeZone": "UTC",
                                       "creditsGranted": 1000,
                                       "periodStart": "2026-01-01T00:00:00Z",
                                       "periodEnd": "2026-02-01T00:00:00Z"}),
                ("/v1/accounts/acme/users/boss", {"name": "Boss", "email": "b@acme.example",
                                                  "role": "ADMIN"}),
                ("/v1/accounts/acme/api-keys/k1", {"name": "Key", "prefix": "pk",
                                                   "createdBy": "boss",
                                                   "createdAt": "2025-01-01T00:00:00Z"})):
            assert (await client.put(path, json=body, headers=SERVICE)).status_code == 201
        ingested = await client.post("/v1/usage-events", headers=SERVICE,
                                     json=[event(*e) for e in EVENTS])
        assert ingested.json()["accepted"] == 4
        admin = token("boss", "acme")

        made = await graphql(client, admin, create)
        assert "errors" not in made, made
        secret = made["data"]["createAccessToken"]["token"]
        assert made["data"]["createAccessToken"]["accessToken"]["name"] == "Acme BI dashboard"

        python = tmp_path / "usage.py"
        python.write_text(blocks("python")[0])
        assert run([sys.executable, str(python)], server.base_url, secret, tmp_path) == EXPECTED
        node = shutil.which("node")
        if node is None:  # pragma: no cover - Node 20 is installed where the suite runs
            pytest.skip("node is not installed")
        script = tmp_path / "usage.mjs"
        script.write_text(blocks("javascript")[0])
        assert run([node, str(script)], server.base_url, secret, tmp_path) == EXPECTED

        listed = await graphql(client, admin, listing)
        tokens = listed["data"]["account"]["accessTokens"]
        assert [(t["name"], t["createdBy"], t["revokedAt"]) for t in tokens] == [
            ("Acme BI dashboard", {"name": "Boss"}, None)]
        assert tokens[0]["lastUsedAt"] is not None  # the examples used it

        # The revoke block, with the listed id in place of the example's.
        revoked = await graphql(client, admin, re.sub(r'id: "[^"]*"',
                                                      f'id: "{tokens[0]["id"]}"', revoke))
        assert revoked["data"]["revokeAccessToken"]["id"] == tokens[0]["id"]
        refused = run([sys.executable, str(python)], server.base_url, secret, tmp_path, 1)
        assert refused[0].startswith("error: UNAUTHENTICATED access token gqlu_"), refused
        assert gid("AccessToken", "x").startswith("QWNjZXNzVG9rZW46")  # as the doc shows

"""Test helpers: reference data through the service API, events, GraphQL calls."""

from __future__ import annotations

import base64
import itertools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import httpx

from gql_usage.auth import issue_token
from gql_usage.storage.cube import compact_all
from support.config import JWT_SECRET, SERVICE_TOKEN

SERVICE = {"Authorization": f"Bearer {SERVICE_TOKEN}"}


def gid(type_name: str, external_id: str) -> str:
    return base64.b64encode(f"{type_name}:{external_id}".encode()).decode()


async def put(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> httpx.Response:
    response = await client.put(path, json=body, headers=SERVICE)
    assert response.status_code in (200, 201), response.text
    return response


async def make_account(client: httpx.AsyncClient, account: str, *, plan: str = "PRO",
                       time_zone: str = "UTC", users: Sequence[tuple[str, str]] = (),
                       keys: Sequence[str] = (), granted: int = 1000,
                       period: tuple[str, str] = ("2026-01-01T00:00:00Z",
                                                  "2026-02-01T00:00:00Z")) -> None:
    """An account with ``users`` [(id, role)] and ``keys`` (created by the first user)."""
    await put(client, f"/v1/accounts/{account}", {
        "name": f"Account {account}", "plan": plan, "timeZone": time_zone,
        "creditsGranted": granted, "periodStart": period[0], "periodEnd": period[1]})
    for user, role in users:
        await put(client, f"/v1/accounts/{account}/users/{user}", {
            "name": f"User {user}", "email": f"{user}@{account}.example", "role": role})
    for key in keys:
        await put(client, f"/v1/accounts/{account}/api-keys/{key}", {
            "name": f"Key {key}", "prefix": f"pk_{key[:6]}",
            "createdBy": users[0][0] if users else None,
            "createdAt": "2025-06-01T00:00:00Z", "revokedAt": None})


async def add_keys(client: httpx.AsyncClient, account: str, keys: Sequence[str], *,
                   created_by: str = "admin") -> None:
    """New API keys of ``account`` (each must be created: 201), named after their ids."""
    for key in keys:
        response = await client.put(f"/v1/accounts/{account}/api-keys/{key}", headers=SERVICE,
                                    json={"name": key, "prefix": "pk", "createdBy": created_by,
                                          "createdAt": "2025-01-01T00:00:00Z"})
        assert response.status_code == 201, response.text


def event(event_id: str, account: str, key: str, user: str, endpoint: str, source: str,
          credits: int, occurred: datetime | str) -> dict[str, Any]:
    return {"id": event_id, "accountId": account, "apiKeyId": key, "userId": user,
            "endpoint": endpoint, "source": source, "credits": credits,
            "occurredAt": occurred if isinstance(occurred, str) else occurred.isoformat()}


_ingest_calls = itertools.count()


async def ingest(client: httpx.AsyncClient, events: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Post a batch. Every other call then folds the pending events into the cube, so
    the tests' questions are answered from cube rows, pending events and raw events
    mixed (the server's background compactor does not run in-process; a server in
    another process compacts on its own)."""
    response = await client.post("/v1/usage-events", json=list(events), headers=SERVICE)
    assert response.status_code == 200, response.text
    in_process = isinstance(client._transport, httpx.ASGITransport)
    if in_process and next(_ingest_calls) % 2:
        await compact_all(cube_after_events=0)
    return response.json()


def token(user: str, account: str, ttl: int = 86_400) -> str:
    """A user's JWT. A day by default: a token made at import (a module constant) must
    outlive a whole run on a slow machine (600 s did not: one run took 21 minutes)."""
    return issue_token(JWT_SECRET, user, account, ttl)


async def gql(client: httpx.AsyncClient, query: str, variables: dict[str, Any] | None = None,
              *, user: str = "admin", account: str = "acme",
              bearer: str | None = None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {bearer or token(user, account)}"}
    response = await client.post("/graphql", json={"query": query, "variables": variables or {}},
                                 headers=headers)
    return response.json()

"""Service API: reference-data upserts and event ingestion, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from support.helpers import SERVICE, event, ingest, make_account

from gql_usage.alerts.record import SQLITE_ALERT_STATEMENTS
from gql_usage.storage.cube import compact_all
from gql_usage.storage.db import StatementCounter, connection, dialect

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


async def _setup(client):
    await make_account(client, "acme", users=[("admin", "ADMIN"), ("bob", "MEMBER")],
                       keys=["k1", "k2"])


async def _stored(sql: str) -> list[tuple]:
    _, rows = await connection().execute_query(sql)
    return [tuple(r) for r in rows]


async def test_reference_upserts_are_idempotent(client):
    body = {"name": "Acme", "plan": "PRO", "timeZone": "Europe/Berlin", "creditsGranted": 10,
            "periodStart": "2026-01-01T00:00:00Z", "periodEnd": "2026-02-01T00:00:00Z"}
    first = await client.put("/v1/accounts/acme", json=body, headers=SERVICE)
    again = await client.put("/v1/accounts/acme", json=body, headers=SERVICE)
    renamed = await client.put("/v1/accounts/acme", json={**body, "name": "Acme 2"},
                               headers=SERVICE)
    assert (first.status_code, again.status_code, renamed.status_code) == (201, 200, 200)
    assert await _stored("SELECT external_id, name, time_zone FROM account") == [
        ("acme", "Acme 2", "Europe/Berlin")]


async def test_reference_upserts_reject_bad_input_naming_the_field(client):
    bad_zone = await client.put("/v1/accounts/acme", headers=SERVICE, json={
        "name": "A", "plan": "PRO", "timeZone": "Mars/Olympus", "creditsGranted": 1,
        "periodStart": "2026-01-01T00:00:00Z", "periodEnd": "2026-02-01T00:00:00Z"})
    assert bad_zone.status_code == 422 and "timeZone" in bad_zone.json()["error"]
    bad_plan = await client.put("/v1/accounts/acme", headers=SERVICE, json={
        "name": "A", "plan": "GOLD", "periodStart": "2026-01-01T00:00:00Z",
        "periodEnd": "2026-02-01T00:00:00Z"})
    assert bad_plan.status_code == 422 and "plan" in bad_plan.json()["error"]
    no_account = await client.put("/v1/accounts/nope/users/u", headers=SERVICE,
                                  json={"name": "U", "email": "u@x.io", "role": "ADMIN"})
    assert no_account.status_code == 404


async def test_service_api_requires_the_service_token(client):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
        response = await client.post("/v1/usage-events", json=[], headers=headers)
        assert response.status_code == 401
        response = await client.put("/v1/accounts/a", json={}, headers=headers)
        assert response.status_code == 401


async def test_each_bad_event_is_rejected_with_a_reason_and_neighbours_are_kept(client):
    await _setup(client)
    good = event("ok-1", "acme", "k1", "admin", "/v2/person", "api", 2, T0)
    batch = [
        good,
        {**good, "id": "x1", "accountId": "ghost"},
        {**good, "id": "x2", "apiKeyId": "nokey"},
        {**good, "id": "x3", "userId": "nouser"},
        {**good, "id": "x4", "credits": -1},
        {**good, "id": "x5", "credits": 1.5},
        {**good, "id": "x6", "credits": True},
        {**good, "id": "x7", "occurredAt": "2026-01-05T10:00:00"},
        {**good, "id": "x8", "occurredAt": "yesterday"},
        {k: v for k, v in good.items() if k != "endpoint"} | {"id": "x9"},
        "not an object",
        {**good, "id": "x10", "occurredAt": (datetime.now(UTC) + timedelta(hours=1)).isoformat()},
        event("ok-2", "acme", "k2", "bob", "/v2/company", "salesforce", 0, T0),
    ]
    result = await ingest(client, batch)
    assert result["accepted"] == 2 and result["duplicates"] == 0
    reasons = {r["index"]: r["reason"] for r in result["rejected"]}
    assert sorted(reasons) == list(range(1, 12))
    expected_words = {1: "accountId", 2: "apiKeyId", 3: "userId", 4: "credits", 5: "credits",
                      6: "credits", 7: "occurredAt", 8: "occurredAt", 9: "endpoint",
                      10: "object", 11: "future"}
    for index, word in expected_words.items():
        assert word in reasons[index], (index, reasons[index])
    assert await _stored("SELECT event_id, credits FROM usage_event ORDER BY event_id") == [
        ("ok-1", 2), ("ok-2", 0)]


async def test_blank_and_nul_texts_are_rejected_by_name(client):
    """Blank ids and NUL characters (which no database stores in text) cost only their
    own event, in a JSON array as in NDJSON."""
    await _setup(client)
    good = event("ok-1", "acme", "k1", "admin", "/v2/person", "api", 2, T0)
    batch = [
        good,
        {**good, "id": " \t "},
        {**good, "id": "n\x00l"},
        {**good, "id": "x2", "endpoint": "/v2/\x00", "source": "a\x00pi"},
        {**good, "id": "x3", "source": "\u2003"},  # an em space is blank too
        event("ok-2", "acme", "k2", "bob", "/v2/company", "salesforce", 0, T0),
    ]
    for content_type, body in (
            ("application/json", json.dumps(batch)),
            ("application/x-ndjson", "\n".join(json.dumps(e) for e in batch))):
        r = await client.post("/v1/usage-events", content=body, headers={
            **SERVICE, "Content-Type": content_type})
        assert r.status_code == 200, r.text
        reasons = {x["index"]: x["reason"] for x in r.json()["rejected"]}
        assert reasons == {
            1: "id: must not be blank",
            2: "id: must not contain NUL (\\u0000) characters",
            3: "endpoint: must not contain NUL (\\u0000) characters; source: must not "
               "contain NUL (\\u0000) characters",
            4: "source: must not be blank",
        }, content_type
    assert await _stored("SELECT event_id FROM usage_event ORDER BY event_id") == [
        ("ok-1",), ("ok-2",)]


async def test_duplicates_are_counted_once_and_conflicts_keep_the_first(client):
    await _setup(client)
    e1 = event("e1", "acme", "k1", "admin", "/v2/person", "api", 5, T0)
    e2 = event("e2", "acme", "k1", "admin", "/v2/person", "api", 7, T0)
    assert await ingest(client, [e1, e1, e2]) == {"accepted": 2, "duplicates": 1,
                                                  "rejected": []}
    changed = {**e1, "credits": 500}
    again = await ingest(client, [e1, changed, e2])
    assert again["accepted"] == 0 and again["duplicates"] == 2
    assert [r["index"] for r in again["rejected"]] == [1]
    assert "different content" in again["rejected"][0]["reason"]
    await compact_all(cube_after_events=0)
    assert await _stored("SELECT SUM(calls), SUM(credits) FROM usage_cube "
                         "WHERE grain = 86400 AND dims = 0") == [(2, 12)]


async def test_ndjson_batches_reject_only_the_broken_line(client):
    await _setup(client)
    lines = [json.dumps(event("n1", "acme", "k1", "admin", "/v2/person", "api", 1, T0)),
             "{not json",
             json.dumps(event("n2", "acme", "k1", "admin", "/v2/person", "api", 1, T0))]
    response = await client.post("/v1/usage-events", content="\n".join(lines).encode(),
                                 headers={**SERVICE, "Content-Type": "application/x-ndjson"})
    body = response.json()
    assert body["accepted"] == 2 and [r["index"] for r in body["rejected"]] == [1]


async def test_malformed_and_oversized_bodies(client):
    response = await client.post("/v1/usage-events", content=b"[{", headers=SERVICE)
    assert response.status_code == 400 and "JSON" in response.json()["error"]
    response = await client.post("/v1/usage-events", content=b"x" * (11 * 1024 * 1024),
                                 headers=SERVICE)
    assert response.status_code == 413


async def test_unknown_endpoints_and_sources_join_the_catalogue(client):
    await _setup(client)
    await ingest(client, [event("c1", "acme", "k1", "admin", "/v3/brand-new", "zapier", 1, T0)])
    assert await _stored("SELECT path FROM endpoint") == [("/v3/brand-new",)]
    assert await _stored("SELECT key, name FROM source") == [("zapier", "Zapier")]


async def test_a_batch_of_1000_events_costs_a_handful_of_statements(client):
    await _setup(client)
    batch = [event(f"b{i}", "acme", f"k{1 + i % 2}", ("admin", "bob")[i % 2],
                   f"/v2/e{i % 7}", ("api", "hubspot")[i % 2], i % 5,
                   T0 + timedelta(minutes=i)) for i in range(1000)]
    with StatementCounter() as counter:
        result = await post(client, batch)
    assert result["accepted"] == 1000
    # accounts, keys, users, endpoints (select, insert, select), sources (3),
    # account_endpoint, account_source, then the events (and their pending copies): one
    # statement on PostgreSQL, on SQLite two per 1,000 events
    print(f"1000-event batch, cold: {counter.count} statements")
    assert counter.count <= 12 + cube_statements(batch), counter.statements
    with StatementCounter() as warm:
        result = await post(client, [{**e, "id": "w" + e["id"]} for e in batch])
    assert result["accepted"] == 1000
    print(f"1000-event batch, warm: {warm.count} statements")
    # every id is cached now: only the storing statement(s) remain
    assert warm.count == cube_statements(batch), warm.statements


async def post(client, events: list[dict]) -> dict:
    """The batch through the service API, without the test helper's compaction."""
    response = await client.post("/v1/usage-events", json=events, headers=SERVICE)
    assert response.status_code == 200, response.text
    return response.json()


def cube_statements(batch: list[dict]) -> int:
    """Statements that store a batch: 1 on PostgreSQL (keys' last use and alert totals
    included); on SQLite the events and their pending copies, 1,000 rows per statement
    each, the keys' last use (one), then the alert bookkeeping of events in the current
    period (``gql_usage.alerts.record``: account settings, key budgets, running totals,
    alerts), whatever the batch's size."""
    if dialect() == "postgres":
        return 1
    return 2 * -(-len(batch) // 1000) + 1 + SQLITE_ALERT_STATEMENTS


async def test_nul_characters_in_reference_data_are_refused_by_name(client):
    """No database stores NUL in text (PostgreSQL refuses it, SQLite would keep it): a
    422 naming the field or path id, and nothing stored."""
    period = {"periodStart": "2026-01-01T00:00:00Z", "periodEnd": "2026-02-01T00:00:00Z"}
    response = await client.put("/v1/accounts/acme", headers=SERVICE,
                                json={"name": "Ac\x00me", "plan": "PRO", **period})
    assert response.status_code == 422
    assert response.json()["error"] == "name: must not contain NUL (\\u0000) characters"
    response = await client.put("/v1/accounts/ac%00me", headers=SERVICE,
                                json={"name": "Acme", "plan": "PRO", **period})
    assert response.status_code == 422
    assert response.json()["error"] == "accountId: must not contain NUL (\\u0000) characters"
    assert await _stored("SELECT COUNT(*) FROM account") == [(0,)]

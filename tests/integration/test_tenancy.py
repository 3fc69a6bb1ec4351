"""Tenancy: no request ever sees another account's data (SPEC section 3).

Two paid accounts, ``acme`` (A) and ``beta`` (B), with their own users, keys and events.
Both have an API key whose external id is ``default``: ids are unique per account only,
so the viewer's account decides which one an id means. Every request below is made as
the admin of A, unless it says otherwise; the expected numbers are computed from the
events this module ingests.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from support.helpers import event, gid, gql, ingest, make_account

pytestmark = pytest.mark.citus

RANGE = 'from: "2026-01-01T00:00:00Z", to: "2026-02-01T00:00:00Z"'

#: (id, account, api key, user, endpoint, source, credits, occurred at)
A_EVENTS = [
    ("a1", "acme", "a_k1", "a_admin", "/v2/person", "api", 3, "2026-01-05T10:00:00Z"),
    ("a2", "acme", "default", "a_user", "/v2/company", "chrome_extension", 7,
     "2026-01-06T10:00:00Z"),
    ("a3", "acme", "a_k1", "a_user", "/v2/person", "salesforce", 2, "2026-01-07T10:00:00Z"),
]
B_EVENTS = [
    ("b1", "beta", "b_k1", "b_admin", "/v2/person", "api", 100, "2026-01-05T10:00:00Z"),
    ("b2", "beta", "default", "b_user", "/beta/only-path", "beta_source", 50,
     "2026-01-06T10:00:00Z"),
    ("b3", "beta", "default", "b_admin", "/v2/company", "chrome_extension", 20,
     "2026-01-08T10:00:00Z"),
]
# The event id "a1" exists in B too: idempotency keys are unique per account only.
B_EVENTS.append(("a1", "beta", "b_k1", "b_user", "/v2/person", "salesforce", 400,
                 "2026-01-07T10:00:00Z"))

B_NAMES = ["User b_admin", "User b_user", "Key b_k1", "Account beta", "beta_source",
           "Beta source", "/beta/only-path"]


def totals(events: list[tuple[Any, ...]], **where: Any) -> dict[str, int]:
    """Calls and credits of the events whose key/user/endpoint/source is in ``where``."""
    columns = {"key": 2, "user": 3, "endpoint": 4, "source": 5}
    chosen = [e for e in events
              if all(e[columns[k]] in values for k, values in where.items())]
    return {"calls": len(chosen), "credits": sum(e[6] for e in chosen)}


@pytest.fixture
async def two_accounts(client: httpx.AsyncClient) -> httpx.AsyncClient:
    await make_account(client, "acme", users=[("a_admin", "ADMIN"), ("a_user", "MEMBER")],
                       keys=["a_k1", "default"])
    await make_account(client, "beta", plan="PREMIUM",
                       users=[("b_admin", "ADMIN"), ("b_user", "MEMBER")],
                       keys=["b_k1", "default"])
    result = await ingest(client, [event(*e) for e in A_EVENTS + B_EVENTS])
    assert result == {"accepted": 7, "duplicates": 0, "rejected": []}
    return client


async def as_a(client: httpx.AsyncClient, query: str) -> dict[str, Any]:
    body = await gql(client, query, user="a_admin", account="acme")
    assert "errors" not in body, body
    return body["data"]


def report(filter_extra: str = "") -> str:
    """Totals, a weekly series and all four breakdowns for one filter."""
    return f"""{{ account {{ usage(filter: {{{RANGE} {filter_extra}}}) {{
        calls credits series(granularity: WEEK) {{ calls credits }}
        byKey: breakdown(by: API_KEY) {{ key label calls credits }}
        byUser: breakdown(by: USER) {{ key label calls credits }}
        byEndpoint: breakdown(by: ENDPOINT) {{ key calls credits }}
        bySource: breakdown(by: SOURCE) {{ key calls credits }} }} }} }}"""


def ids(type_name: str, *external: str) -> str:
    return json.dumps([gid(type_name, e) for e in external])


def assert_nothing_of_b(data: dict[str, Any]) -> None:
    text = json.dumps(data)
    for name in B_NAMES:
        assert name not in text, name
    for type_name, external in (("ApiKey", "b_k1"), ("User", "b_admin"), ("User", "b_user")):
        assert gid(type_name, external) not in text


@pytest.mark.parametrize("filter_extra", [
    f"apiKeyIds: {ids('ApiKey', 'b_k1')}",
    f"userIds: {ids('User', 'b_admin', 'b_user')}",
    f"apiKeyIds: {ids('ApiKey', 'b_k1')}, userIds: {ids('User', 'b_admin')}",
], ids=["B's key", "B's users", "B's key and user"])
async def test_other_accounts_ids_match_nothing(two_accounts, filter_extra):
    """Filtering by B's key or user ids counts nothing: zeros, zero-filled buckets,
    empty breakdowns (never B's numbers, never an error)."""
    usage = (await as_a(two_accounts, report(filter_extra)))["account"]["usage"]
    assert (usage["calls"], usage["credits"]) == (0, 0)
    assert len(usage["series"]) == 5  # Jan 2026 spans five ISO weeks, clipped
    assert all(b == {"calls": 0, "credits": 0} for b in usage["series"])
    assert (usage["byKey"], usage["byUser"], usage["byEndpoint"], usage["bySource"]) == (
        [], [], [], [])


async def test_mixing_own_and_other_accounts_key_ids_counts_only_own(two_accounts):
    usage = (await as_a(two_accounts, report(
        f"apiKeyIds: {ids('ApiKey', 'a_k1', 'b_k1')}")))["account"]["usage"]
    expected = totals(A_EVENTS, key={"a_k1"})
    assert {"calls": usage["calls"], "credits": usage["credits"]} == expected == {
        "calls": 2, "credits": 5}
    assert usage["byKey"] == [{"key": gid("ApiKey", "a_k1"), "label": "Key a_k1", **expected}]
    assert_nothing_of_b(usage)


async def test_mixing_own_and_other_accounts_user_ids_counts_only_own(two_accounts):
    usage = (await as_a(two_accounts, report(
        f"userIds: {ids('User', 'a_user', 'b_admin', 'b_user')}")))["account"]["usage"]
    expected = totals(A_EVENTS, user={"a_user"})
    assert {"calls": usage["calls"], "credits": usage["credits"]} == expected == {
        "calls": 2, "credits": 9}
    assert usage["byUser"] == [{"key": gid("User", "a_user"), "label": "User a_user",
                                **expected}]
    assert_nothing_of_b(usage)


async def test_same_external_key_id_in_both_accounts_means_the_viewers(two_accounts):
    """Both accounts have a key ``default``; as A, its id counts A's ``default`` only,
    and as B the same id counts B's."""
    query = report(f"apiKeyIds: {ids('ApiKey', 'default')}")
    a = (await as_a(two_accounts, query))["account"]["usage"]
    assert {"calls": a["calls"], "credits": a["credits"]} == totals(
        A_EVENTS, key={"default"}) == {"calls": 1, "credits": 7}
    b = await gql(two_accounts, query, user="b_admin", account="beta")
    usage = b["data"]["account"]["usage"]
    assert {"calls": usage["calls"], "credits": usage["credits"]} == totals(
        B_EVENTS, key={"default"}) == {"calls": 2, "credits": 70}


async def test_unfiltered_report_counts_only_the_viewers_account(two_accounts):
    """Breakdowns by every dimension list A's keys, users, endpoints and sources only,
    with A's numbers (B used /v2/person and /v2/company too, with far more credits)."""
    usage = (await as_a(two_accounts, report()))["account"]["usage"]
    assert {"calls": usage["calls"], "credits": usage["credits"]} == totals(A_EVENTS) == {
        "calls": 3, "credits": 12}
    assert usage["byKey"] == [
        {"key": gid("ApiKey", "default"), "label": "Key default",
         **totals(A_EVENTS, key={"default"})},
        {"key": gid("ApiKey", "a_k1"), "label": "Key a_k1", **totals(A_EVENTS, key={"a_k1"})},
    ]
    assert usage["byUser"] == [
        {"key": gid("User", "a_user"), "label": "User a_user",
         **totals(A_EVENTS, user={"a_user"})},
        {"key": gid("User", "a_admin"), "label": "User a_admin",
         **totals(A_EVENTS, user={"a_admin"})},
    ]
    assert usage["byEndpoint"] == [
        {"key": "/v2/company", **totals(A_EVENTS, endpoint={"/v2/company"})},
        {"key": "/v2/person", **totals(A_EVENTS, endpoint={"/v2/person"})},
    ]
    assert usage["bySource"] == [
        {"key": "chrome_extension", **totals(A_EVENTS, source={"chrome_extension"})},
        {"key": "api", **totals(A_EVENTS, source={"api"})},
        {"key": "salesforce", **totals(A_EVENTS, source={"salesforce"})},
    ]
    assert_nothing_of_b(usage)


@pytest.mark.parametrize(("filter_extra", "where"), [
    ('endpoints: ["/v2/person"]', {"endpoint": {"/v2/person"}}),
    ('endpoints: ["/v2/company", "/v2/person"]',
     {"endpoint": {"/v2/company", "/v2/person"}}),
    ('endpoints: ["/beta/only-path"]', {"endpoint": {"/beta/only-path"}}),
    ('sources: ["api"]', {"source": {"api"}}),
    ('sources: ["chrome_extension", "beta_source"]',
     {"source": {"chrome_extension", "beta_source"}}),
    ('sources: ["beta_source"]', {"source": {"beta_source"}}),
], ids=["shared endpoint", "two shared endpoints", "B-only endpoint", "shared source",
        "shared and B-only source", "B-only source"])
async def test_endpoint_and_source_filters_count_only_own_events(two_accounts, filter_extra,
                                                                 where):
    """Endpoints and sources are a catalogue shared by all accounts, but a filter on
    them still counts only the viewer's events."""
    usage = (await as_a(two_accounts, report(filter_extra)))["account"]["usage"]
    expected = totals(A_EVENTS, **where)
    assert {"calls": usage["calls"], "credits": usage["credits"]} == expected
    assert sum(b["credits"] for b in usage["series"]) == expected["credits"]
    assert sum(r["credits"] for r in usage["byEndpoint"]) == expected["credits"]
    assert_nothing_of_b(usage)


async def test_node_resolves_own_objects_and_hides_other_accounts(two_accounts):
    """``node(id:)`` answers A's key, user and account; B's are null (not an error,
    nothing revealed)."""
    data = await as_a(two_accounts, f"""{{
        ownKey: node(id: "{gid('ApiKey', 'a_k1')}") {{ id ... on ApiKey {{ name }} }}
        ownUser: node(id: "{gid('User', 'a_user')}") {{ id ... on User {{ name }} }}
        ownAccount: node(id: "{gid('Account', 'acme')}") {{ id ... on Account {{ name }} }}
        sharedKeyId: node(id: "{gid('ApiKey', 'default')}") {{ ... on ApiKey {{ name }} }}
        otherKey: node(id: "{gid('ApiKey', 'b_k1')}") {{ id }}
        otherUser: node(id: "{gid('User', 'b_admin')}") {{ id }}
        otherAccount: node(id: "{gid('Account', 'beta')}") {{ id }}
        unknown: node(id: "{gid('ApiKey', 'nope')}") {{ id }} }}""")
    assert data == {
        "ownKey": {"id": gid("ApiKey", "a_k1"), "name": "Key a_k1"},
        "ownUser": {"id": gid("User", "a_user"), "name": "User a_user"},
        "ownAccount": {"id": gid("Account", "acme"), "name": "Account acme"},
        "sharedKeyId": {"name": "Key default"},
        "otherKey": None, "otherUser": None, "otherAccount": None, "unknown": None,
    }


async def test_account_lists_only_own_endpoints_and_sources(two_accounts):
    """A path and a source first seen in B's events are not listed for A; A's are."""
    data = await as_a(two_accounts, "{ account { endpoints { path } sources { key name } } }")
    assert [e["path"] for e in data["account"]["endpoints"]] == ["/v2/company", "/v2/person"]
    assert [s["key"] for s in data["account"]["sources"]] == [
        "api", "chrome_extension", "salesforce"]
    b = await gql(two_accounts, "{ account { endpoints { path } sources { key } } }",
                  user="b_admin", account="beta")
    assert [e["path"] for e in b["data"]["account"]["endpoints"]] == [
        "/beta/only-path", "/v2/company", "/v2/person"]
    assert [s["key"] for s in b["data"]["account"]["sources"]] == [
        "api", "beta_source", "chrome_extension", "salesforce"]


async def test_batched_key_and_endpoint_usage_count_only_own_events(two_accounts):
    """``ApiKey.usage`` and ``Endpoint.usage`` (batched) count A's events only, even
    for an endpoint that B used far more."""
    data = await as_a(two_accounts, f"""{{ account {{
        apiKeys {{ id name usage(filter: {{{RANGE}}}) {{ calls credits }} }}
        endpoints {{ path usage(filter: {{{RANGE}}}) {{ calls credits }} }} }} }}""")
    assert data["account"]["apiKeys"] == [
        {"id": gid("ApiKey", "a_k1"), "name": "Key a_k1",
         "usage": totals(A_EVENTS, key={"a_k1"})},
        {"id": gid("ApiKey", "default"), "name": "Key default",
         "usage": totals(A_EVENTS, key={"default"})},
    ]
    assert data["account"]["endpoints"] == [
        {"path": "/v2/company", "usage": totals(A_EVENTS, endpoint={"/v2/company"})},
        {"path": "/v2/person", "usage": totals(A_EVENTS, endpoint={"/v2/person"})},
    ]


async def test_credit_pool_counts_only_own_events(two_accounts):
    data = await as_a(two_accounts, "{ account { creditPool { granted used remaining } } }")
    used = totals(A_EVENTS)["credits"]
    assert data["account"]["creditPool"] == {"granted": 1000, "used": used,
                                             "remaining": 1000 - used}

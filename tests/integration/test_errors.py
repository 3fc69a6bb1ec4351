"""Errors (SPEC section 3): every error carries ``extensions.code``; a bad argument is
``BAD_USER_INPUT`` naming the argument; anything unexpected is masked as
``INTERNAL_SERVER_ERROR`` with the request id and no internals (no SQL, no traceback).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from support.helpers import event, gid, ingest, make_account, token

import gql_usage.analytics.query

RANGE = 'from: "2026-01-01T00:00:00Z", to: "2026-02-01T00:00:00Z"'


async def post(client: httpx.AsyncClient, query: str, variables: dict[str, Any] | None = None,
               headers: dict[str, str] | None = None) -> httpx.Response:
    """POST a query as the admin of ``acme``; every error of the answer must carry a code."""
    response = await client.post(
        "/graphql", json={"query": query, "variables": variables or {}},
        headers={"Authorization": f"Bearer {token('admin', 'acme')}", **(headers or {})})
    for error in response.json().get("errors") or []:
        assert isinstance((error.get("extensions") or {}).get("code"), str), error
    return response


async def errors_of(client: httpx.AsyncClient, query: str,
                    variables: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    body = (await post(client, query, variables)).json()
    assert body.get("errors"), body
    return body["errors"]


@pytest.fixture
async def acme(client: httpx.AsyncClient) -> httpx.AsyncClient:
    await make_account(client, "acme", users=[("admin", "ADMIN")], keys=["k1"])
    await ingest(client, [event("e1", "acme", "k1", "admin", "/v2/person", "api", 3,
                                "2026-01-05T10:00:00Z")])
    return client


def usage_query(filter_body: str, selection: str = "calls") -> str:
    return (f"{{ viewer {{ name }} account {{ name usage(filter: {{{filter_body}}}) "
            f"{{ {selection} }} }} }}")


# --- Bad arguments: BAD_USER_INPUT naming the argument ---------------------------------

@pytest.mark.parametrize("range_", [
    'from: "2026-02-01T00:00:00Z", to: "2026-01-01T00:00:00Z"',
    'from: "2026-01-01T00:00:00Z", to: "2026-01-01T00:00:00Z"',
    'from: "2026-01-01T01:00:00+01:00", to: "2026-01-01T00:00:00Z"',
], ids=["from after to", "from equals to", "same instant, other offset"])
async def test_from_not_before_to_is_bad_user_input(acme, range_):
    """The range is half-open ``[from, to)``: ``from >= to`` is refused, naming
    ``filter.from``, before execution: the whole operation (SPEC 6.1)."""
    body = (await post(acme, usage_query(range_))).json()
    assert body["data"] is None
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["argument"] == "filter.from"
    assert error["message"].startswith("account.usage(filter.from): ")
    assert error["path"] == ["account", "usage"]


async def test_unknown_time_zone_is_bad_user_input(acme):
    (error,) = await errors_of(acme, usage_query(f'{RANGE}, timeZone: "Mars/Olympus_Mons"'))
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["argument"] == "filter.timeZone"
    assert "filter.timeZone" in error["message"]


async def test_hourly_series_over_100_days_is_bad_user_input(acme):
    """100 days of HOUR buckets is 2,400 buckets, more than the 2,000 allowed."""
    query = usage_query('from: "2026-01-01T00:00:00Z", to: "2026-04-11T00:00:00Z", '
                        'timeZone: "UTC"', "calls series(granularity: HOUR) { calls }")
    body = (await post(acme, query)).json()
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["argument"] == "granularity"
    assert "granularity" in error["message"]
    assert error["path"] == ["account", "usage", "series"]
    assert error["message"].startswith("account.usage.series(granularity): ")
    # Known before execution: the whole operation is refused (SPEC 6.1).
    assert body["data"] is None


@pytest.mark.parametrize(("to", "allowed"), [
    ("2026-03-25T08:00:00Z", True),   # exactly 2,000 hours
    ("2026-03-25T09:00:00Z", False),  # 2,001 hours
])
async def test_series_bucket_limit_is_2000(acme, to, allowed):
    query = usage_query(f'from: "2026-01-01T00:00:00Z", to: "{to}", timeZone: "UTC"',
                        "series(granularity: HOUR) { calls }")
    body = (await post(acme, query)).json()
    if allowed:
        assert "errors" not in body
        assert len(body["data"]["account"]["usage"]["series"]) == 2000
    else:
        assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_USER_INPUT"]


async def test_negative_breakdown_limit_is_bad_user_input(acme):
    (error,) = await errors_of(acme, usage_query(
        RANGE, "breakdown(by: ENDPOINT, limit: -1) { key }"))
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["argument"] == "limit"
    assert error["path"] == ["account", "usage", "breakdown"]


async def test_zero_breakdown_limit_is_an_empty_list(acme):
    body = (await post(acme, usage_query(RANGE, "breakdown(by: ENDPOINT, limit: 0) { key }"))
            ).json()
    assert body == {"data": {"viewer": {"name": "User admin"}, "account": {
        "name": "Account acme", "usage": {"breakdown": []}}}}


@pytest.mark.parametrize(("field", "value", "argument"), [
    ("apiKeyIds", "not base64 at all!", "filter.apiKeyIds[0]"),
    ("apiKeyIds", gid("Nonsense", "k1"), "filter.apiKeyIds[0]"),
    ("apiKeyIds", gid("User", "admin"), "filter.apiKeyIds[0]"),
    ("userIds", gid("ApiKey", "k1"), "filter.userIds[0]"),
], ids=["not base64", "unknown type", "user id as key id", "key id as user id"])
async def test_malformed_or_mistyped_id_is_bad_user_input(acme, field, value, argument):
    (error,) = await errors_of(acme, usage_query(f'{RANGE}, {field}: ["{value}"]'))
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["argument"] == argument
    assert argument in error["message"]


# --- Requests that are not valid GraphQL -----------------------------------------------

@pytest.mark.parametrize(("query", "variables"), [
    ("{ account { name ", None),
    ("{ account { noSuchField } }", None),
    ("{ account { usage { calls } } }", None),
    ('{ account { usage(filter: {from: "yesterday", to: "today"}) { calls } } }', None),
    ("query($g: Granularity!) { account { usage(filter: {" + RANGE + "}) "
     "{ series(granularity: $g) { calls } } } }", {"g": "YEARLY"}),
    ("query($f: UsageFilter!) { account { usage(filter: $f) { calls } } }", {"f": {}}),
], ids=["syntax error", "unknown field", "missing argument", "not a DateTime",
        "bad enum variable", "incomplete input variable"])
async def test_invalid_request_is_bad_user_input(acme, query, variables):
    """Syntax, validation and variable errors are the client's: BAD_USER_INPUT, no data
    executed."""
    body = (await post(acme, query, variables)).json()
    assert body.get("data") is None
    assert body["errors"]
    assert {e["extensions"]["code"] for e in body["errors"]} == {"BAD_USER_INPUT"}


@pytest.mark.parametrize(("query", "code"), [
    ("{ " + " ".join(f"v{i}: viewer {{ name }}" for i in range(31)) + " }", "TOO_MANY_ALIASES"),
    ("{ viewer { " + " ".join(["name"] * 2100) + " } }", "TOO_MANY_TOKENS"),
], ids=["31 aliases", "2,100 tokens"])
async def test_oversized_query_is_refused_with_a_code(acme, query, code):
    """The alias (30) and token (2,000) limits refuse a query with a coded error (more in
    tests/integration/test_limits.py)."""
    body = (await post(acme, query)).json()
    assert body.get("data") is None
    assert body["errors"]
    assert {e["extensions"]["code"] for e in body["errors"]} == {code}


@pytest.mark.parametrize("request_kwargs", [
    {"content": b"not json", "headers": {"Content-Type": "application/json"}},
    {"json": {"variables": {}}},
    {"json": {"query": 42}},
    {"content": b"{ viewer { name } }", "headers": {"Content-Type": "text/plain"}},
], ids=["body not JSON", "no query", "query not a string", "unsupported type"])
async def test_malformed_http_request_is_a_coded_graphql_error(acme, request_kwargs):
    """A body that is not a GraphQL request is HTTP 400 (415 for a content type other than
    JSON) in the GraphQL error format, with BAD_USER_INPUT, like every other error."""
    kwargs = dict(request_kwargs)
    headers = {"Authorization": f"Bearer {token('admin', 'acme')}", **kwargs.pop("headers", {})}
    response = await acme.post("/graphql", headers=headers, **kwargs)
    assert response.status_code == (415 if "text/plain" in headers.values() else 400)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["data"] is None
    assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_USER_INPUT"]


async def test_error_codes_on_unauthenticated_requests(client):
    """Errors raised before GraphQL runs (no token) carry a code too."""
    response = await client.post("/graphql", json={"query": "{ viewer { name } }"})
    assert response.status_code == 401
    assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


# --- Unexpected failures are masked ----------------------------------------------------

def _explode(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("secret SQL detail: SELECT * FROM usage_event WHERE account_id = 1")


async def test_unexpected_exception_is_masked_with_request_id(acme, monkeypatch):
    """A crash inside a resolver becomes INTERNAL_SERVER_ERROR: the message names the
    request id (also sent as ``X-Request-ID``) so support can find the log line, and
    says nothing about the cause. The rest of the answer still renders."""
    monkeypatch.setattr(gql_usage.analytics.query, "aggregate_many", _explode)
    response = await post(acme, usage_query(RANGE, "calls credits"))
    request_id = response.headers["x-request-id"]
    assert request_id
    body = response.json()
    assert body["data"] == {"viewer": {"name": "User admin"},
                            "account": {"name": "Account acme", "usage": None}}
    errors = body["errors"]
    assert errors, body
    for error in errors:
        assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
        assert request_id in error["message"]
        assert error["extensions"]["requestId"] == request_id
    assert "secret SQL detail" not in response.text
    assert "SELECT" not in response.text
    assert "Traceback" not in response.text
    assert "RuntimeError" not in response.text


async def test_masked_error_uses_the_callers_request_id(acme, monkeypatch):
    """A caller-supplied ``X-Request-ID`` is kept, echoed and quoted in the message."""
    monkeypatch.setattr(gql_usage.analytics.query, "aggregate_many", _explode)
    response = await post(acme, usage_query(RANGE), headers={"X-Request-ID": "trace-abc-123"})
    assert response.headers["x-request-id"] == "trace-abc-123"
    (error,) = response.json()["errors"]
    assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert "trace-abc-123" in error["message"]
    assert "secret SQL detail" not in response.text


async def test_every_response_has_a_request_id(acme):
    response = await post(acme, "{ viewer { name } }")
    assert response.status_code == 200
    assert len(response.headers["x-request-id"]) >= 8

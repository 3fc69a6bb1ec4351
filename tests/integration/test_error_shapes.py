"""Every error is JSON with a code (SPEC 6.1): outside ``/graphql`` ``{"error", "code"}``,
on ``/graphql`` GraphQL's shape (``errors[].extensions.code``). A table of requests
walks every route: unknown routes, wrong methods, bad tokens, bodies too large, of the
wrong type, malformed or invalid, CORS preflight refusals, time-outs and an unready
database. (uvicorn's own answers, 400 for malformed HTTP and 408 for a head that never
ends, are in ``test_connections.py``.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route
from support.config import make_settings
from support.helpers import SERVICE, event, make_account, token

from gql_usage.app import create_app
from gql_usage.storage.db import connection

ORIGIN = "https://dashboard.example.com"
LIMIT = 300
JSON = {"Content-Type": "application/json"}
USER = {"Authorization": f"Bearer {token('admin', 'acme')}"}
ACCOUNT = {"name": "Acme", "plan": "PRO", "periodStart": "2026-01-01T00:00:00Z",
           "periodEnd": "2026-02-01T00:00:00Z"}
EVENT = event("e1", "acme", "k1", "admin", "/v2/person", "api", 1, "2026-01-05T10:00:00Z")
#: One concrete path per route of the application, and the methods it answers.
ROUTES = {"/graphql": {"GET", "POST"}, "/healthz": {"GET"}, "/readyz": {"GET"},
          "/v1/accounts/acme": {"PUT"}, "/v1/accounts/acme/users/u1": {"PUT"},
          "/v1/accounts/acme/api-keys/k1": {"PUT"}, "/v1/usage-events": {"POST"},
          "/export/usage.csv": {"GET"},
          "/graphql/assets/0123456789abcdef/graphiql.js": {"GET"}}


def preflight(origin: str, method: str = "POST") -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, content-type"}


def body(**kw: Any) -> bytes:
    return json.dumps(kw).encode()


#: (name, method, path, headers, body) -> (status, code)
CASES: list[tuple[str, str, str, dict[str, str], bytes | None, int, str]] = [
    ("unknown route", "GET", "/no/such/path", {}, None, 404, "NOT_FOUND"),
    ("unknown route, POST", "POST", "/v2/usage-events", {**SERVICE, **JSON}, b"[]", 404,
     "NOT_FOUND"),
    ("unknown route under /v1", "PUT", "/v1/accounts", {**SERVICE, **JSON}, b"{}", 404,
     "NOT_FOUND"),
    ("no service token", "PUT", "/v1/accounts/acme", JSON, body(**ACCOUNT), 401,
     "UNAUTHENTICATED"),
    ("wrong service token", "POST", "/v1/usage-events",
     {"Authorization": "Bearer nope", **JSON}, b"[]", 401, "UNAUTHENTICATED"),
    ("a user's token on the service API", "PUT", "/v1/accounts/acme/users/u1",
     {**USER, **JSON}, body(name="U", email="u@a.example", role="MEMBER"), 401,
     "UNAUTHENTICATED"),
    ("basic auth", "PUT", "/v1/accounts/acme/api-keys/k1",
     {"Authorization": "Basic dXNlcjpwYXNz", **JSON}, b"{}", 401, "UNAUTHENTICATED"),
    ("unknown account", "PUT", "/v1/accounts/nobody/users/u1", {**SERVICE, **JSON},
     body(name="U", email="u@a.example", role="MEMBER"), 404, "NOT_FOUND"),
    ("unknown account of a key", "PUT", "/v1/accounts/nobody/api-keys/k1",
     {**SERVICE, **JSON}, body(name="K", prefix="pk", createdAt="2026-01-01T00:00:00Z"),
     404, "NOT_FOUND"),
    ("events body too large", "POST", "/v1/usage-events", {**SERVICE, **JSON},
     b"[" + b" " * LIMIT + b"]", 413, "PAYLOAD_TOO_LARGE"),
    ("account body too large", "PUT", "/v1/accounts/acme", {**SERVICE, **JSON},
     b"{" + b" " * LIMIT + b"}", 413, "PAYLOAD_TOO_LARGE"),
    ("too many events", "POST", "/v1/usage-events", {**SERVICE, **JSON},
     b"[{}, {}, {}]", 413, "BATCH_TOO_LARGE"),  # max_batch_events=2
    ("events as XML", "POST", "/v1/usage-events",
     {**SERVICE, "Content-Type": "application/xml"}, b"<events/>", 415,
     "UNSUPPORTED_MEDIA_TYPE"),
    ("events as multipart", "POST", "/v1/usage-events",
     {**SERVICE, "Content-Type": "multipart/form-data; boundary=x"},
     b"--x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n[]\r\n--x--\r\n", 415,
     "UNSUPPORTED_MEDIA_TYPE"),
    ("account as a form", "PUT", "/v1/accounts/acme",
     {**SERVICE, "Content-Type": "application/x-www-form-urlencoded"}, b"name=Acme", 415,
     "UNSUPPORTED_MEDIA_TYPE"),
    ("user as NDJSON", "PUT", "/v1/accounts/acme/users/u1",
     {**SERVICE, "Content-Type": "application/x-ndjson"}, b"{}", 415,
     "UNSUPPORTED_MEDIA_TYPE"),
    ("events not JSON", "POST", "/v1/usage-events", {**SERVICE, **JSON}, b"[{", 400,
     "BAD_USER_INPUT"),
    ("account not JSON", "PUT", "/v1/accounts/acme", {**SERVICE, **JSON}, b"{", 400,
     "BAD_USER_INPUT"),
    ("events not UTF-8", "POST", "/v1/usage-events", {**SERVICE, **JSON}, b"[\"\xff\"]",
     400, "BAD_USER_INPUT"),
    ("unknown plan", "PUT", "/v1/accounts/acme", {**SERVICE, **JSON},
     body(**{**ACCOUNT, "plan": "GOLD"}), 422, "BAD_USER_INPUT"),
    ("period backwards", "PUT", "/v1/accounts/acme", {**SERVICE, **JSON},
     body(**{**ACCOUNT, "periodEnd": "2025-01-01T00:00:00Z"}), 422, "BAD_USER_INPUT"),
    ("id too long", "PUT", "/v1/accounts/" + "a" * 129, {**SERVICE, **JSON},
     body(**ACCOUNT), 422, "BAD_USER_INPUT"),
    ("unknown creator", "PUT", "/v1/accounts/acme/api-keys/k9", {**SERVICE, **JSON},
     body(name="K", prefix="pk", createdBy="ghost", createdAt="2026-01-01T00:00:00Z"), 422,
     "BAD_USER_INPUT"),
    ("export without a token", "GET", "/export/usage.csv", {}, None, 401, "UNAUTHENTICATED"),
    ("GraphiQL asset that is not the page's", "GET",
     "/graphql/assets/0123456789abcdef/graphiql.js", {}, None, 404, "NOT_FOUND"),
    ("export with the service token", "GET", "/export/usage.csv", SERVICE, None, 401,
     "UNAUTHENTICATED"),
    ("export, bad parameter", "GET", "/export/usage.csv?granularity=YEAR", USER, None, 400,
     "BAD_USER_INPUT"),
    ("CORS preflight, other origin", "OPTIONS", "/v1/usage-events",
     preflight("https://evil.example"), None, 400, "CORS_REJECTED"),
    ("CORS preflight, method not allowed", "OPTIONS", "/healthz", preflight(ORIGIN, "DELETE"),
     None, 400, "CORS_REJECTED"),
    ("CORS preflight on /graphql, other origin", "OPTIONS", "/graphql",
     preflight("https://evil.example"), None, 400, "CORS_REJECTED"),
    ("OPTIONS without preflight headers", "OPTIONS", "/v1/usage-events", {}, None, 405,
     "METHOD_NOT_ALLOWED"),
    # every route, asked with a method it does not answer
    *((f"{method} {path}", method, path, {**SERVICE, **JSON}, b"{}", 405, "METHOD_NOT_ALLOWED")
      for path, allowed in ROUTES.items()
      for method in sorted({"GET", "POST", "PUT", "PATCH", "DELETE"} - allowed)),
]

#: /graphql: the same kinds of error in GraphQL's shape.
GRAPHQL_CASES: list[tuple[str, str, str, dict[str, str], bytes | None, int, str]] = [
    ("no token", "POST", "/graphql", JSON, body(query="{ viewer { name } }"), 401,
     "UNAUTHENTICATED"),
    ("no token, GET", "GET", "/graphql?query=%7Bviewer%7Bname%7D%7D", {}, None, 401,
     "UNAUTHENTICATED"),
    ("text/plain", "POST", "/graphql", {**USER, "Content-Type": "text/plain"},
     b"{ viewer { name } }", 415, "BAD_USER_INPUT"),
    ("too large", "POST", "/graphql", {**USER, **JSON},
     body(query="{ viewer { name } }" + " " * LIMIT), 413, "BAD_USER_INPUT"),
    ("not JSON", "POST", "/graphql", {**USER, **JSON}, b"{", 400, "BAD_USER_INPUT"),
    ("mutation over GET", "GET", "/graphql?query=mutation%7Bviewer%7Bname%7D%7D", USER, None,
     400, "BAD_USER_INPUT"),
]


@contextlib.asynccontextmanager
async def serve(db_url: str, **overrides: object) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(db_url, max_body_bytes=LIMIT, max_graphql_body_bytes=LIMIT,
                             max_batch_events=2, cors_origins=[ORIGIN], **overrides)
    transport = httpx.ASGITransport(app=create_app(settings, manage_db=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


def assert_coded_json(response: httpx.Response, status: int, code: str,
                      graphql: bool = False) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json", response.headers
    answer = response.json()
    if graphql:
        [error] = answer["errors"]
        assert answer["data"] is None
        assert isinstance(error["message"], str) and error["message"]
        assert error["extensions"]["code"] == code, answer
    else:
        assert isinstance(answer["error"], str) and answer["error"], answer
        assert answer["code"] == code, answer


def _starlette(app: Any) -> Starlette:
    while not isinstance(app, Starlette):  # through the middlewares of ``harden``
        app = app.app
    return app


def test_the_table_covers_every_route() -> None:
    """ROUTES holds every route of the application, with exactly its methods."""
    app = _starlette(create_app(make_settings("sqlite://:memory:"), manage_db=False))
    routes = {route.path: set(route.methods or ()) - {"HEAD"} for route in app.routes
              if isinstance(route, Route)}
    assert len(routes) == len(ROUTES) == len(app.routes)
    for template, methods in routes.items():
        [path] = [p for p in ROUTES if app.routes[list(routes).index(template)]
                  .path_regex.fullmatch(p)]
        assert ROUTES[path] == methods, template


async def test_every_error_outside_graphql_is_coded_json(db_url: str) -> None:
    async with serve(db_url) as client:
        await make_account(client, "acme", users=[("admin", "ADMIN")], keys=["k1"])
        failures = []
        for name, method, path, headers, content, status, code in CASES:
            response = await client.request(method, path, headers=headers, content=content)
            try:
                assert_coded_json(response, status, code, graphql=path == "/graphql"
                                  and status == 405)
            except (AssertionError, KeyError, ValueError) as exc:
                failures.append(f"{name}: {response.status_code} "
                                f"{response.headers.get('content-type')} {response.text[:120]!r}"
                                f" ({exc!r})")
                continue
            if status == 405:
                allowed = set(response.headers["allow"].split(", "))
                assert allowed == ROUTES[path] | ({"HEAD"} if "GET" in ROUTES[path] else set())
                assert f"method {method} not allowed on {path}" in response.text
        for name, method, path, headers, content, status, code in GRAPHQL_CASES:
            response = await client.request(method, path, headers=headers, content=content)
            try:
                assert_coded_json(response, status, code, graphql=True)
            except (AssertionError, KeyError, ValueError) as exc:
                failures.append(f"graphql {name}: {response.status_code} {response.text[:120]!r}"
                                f" ({exc!r})")
    assert not failures, "\n".join(failures)


async def test_messages_name_what_was_wrong(db_url: str) -> None:
    async with serve(db_url) as client:
        missing = await client.get("/no/such/path")
        wrong = await client.delete("/v1/usage-events")
        batch = await client.post("/v1/usage-events", content=b"[{}, {}, {}]",
                                  headers={**SERVICE, **JSON})
        media = await client.post("/v1/usage-events", content=b"[]",
                                  headers={**SERVICE, "Content-Type": "text/xml"})
        cors = await client.options("/v1/usage-events", headers=preflight("https://evil.example"))
    assert missing.json() == {"error": "no such route: GET /no/such/path", "code": "NOT_FOUND"}
    assert wrong.json() == {"error": "method DELETE not allowed on /v1/usage-events "
                            "(allowed: POST)", "code": "METHOD_NOT_ALLOWED"}
    assert batch.json() == {"error": "batch holds more than 2 events, the maximum "
                            "(GQL_USAGE_MAX_BATCH_EVENTS); send smaller batches",
                            "code": "BATCH_TOO_LARGE", "maxEvents": 2}
    assert media.json() == {"error": "Content-Type must be application/json or "
                            "application/x-ndjson, not 'text/xml'",
                            "code": "UNSUPPORTED_MEDIA_TYPE"}
    assert cors.json() == {"error": "CORS preflight refused: Disallowed CORS origin",
                           "code": "CORS_REJECTED"}
    assert "access-control-allow-origin" not in cors.headers


@pytest.mark.own_database  # drops or alters what other tests need
async def test_timeouts_and_an_unready_database_are_coded_json(db_url: str) -> None:
    async def slow() -> AsyncIterator[bytes]:
        await asyncio.sleep(1.5)
        yield b"[]"

    async with serve(db_url, request_timeout_seconds=0.5) as client:
        timed_out = await client.post("/v1/usage-events", content=slow(),
                                      headers={**SERVICE, **JSON})
        assert_coded_json(timed_out, 503, "TIMEOUT")
    # The readiness probe under the default timeout: under 0.5 s it could itself time out
    # on a loaded machine (a fresh-clone run got TIMEOUT instead of SERVICE_UNAVAILABLE).
    async with serve(db_url) as client:
        await connection().execute_script("DROP TABLE tortoise_migrations")
        unready = await client.get("/readyz")
        assert_coded_json(unready, 503, "SERVICE_UNAVAILABLE")


@pytest.mark.parametrize(("content_type", "ndjson"), [
    ("application/json", False), ("application/json; charset=utf-8", False),
    ("application/x-ndjson", True), ("application/jsonl", True), ("text/plain", False),
    (None, False)])
async def test_json_and_ndjson_bodies_are_still_taken(db_url: str, content_type: str | None,
                                                      ndjson: bool) -> None:
    async with serve(db_url) as client:
        await make_account(client, "acme", users=[("admin", "ADMIN")], keys=["k1"])
        headers = {**SERVICE, **({"Content-Type": content_type} if content_type else {})}
        content = json.dumps(EVENT) if ndjson else json.dumps([EVENT])
        response = await client.post("/v1/usage-events", content=content, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 1, "duplicates": 0, "rejected": []}

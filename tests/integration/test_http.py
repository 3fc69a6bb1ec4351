"""HTTP hygiene (``gql_usage/http/``, ``gql_usage/logs.py``): request timeouts, CORS,
JSON-only and query-only GraphQL, security headers, request ids in responses and JSON
log lines, body limits on both routes, and the ``/healthz`` / ``/readyz`` probes.

Tests that touch the database run on SQLite and PostgreSQL (``db_url``); the rest
exercise the middlewares without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from support.config import make_settings
from support.helpers import SERVICE, event, make_account, token
from tortoise import Tortoise

from gql_usage import logs
from gql_usage.app import create_app
from gql_usage.http.access_log import AccessLog
from gql_usage.http.errors import internal_error
from gql_usage.http.request_id import RequestId
from gql_usage.http.stack import harden
from gql_usage.http.timeout import RequestTimeout
from gql_usage.settings import MissingSetting, load_settings
from gql_usage.storage.db import connection, tortoise_config

ROOT = Path(__file__).resolve().parents[2]
NO_DB = "sqlite://:memory:"  # for tests whose requests never reach the database
ORIGIN = "https://dashboard.example.com"
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}
STRICT_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"


@contextlib.asynccontextmanager
async def serve(db_url: str, **overrides: object) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app built with settings ``overrides``."""
    app = create_app(make_settings(db_url, **overrides), manage_db=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


def user_auth(user: str = "admin", account: str = "acme") -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user, account)}"}


def assert_hardened(response: httpx.Response, csp: str = STRICT_CSP) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (name, response.status_code)
    assert response.headers["content-security-policy"] == csp
    assert re.fullmatch(r"[A-Za-z0-9-]{1,64}", response.headers["x-request-id"])


@pytest.fixture
def json_logs() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """Our JSON handler on the root logger, writing to a buffer; yields a function that
    parses every line written so far (each must be one JSON object)."""
    buffer = io.StringIO()
    handler = logs.make_handler("json", buffer)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines()]
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


# --- request timeout ---------------------------------------------------------------------

class StalledBody:
    """A client that sends the first half of its body, then nothing more until it has its
    answer (or ``give_up`` seconds have passed): a request slower than any deadline, by
    construction rather than by a sleep that a loaded machine could outlast."""

    def __init__(self, payload: bytes, give_up: float = 30.0) -> None:
        self.payload = payload
        self.give_up = give_up
        self.answered = asyncio.Event()
        self.finished = False  # set if the rest of the body was ever sent

    async def __aiter__(self) -> AsyncIterator[bytes]:
        half = len(self.payload) // 2
        yield self.payload[:half]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.answered.wait(), self.give_up)
        if not self.answered.is_set():
            self.finished = True
            yield self.payload[half:]


async def test_a_request_slower_than_the_timeout_gets_503(
        db_url: str, json_logs: Callable[[], list[dict[str, Any]]]) -> None:
    async with serve(db_url, request_timeout_seconds=1.0) as client:
        await make_account(client, "acme", users=[("admin", "ADMIN")], keys=["k1"])
        events = [event("e1", "acme", "k1", "admin", "/v2/person", "api", 3,
                        "2026-01-05T10:00:00Z")]
        payload = json.dumps(events).encode()
        loop = asyncio.get_running_loop()
        started = loop.time()
        stalled = StalledBody(payload)
        slow = await client.post("/v1/usage-events", content=stalled,
                                 headers={**SERVICE, "Content-Type": "application/json"})
        elapsed = loop.time() - started
        stalled.answered.set()
        assert slow.status_code == 503
        assert slow.json() == {"error": "request timed out after 1 s", "code": "TIMEOUT"}
        # answered at the deadline, while the body was still unfinished
        assert elapsed >= 1.0 and not stalled.finished
        assert_hardened(slow)
        # nothing of the timed-out batch was stored: the same event is new now
        fast = await client.post("/v1/usage-events", json=events, headers=SERVICE)
        assert fast.status_code == 200
        assert fast.json() == {"accepted": 1, "duplicates": 0, "rejected": []}

        stalled = StalledBody(json.dumps({"query": "{ viewer { name } }"}).encode())
        graphql = await client.post(
            "/graphql", content=stalled,
            headers={**user_auth(), "Content-Type": "application/json"})
        stalled.answered.set()
        assert not stalled.finished
        assert graphql.status_code == 503
        assert graphql.json() == {"data": None, "errors": [{
            "message": "request timed out after 1 s", "extensions": {"code": "TIMEOUT"}}]}
    warnings = [r for r in json_logs() if r["message"].startswith("request timed out")]
    assert [w["request_id"] for w in warnings] == [slow.headers["x-request-id"],
                                                   graphql.headers["x-request-id"]]


async def _streaming_app(scope: Any, receive: Any, send: Any) -> None:
    """Starts its answer at once, then takes longer than the timeout to finish it."""
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    for part in (b"first ", b"second ", b"third"):
        await asyncio.sleep(0.15)
        await send({"type": "http.response.body", "body": part, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def test_the_timeout_never_cuts_off_a_started_response() -> None:
    app = RequestTimeout(_streaming_app, seconds=0.2)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/")
    assert response.status_code == 200
    assert response.text == "first second third"


async def test_a_timeout_error_of_the_app_itself_is_not_a_request_timeout() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise TimeoutError("the app's own")

    transport = httpx.ASGITransport(app=RequestTimeout(app, seconds=5))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        with pytest.raises(TimeoutError, match="the app's own"):
            await client.get("/")


# --- CORS ----------------------------------------------------------------------------------

def preflight(origin: str, method: str = "POST") -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, content-type"}


async def test_cors_preflight_from_the_dashboard_origin_is_allowed() -> None:
    async with serve(NO_DB, cors_origins=[ORIGIN, "http://localhost:3000"]) as client:
        response = await client.options("/graphql", headers=preflight(ORIGIN))
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert set(response.headers["access-control-allow-methods"].split(", ")) == {"GET", "POST"}
    allowed = {h.strip().lower() for h in response.headers["access-control-allow-headers"]
               .split(",")}
    assert {"authorization", "content-type"} <= allowed
    assert "access-control-allow-credentials" not in response.headers  # bearer tokens only
    assert_hardened(response)


@pytest.mark.parametrize("origins", [[ORIGIN], []], ids=["other origin listed", "none"])
async def test_cors_preflight_from_another_origin_is_denied(origins: list[str]) -> None:
    async with serve(NO_DB, cors_origins=origins) as client:
        response = await client.options("/graphql", headers=preflight("https://evil.example"))
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers
    assert_hardened(response)


async def test_cors_headers_on_actual_requests(db_url: str) -> None:
    async with serve(db_url, cors_origins=[ORIGIN]) as client:
        await make_account(client, "acme", users=[("admin", "ADMIN")])
        query = {"query": "{ viewer { name } }"}
        allowed = await client.post("/graphql", json=query,
                                    headers={**user_auth(), "Origin": ORIGIN})
        denied = await client.post("/graphql", json=query,
                                   headers={**user_auth(), "Origin": "https://evil.example"})
    assert allowed.json() == {"data": {"viewer": {"name": "User admin"}}}
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    exposed = allowed.headers["access-control-expose-headers"].lower().split(", ")
    assert "x-request-id" in exposed and "retry-after" in exposed
    # The server answers (CORS is enforced by the browser), without allowing the origin.
    assert "access-control-allow-origin" not in denied.headers


@pytest.mark.parametrize(("value", "expected"), [
    ("https://a.example, http://localhost:3000", ["https://a.example", "http://localhost:3000"]),
    ('["https://a.example", "https://b.example:8443"]',
     ["https://a.example", "https://b.example:8443"]),
    ("", []),
    ("*", ["*"]),
])
def test_cors_origins_from_the_environment(monkeypatch: pytest.MonkeyPatch, value: str,
                                           expected: list[str]) -> None:
    monkeypatch.setenv("GQL_USAGE_CORS_ORIGINS", value)
    assert load_settings().cors_origins == expected


@pytest.mark.parametrize(("name", "value", "says"), [
    ("GQL_USAGE_CORS_ORIGINS", "https://a.example/app", "'https://a.example/app' is not an "
                                                        "origin"),
    ("GQL_USAGE_CORS_ORIGINS", "a.example", "'a.example' is not an origin"),
    ("GQL_USAGE_CORS_ORIGINS", '["https://a.example"', "is not a JSON array"),
    ("GQL_USAGE_LOG_LEVEL", "verbose", "'verbose' is not one of DEBUG, INFO"),
    ("GQL_USAGE_LOG_FORMAT", "xml", "'json' or 'text'"),
])
def test_bad_http_settings_are_named(monkeypatch: pytest.MonkeyPatch, name: str, value: str,
                                     says: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(MissingSetting) as caught:
        load_settings()
    assert str(caught.value).startswith(f"invalid setting {name}: ")
    assert says in str(caught.value)


# --- CSRF-safe GraphQL over GET ------------------------------------------------------------

async def test_graphql_over_get_runs_queries_only(client: httpx.AsyncClient) -> None:
    await make_account(client, "acme", users=[("admin", "ADMIN")])
    ok = await client.get("/graphql", params={"query": "{ viewer { name } }"},
                          headers=user_auth())
    assert ok.status_code == 200
    assert ok.json() == {"data": {"viewer": {"name": "User admin"}}}
    refused = await client.get("/graphql", params={"query": "mutation { viewer { name } }"},
                               headers=user_auth())
    assert refused.status_code == 400
    assert refused.json() == {"data": None, "errors": [{
        "message": "mutations are not allowed when using GET",
        "extensions": {"code": "BAD_USER_INPUT"}}]}
    assert_hardened(refused)
    # Strawberry lets subscriptions through GET (multipart streaming); we have none.
    refused = await client.get("/graphql", params={"query": "subscription { viewer { name } }"},
                               headers=user_auth())
    assert refused.json() == {"data": None, "errors": [{
        "message": "The subscription operation is not supported by the schema.",
        "locations": [{"line": 1, "column": 1}], "extensions": {"code": "BAD_USER_INPUT"}}]}


# --- security headers ----------------------------------------------------------------------

async def test_security_headers_on_every_kind_of_response(db_url: str) -> None:
    async with serve(db_url, max_body_bytes=300, max_graphql_body_bytes=100) as client:
        await make_account(client, "acme", users=[("admin", "ADMIN")])
        responses = {
            "graphql 200": await client.post("/graphql", json={"query": "{ viewer { name } }"},
                                             headers=user_auth()),
            "graphql 401": await client.post("/graphql", json={"query": "{ viewer { name } }"}),
            "graphql 413": await client.post("/graphql", headers=user_auth(),
                                             json={"query": "{ viewer { name } }" + " " * 100}),
            "graphql 415": await client.post("/graphql", content=b"{}", headers=user_auth()),
            "graphql 405": await client.put("/graphql", json={}),
            "v1 201": await client.put("/v1/accounts/fresh", headers=SERVICE, json={
                "name": "Fresh", "plan": "PRO", "periodStart": "2026-01-01T00:00:00Z",
                "periodEnd": "2026-02-01T00:00:00Z"}),
            "v1 401": await client.post("/v1/usage-events", json=[]),
            "v1 413": await client.post("/v1/usage-events", headers=SERVICE,
                                        content=b"[" + b" " * 300 + b"]"),
            "healthz": await client.get("/healthz"),
            "readyz": await client.get("/readyz"),
            "404": await client.get("/no/such/path"),
        }
    expected_status = {"graphql 200": 200, "graphql 401": 401, "graphql 413": 413,
                       "graphql 415": 415, "graphql 405": 405, "v1 201": 201, "v1 401": 401,
                       "v1 413": 413, "healthz": 200, "readyz": 200, "404": 404}
    assert {k: r.status_code for k, r in responses.items()} == expected_status
    for response in responses.values():
        assert_hardened(response)
    ids = [r.headers["x-request-id"] for r in responses.values()]
    assert len(set(ids)) == len(ids)  # one fresh id per request


async def test_graphiql_gets_a_policy_that_lets_exactly_it_load() -> None:
    """The page loads its scripts and style sheets from this server only (no CDN): the
    policy allows ``'self'`` and nothing else, and every file it names is served."""
    async with serve(NO_DB) as client:
        page = await client.get("/graphql")
        html = page.text
        script_urls = re.findall(r'<script\s[^>]*src="([^"]+)"', html)
        style_urls = re.findall(r'<link\s[^>]*rel="stylesheet"[^>]*href="([^"]+)"', html)
        assets = {url: await client.get(url) for url in [*script_urls, *style_urls]}
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = dict(d.strip().split(" ", 1) for d in
                  page.headers["content-security-policy"].split(";"))
    assert len(script_urls) == 4 and len(style_urls) == 2  # React x2, GraphiQL x2, ours
    assert re.findall(r"<script>", html) == []  # no inline script
    assert all(url.startswith("/graphql/assets/") for url in [*script_urls, *style_urls])
    assert {url: r.status_code for url, r in assets.items()} == dict.fromkeys(assets, 200)
    assert policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self' 'unsafe-inline'"
    assert policy["default-src"] == "'none'"
    assert policy["connect-src"] == "'self'"
    assert policy["img-src"] == "data:" and policy["font-src"] == "data:"
    assert policy["frame-ancestors"] == "'none'"
    assert "unsafe-eval" not in page.headers["content-security-policy"]
    assert "http" not in page.headers["content-security-policy"]
    assert "data-demo-token" not in html  # only `gql-usage serve --demo` pre-fills it
    for name, value in SECURITY_HEADERS.items():
        assert page.headers[name] == value


# --- request ids and logs ------------------------------------------------------------------

async def test_request_ids_on_responses_and_log_lines(
        db_url: str, json_logs: Callable[[], list[dict[str, Any]]]) -> None:
    async with serve(db_url, max_graphql_body_bytes=100) as client:
        await make_account(client, "acme", users=[("admin", "ADMIN")])
        calls = [
            ("POST", "/graphql", {"json": {"query": "{ viewer { name } }"},
                                  "headers": {**user_auth(), "X-Request-ID": "dash-42"}}),
            ("POST", "/graphql", {"json": {"query": "{ viewer { name } }"}}),
            ("POST", "/graphql", {"json": {"query": "{ viewer { name } }" + " " * 100},
                                  "headers": user_auth()}),
            ("GET", "/nowhere", {"headers": {"X-Request-ID": "not a sane id!"}}),
            ("GET", "/healthz", {"headers": {"X-Request-ID": "x" * 65}}),
        ]
        responses = [await client.request(method, path, **kw) for method, path, kw in calls]
    assert [r.status_code for r in responses] == [200, 401, 413, 404, 200]
    ids = [r.headers["x-request-id"] for r in responses]
    assert ids[0] == "dash-42"  # a sane id from the caller is kept
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids[1:])  # others are replaced

    records = json_logs()
    for record in records:
        assert {"time", "level", "logger", "message", "request_id"} <= record.keys()
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["time"])
    access = {r["request_id"]: r for r in records if r["logger"] == "gql_usage.access"}
    for (method, path, _), response in zip(calls, responses, strict=True):
        line = access[response.headers["x-request-id"]]
        assert (line["method"], line["path"], line["status"]) == (method, path,
                                                                   response.status_code)
        assert line["level"] == "INFO"
        assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
        assert line["message"].startswith(f"{method} {path} {response.status_code} ")


async def test_an_unhandled_error_is_a_coded_500_logged_with_the_request_id(
        json_logs: Callable[[], list[dict[str, Any]]]) -> None:
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    transport = httpx.ASGITransport(app=RequestId(AccessLog(broken)))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/v1/anything")
    assert response.status_code == 500
    request_id = response.headers["x-request-id"]
    assert response.json() == {"error": f"Internal server error (request id {request_id})",
                               "code": "INTERNAL_SERVER_ERROR", "requestId": request_id}
    [error] = [r for r in json_logs() if r["level"] == "ERROR"]
    assert error["request_id"] == request_id
    assert error["message"] == "unhandled error in GET /v1/anything"
    assert "RuntimeError: boom" in error["exc_info"]


async def test_an_exception_in_a_route_is_a_coded_json_500(
        json_logs: Callable[[], list[dict[str, Any]]]) -> None:
    async def broken(request: Request) -> Response:
        raise ZeroDivisionError("secret internals")

    app = Starlette(routes=[Route("/graphql", broken, methods=["POST"])],
                    exception_handlers={Exception: internal_error})
    transport = httpx.ASGITransport(app=harden(app, make_settings(NO_DB)))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.post("/graphql", json={})
    request_id = response.headers["x-request-id"]
    assert response.status_code == 500
    assert response.json() == {"data": None, "errors": [{
        "message": f"Internal server error (request id {request_id})",
        "extensions": {"code": "INTERNAL_SERVER_ERROR", "requestId": request_id}}]}
    assert "secret" not in response.text
    assert_hardened(response)
    [error] = [r for r in json_logs() if r["level"] == "ERROR"]
    assert (error["request_id"], error["message"]) == (request_id,
                                                       "unhandled error in POST /graphql")
    assert "ZeroDivisionError: secret internals" in error["exc_info"]


def test_log_configuration_routes_uvicorn_through_our_format() -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    uvicorn_error = logging.getLogger("uvicorn.error")
    saved_uvicorn = (list(uvicorn_error.handlers), uvicorn_error.propagate, uvicorn_error.level)
    try:
        for log_format in ("json", "text"):
            stream = io.StringIO()
            logs.configure(log_format, "WARNING", stream=stream)
            uvicorn_error.info("hidden below WARNING")
            uvicorn_error.warning("Started %s", "nothing", extra={"color_message": "\x1b[1m"})
            token_ = logs.request_id_var.set("req-1")
            try:
                logging.getLogger("gql_usage.x").error("inside a request")
            finally:
                logs.request_id_var.reset(token_)
            lines = stream.getvalue().splitlines()
            assert len(lines) == 2
            if log_format == "json":
                first, second = (json.loads(line) for line in lines)
                assert first == {"time": first["time"], "level": "WARNING",
                                 "logger": "uvicorn.error", "message": "Started nothing",
                                 "request_id": None}
                assert (second["logger"], second["request_id"]) == ("gql_usage.x", "req-1")
            else:
                assert lines[0].endswith(" WARNING uvicorn.error [None] Started nothing")
                assert lines[1].endswith(" ERROR gql_usage.x [req-1] inside a request")
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        uvicorn_error.handlers[:] = saved_uvicorn[0]
        uvicorn_error.propagate = saved_uvicorn[1]
        uvicorn_error.setLevel(saved_uvicorn[2])


# --- body limits -------------------------------------------------------------------------

async def chunks(payload: bytes, size: int = 64) -> AsyncIterator[bytes]:
    """The body without a Content-Length (chunked): the limit must hold while streaming."""
    for start in range(0, len(payload), size):
        yield payload[start:start + size]


async def test_body_limits_on_both_routes(db_url: str) -> None:
    limit = 400
    async with serve(db_url, max_body_bytes=limit, max_graphql_body_bytes=limit) as client:
        await make_account(client, "acme", users=[("admin", "ADMIN")], keys=["k1"])

        def graphql_body(size: int) -> bytes:
            body = json.dumps({"query": "{ viewer { name } }"}).encode()
            return body[:-1] + b" " * (size - len(body)) + b"}"

        def events_body(size: int) -> bytes:
            body = json.dumps([event("e1", "acme", "k1", "admin", "/v2/person", "api", 1,
                                     "2026-01-05T10:00:00Z")]).encode()
            return body[:-1] + b" " * (size - len(body)) + b"]"

        gql_headers = {**user_auth(), "Content-Type": "application/json"}
        v1_headers = {**SERVICE, "Content-Type": "application/json"}
        for streamed in (False, True):
            def content(body: bytes, streamed: bool = streamed) -> Any:
                return chunks(body) if streamed else body

            over = await client.post("/graphql", content=content(graphql_body(limit + 1)),
                                     headers=gql_headers)
            assert over.status_code == 413
            assert over.json() == {"data": None, "errors": [{
                "message": f"request body exceeds {limit} bytes",
                "extensions": {"code": "BAD_USER_INPUT"}}]}
            at = await client.post("/graphql", content=content(graphql_body(limit)),
                                   headers=gql_headers)
            assert at.json() == {"data": {"viewer": {"name": "User admin"}}}

            over = await client.post("/v1/usage-events", content=content(events_body(limit + 1)),
                                     headers=v1_headers)
            assert over.status_code == 413
            assert over.json()["error"].startswith(f"body exceeds {limit} bytes")
            at = await client.post("/v1/usage-events", content=content(events_body(limit)),
                                   headers=v1_headers)
            assert at.status_code == 200
            assert at.json()["accepted"] + at.json()["duplicates"] == 1


# --- probes --------------------------------------------------------------------------------

def shipped_migrations() -> list[str]:
    return sorted(p.stem for p in (ROOT / "gql_usage" / "storage" / "migrations").glob("[0-9]*.py"))


async def test_healthz_and_readyz_on_a_migrated_database(client: httpx.AsyncClient) -> None:
    health = await client.get("/healthz")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "migrations": shipped_migrations()}


@pytest.mark.own_database  # drops or alters what other tests need
async def test_readyz_refuses_a_database_missing_a_migration(client: httpx.AsyncClient) -> None:
    last = shipped_migrations()[-1]
    await connection().execute_script(
        f"DELETE FROM tortoise_migrations WHERE name = '{last}'")  # noqa: S608 - a file name
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "reason": "migrations not applied",
                               "pending": [last], "error": "not ready: migrations not applied",
                               "code": "SERVICE_UNAVAILABLE"}
    await connection().execute_script("DROP TABLE tortoise_migrations")
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "reason": "no migrations applied",
                               "pending": shipped_migrations(),
                               "error": "not ready: no migrations applied",
                               "code": "SERVICE_UNAVAILABLE"}
    assert (await client.get("/healthz")).status_code == 200  # alive all the same


async def test_readyz_refuses_an_unreachable_database(db_url: str) -> None:
    unreachable = ("sqlite:///nonexistent-directory/gql_usage.sqlite3"
                   if db_url.startswith("sqlite") else
                   "postgres://postgres@127.0.0.1:9/gql_usage")  # discard port: refused
    await Tortoise.close_connections()
    await Tortoise.init(config=tortoise_config(unreachable), _enable_global_fallback=True)
    async with serve(unreachable) as client:
        response = await client.get("/readyz")
        health = await client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["reason"].startswith("database unreachable (")
    assert (body["error"], body["code"]) == (f"not ready: {body['reason']}",
                                             "SERVICE_UNAVAILABLE")
    assert unreachable not in response.text  # no connection details leak
    assert health.status_code == 200


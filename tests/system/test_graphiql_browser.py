"""GraphiQL in a real headless browser (Debian's /usr/bin/chromium driven by playwright),
against a real ``gql-usage serve``, with every request to another host aborted: the page
loads from the package alone, the demo's token is pre-filled and carried by every request
(the first introspection included), README's first query answers the numbers a direct
POST answers, the Docs explorer lists the schema, and nothing fails or logs an error.

Skipped only when /usr/bin/chromium or the playwright package is absent; ``.ci/run``
installs both. ``playwright install`` (downloading browsers) is never used."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from support.config import JWT_SECRET, SERVICE_TOKEN
from support.ports import free_port
from support.serve import ROOT, serve_process

CHROMIUM = Path("/usr/bin/chromium")
playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is not installed (pip install "
    "'.[test]'; .ci/run installs it)")
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)",
                allow_module_level=True)

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
#: Demo data ending here, so README's October 2026 query has data whatever today is.
DEMO_NOW = "2026-11-20T12:00:00+00:00"
DEMO_EVENTS = 4000
WAIT_MS = 30_000


def readme_first_query() -> str:
    """The first ```graphql block after README's "## First query" heading."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## First query\n", 1)[1]
    match = re.search(r"```graphql\n(.*?)```", section, flags=re.S)
    assert match is not None, "README's 'First query' section has no graphql block"
    return match.group(1)


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite file with the demo organisations (fewer events than ``serve --demo``
    seeds; ``serve --demo`` leaves an existing demo alone)."""
    path = tmp_path_factory.mktemp("graphiql") / "demo.sqlite3"
    url = f"sqlite://{path}"
    script = ("import asyncio\nfrom datetime import datetime\n"
              "from gql_usage.demo import seed_demo\n"
              "from gql_usage.storage.db import close_db, init_db\n"
              "async def main():\n"
              f"    await init_db({url!r})\n"
              f"    try: await seed_demo(events={DEMO_EVENTS}, "
              f"now=datetime.fromisoformat({DEMO_NOW!r}))\n"
              "    finally: await close_db()\n"
              "asyncio.run(main())\n")
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True, timeout=300)
    return url


@dataclass
class Running:
    url: str
    log: Path

    def tokens(self) -> dict[str, str]:
        """The tokens ``serve --demo`` printed, by label."""
        text = self.log.read_text(errors="replace")
        return dict(re.findall(r"^  (\w+):\n    (\S+)$", text, flags=re.M))


@contextlib.contextmanager
def server(db_url: str, log: Path, *args: str) -> Iterator[Running]:
    port = free_port()
    with serve_process("--host", "127.0.0.1", "--port", str(port), *args, log=log,
                       GQL_USAGE_DATABASE_URL=db_url, GQL_USAGE_JWT_SECRET=JWT_SECRET,
                       GQL_USAGE_SERVICE_TOKEN=SERVICE_TOKEN) as proc:
        running = Running(f"http://127.0.0.1:{port}", log)
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(running.url + "/readyz", timeout=5).status_code == 200:
                    break
            time.sleep(0.2)
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@dataclass
class Watched:
    """What a page did: requests elsewhere (aborted), failures, console errors."""

    origin: str
    foreign: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: (method, URL, Authorization header) of every request to our server.
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)

    def assert_clean(self) -> None:
        assert self.foreign == [], "requests to other hosts were attempted"
        assert self.failed == [], "requests failed"
        assert self.errors == [], "console errors"

    def graphql_posts(self) -> list[str | None]:
        """The Authorization header of each POST /graphql, in order."""
        return [auth for method, url, auth in self.requests
                if method == "POST" and urlsplit(url).path == "/graphql"]


@contextlib.contextmanager
def watched_page(browser: Any, origin: str) -> Iterator[tuple[Any, Watched]]:
    context = browser.new_context()
    page = context.new_page()
    seen = Watched(origin)
    host = urlsplit(origin).netloc

    def route(route: Any) -> None:
        if urlsplit(route.request.url).netloc != host:
            seen.foreign.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    def response(resp: Any) -> None:
        if resp.status >= 400:
            seen.failed.append(f"{resp.status} {resp.request.method} {resp.url}")

    page.route("**/*", route)
    page.on("request", lambda r: seen.requests.append(
        (r.method, r.url, r.headers.get("authorization"))))
    page.on("requestfailed", lambda r: seen.failed.append(
        f"{r.method} {r.url}: {r.failure}"))
    page.on("response", response)
    page.on("console", lambda m: seen.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: seen.errors.append(f"uncaught: {e}"))
    try:
        yield page, seen
    finally:
        context.close()


def is_introspection(request: Any) -> bool:
    return (request.method == "POST" and urlsplit(request.url).path == "/graphql"
            and "IntrospectionQuery" in (request.post_data or ""))


def open_graphiql(page: Any, url: str) -> Any:
    """Load the page; return the response to GraphiQL's first schema introspection."""
    with page.expect_response(lambda r: is_introspection(r.request),
                              timeout=WAIT_MS) as introspected:
        page.goto(url + "/graphql")
    page.wait_for_selector(".graphiql-query-editor .CodeMirror", timeout=WAIT_MS)
    return introspected.value


def direct(url: str, token: str, query: str) -> dict[str, Any]:
    response = httpx.post(url + "/graphql", json={"query": query}, timeout=60,
                          headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert "errors" not in body, body
    return body


def docs_type_names(page: Any) -> set[str]:
    """The Docs explorer's "All Schema Types" (it lists the root types apart)."""
    page.click('button[aria-label="Show Documentation Explorer"]')
    section = page.locator(".graphiql-doc-explorer-section-content").nth(1)
    section.locator(".graphiql-doc-explorer-type-name").first.wait_for(timeout=WAIT_MS)
    return set(section.locator(".graphiql-doc-explorer-type-name").all_inner_texts())


def schema_type_names(url: str, token: str) -> set[str]:
    """What the Docs explorer must list, from a direct introspection: every named type
    but the introspection types and the root types."""
    schema = direct(url, token, "{ __schema { types { name } queryType { name } "
                    "mutationType { name } subscriptionType { name } } }")["data"]["__schema"]
    roots = {schema[k]["name"] for k in ("queryType", "mutationType", "subscriptionType")
             if schema[k]}
    return {t["name"] for t in schema["types"] if not t["name"].startswith("__")} - roots


def run_in_graphiql(page: Any, query: str) -> dict[str, Any]:
    """Paste ``query`` into the query editor, run it, and read the result panel."""
    page.click(".graphiql-query-editor .CodeMirror")
    page.keyboard.press("Control+A")
    page.keyboard.insert_text(query)  # a paste: no key events, no auto-closed brackets
    assert page.evaluate("document.querySelector('.graphiql-query-editor .CodeMirror')"
                         ".CodeMirror.getValue()") == query
    with page.expect_response(lambda r: r.request.method == "POST"
                              and urlsplit(r.url).path == "/graphql"
                              and "Dashboard" in (r.request.post_data or ""),
                              timeout=WAIT_MS):
        page.click('button[aria-label="Execute query (Ctrl-Enter)"]')
    result = ("document.querySelector('.graphiql-response .CodeMirror')"
              ".CodeMirror.getValue()")
    # A locator assertion, not ``wait_for_function``: when its predicate is false at first,
    # Playwright polls it by evaluating a string in the page, which the page's CSP
    # (script-src 'self', no 'unsafe-eval') refuses; the response came late on a loaded
    # machine and the test failed with an EvalError.
    playwright_api.expect(page.locator(".graphiql-response")).to_contain_text(
        '"data"', timeout=WAIT_MS)
    shown: dict[str, Any] = json.loads(page.evaluate(result))
    return shown


def without_forecast(body: dict[str, Any]) -> dict[str, Any]:
    """The answer without the pool's forecast, which moves with the clock between the
    two requests (burn rate per elapsed day)."""
    copy = json.loads(json.dumps(body))
    forecast = copy["data"]["account"]["creditPool"].pop("forecast")
    assert set(forecast) == {"burnRatePerDay", "projectedUsed", "exhaustsAt"}
    return copy


def test_demo_graphiql_runs_the_first_query_offline_with_the_prefilled_token(
        demo_db: str, browser: Any, tmp_path: Path) -> None:
    query = readme_first_query()
    with server(demo_db, tmp_path / "demo.log", "--demo") as running, \
            watched_page(browser, running.url) as (page, seen):
        tokens = running.tokens()
        admin = tokens["paid_admin"]
        introspection = open_graphiql(page, running.url)
        assert introspection.status == 200
        assert "errors" not in introspection.json()
        # The field holds the printed admin token; the first request (the schema) had it.
        assert page.input_value("#token") == admin
        assert seen.graphql_posts()[0] == f"Bearer {admin}"

        shown = run_in_graphiql(page, query)
        expected = direct(running.url, admin, query)
        assert without_forecast(shown) == without_forecast(expected)
        usage = shown["data"]["account"]["usage"]
        assert usage["calls"] > 0 and usage["credits"] > 0
        assert sum(day["credits"] for day in usage["series"]) == usage["credits"]
        assert sum(day["calls"] for day in usage["series"]) == usage["calls"]
        keys = shown["data"]["account"]["apiKeys"]
        assert sum(k["usage"]["credits"] for k in keys) == usage["credits"]

        listed = docs_type_names(page)
        assert listed == schema_type_names(running.url, admin)
        assert {"Account", "CreditPool", "PoolForecast"} <= listed

        # Another token: kept in the browser, and the schema is fetched again with it.
        member = tokens["member"]
        with page.expect_response(lambda r: is_introspection(r.request),
                                  timeout=WAIT_MS) as again:
            page.fill("#token", member)
            page.press("#token", "Enter")
        assert again.value.status == 200
        assert again.value.request.headers["authorization"] == f"Bearer {member}"
        assert page.evaluate("localStorage.getItem('gql_usage:graphiql:token')") == member
        open_graphiql(page, running.url)  # a reload: the kept token beats the demo's
        assert page.input_value("#token") == member
        assert seen.graphql_posts()[-1] == f"Bearer {member}"
        assert set(seen.graphql_posts()) == {f"Bearer {admin}", f"Bearer {member}"}
        seen.assert_clean()


def test_graphiql_without_demo_has_no_token_until_one_is_typed(
        demo_db: str, browser: Any, tmp_path: Path) -> None:
    with server(demo_db, tmp_path / "plain.log") as running, \
            watched_page(browser, running.url) as (page, seen):
        html = httpx.get(running.url + "/graphql").text
        assert "data-demo-token" not in html and "eyJ" not in html
        page.goto(running.url + "/graphql")
        page.wait_for_selector(".graphiql-query-editor .CodeMirror", timeout=WAIT_MS)
        assert page.input_value("#token") == ""
        page.wait_for_selector("#token-status:has-text('No token yet.')", timeout=WAIT_MS)
        assert seen.graphql_posts() == []  # no token, no doomed request

        token = subprocess.run(
            [sys.executable, "-m", "gql_usage.cli", "token", "--user", "u_alice",
             "--account", "acme"], cwd=ROOT, capture_output=True, text=True, check=True,
            env={"GQL_USAGE_JWT_SECRET": JWT_SECRET, "PATH": "/usr/bin:/bin"},
        ).stdout.strip()
        with page.expect_response(lambda r: is_introspection(r.request),
                                  timeout=WAIT_MS) as introspected:
            page.fill("#token", f"Bearer {token}")  # pasted with its scheme: dropped
            page.click("#token-form button")
        assert introspected.value.status == 200
        assert seen.graphql_posts() == [f"Bearer {token}"]
        assert docs_type_names(page) == schema_type_names(running.url, token)
        seen.assert_clean()

"""The GraphiQL page (``gql_usage.http.graphiql``): its Content-Security-Policy
(``ide_csp``), its assets served from the package (headers, content addressing, the
MANIFEST.json check, the demo token), and the strict default policy of every other
response (``gql_usage.http.security_headers``).

Hashes below were computed outside Python:
``printf '%s' 'alert(1)' | openssl dgst -sha256 -binary | base64``."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from gql_usage.app import create_app
from gql_usage.http import graphiql
from gql_usage.http.graphiql import AssetMismatch, GraphiQLPage, ide_csp, load_assets
from gql_usage.http.security_headers import STRICT_CSP, SecurityHeaders
from gql_usage.settings import Settings

TAIL = ("img-src data:; font-src data:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
ALERT = "'sha256-bhHHL3z2vDgxUt0W3dWQOrprscmda2Y5pLsLg4GF+pI='"  # alert(1)
LOG_B = "'sha256-5O1hHxsCGwQnhI/IsHsCFZjJb0p/hZlodtMlCd5Waz0='"  # console.log("b")
RAW = "'sha256-FfL7I9dSkl9fsDNOE9YSjHAHd+8/K6ystzlf+iSM24E='"  # let a = 1 &amp;&amp; 2 < 3;
INIT = "'sha256-N88KZC80RUxsxVNG27WE7qdYlYUqJA9C9W6iVdr6bJU='"  # "\n  init();\n"


def directives(policy: str) -> dict[str, list[str]]:
    parts = [p.split() for p in policy.split(";")]
    return {p[0]: p[1:] for p in parts}


def test_every_inline_script_is_hashed_and_every_external_asset_listed() -> None:
    page = ("<html><head>"
            '<script src="https://cdn.example/a.js" integrity="sha384-x"></script>'
            '<link rel="stylesheet" href="https://cdn.example/a.css">'
            '<link rel="icon" href="data:image/svg+xml,x">'
            '<link rel="preload" href="https://other.example/p.js">'
            "<style>body { margin: 0 }</style>"
            "<script>alert(1)</script></head>"
            '<body><script>console.log("b")</script>'
            '<script src="https://cdn.example/b.js"></script></body></html>')
    assert ide_csp(page) == (
        "default-src 'none'; "
        f"script-src https://cdn.example/a.js https://cdn.example/b.js {ALERT} {LOG_B}; "
        "style-src https://cdn.example/a.css 'unsafe-inline'; " + TAIL)


def test_inline_script_text_is_hashed_raw_as_the_browser_does() -> None:
    """Entities and ``<`` inside a script are its text, not markup: the hash is of the
    bytes between the tags, whitespace included."""
    policy = ide_csp("<script>let a = 1 &amp;&amp; 2 < 3;</script>"
                     "<SCRIPT>\n  init();\n</SCRIPT>")
    assert directives(policy)["script-src"] == [RAW, INIT]


def test_no_host_is_allowed_that_the_page_does_not_load() -> None:
    policy = ide_csp("<html><body><script>alert(1)</script></body></html>")
    assert policy == ("default-src 'none'; "
                      f"script-src {ALERT}; style-src 'unsafe-inline'; " + TAIL)
    assert "unpkg" not in policy and "http" not in policy and "'unsafe-eval'" not in policy


def test_a_stylesheet_link_is_recognised_whatever_the_case_of_rel() -> None:
    policy = ide_csp('<link rel="StyleSheet" href="https://cdn.example/s.css">')
    assert directives(policy)["style-src"] == ["https://cdn.example/s.css", "'unsafe-inline'"]
    assert directives(policy)["script-src"] == []


def test_same_origin_assets_are_self_once_and_other_hosts_stay_named() -> None:
    """A page-relative URL is this server (``'self'``, once however many); a
    protocol-relative one (``//host/x.js``) is another host, named in full."""
    policy = ide_csp('<script src="/a/1.js"></script><script src="/b/2.js"></script>'
                     '<script src="//cdn.example/c.js"></script>'
                     '<link rel="stylesheet" href="/s.css">')
    assert directives(policy)["script-src"] == ["'self'", "//cdn.example/c.js"]
    assert directives(policy)["style-src"] == ["'self'", "'unsafe-inline'"]


def test_our_graphiql_page_loads_from_this_server_only() -> None:
    page = GraphiQLPage().html
    # Read with regular expressions, independently of the HTML parser under test.
    script_urls = re.findall(r'<script[^>]*\ssrc="([^"]+)"', page)
    style_urls = re.findall(r'<link[^>]*rel="stylesheet"[^>]*href="([^"]+)"', page)
    assert (len(script_urls), len(style_urls)) == (4, 2)
    assert re.findall(r"<script>", page) == [] and "<style" not in page
    assert all(re.fullmatch(r"/graphql/assets/[0-9a-f]{16}/[\w.-]+\.(js|css)", url)
               for url in [*script_urls, *style_urls])
    assert re.findall(r'(?:src|href)="(?:[a-z]+:)?//', page) == []  # no other host
    assert GraphiQLPage().headers == {"Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; " + TAIL)}


def test_the_strict_default_policy() -> None:
    assert STRICT_CSP == ("default-src 'none'; frame-ancestors 'none'; base-uri 'none'; "
                          "form-action 'none'")


async def _csp_of(page_policy: str | None) -> list[str]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"text/html")]
        if page_policy is not None:
            headers.append((b"content-security-policy", page_policy.encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"<p>hi</p>"})

    transport = httpx.ASGITransport(app=SecurityHeaders(app))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/")
    return response.headers.get_list("content-security-policy")


async def test_every_response_without_a_policy_gets_the_strict_one() -> None:
    assert await _csp_of(None) == [
        "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"]


async def test_a_page_with_its_own_policy_keeps_it_alone() -> None:
    own = "default-src 'none'; script-src 'sha256-x'"
    assert await _csp_of(own) == [own]


# --- the assets ---------------------------------------------------------------------------

STATIC = Path(graphiql.__file__).parent / "static" / "graphiql"
MEDIA = {"js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8"}


def _client() -> httpx.AsyncClient:
    """The whole app (its routes, error handlers and middleware stack) without a
    database: the page and its assets never touch one."""
    settings = Settings(database_url="sqlite://:memory:", jwt_secret="s" * 32,
                        service_token="t")
    return httpx.AsyncClient(transport=httpx.ASGITransport(
        app=create_app(settings, manage_db=False)), base_url="http://t")


async def test_every_asset_the_page_names_is_served_immutable_under_its_hash() -> None:
    page = GraphiQLPage()
    urls = re.findall(r'(?:src|href)="(/graphql/assets/[^"]+)"', page.html)
    async with _client() as client:
        responses = {url: await client.get(url) for url in urls}
    assert len(responses) == 6
    for url, response in responses.items():
        digest, name = url.split("/")[-2:]
        assert response.status_code == 200, url
        assert hashlib.sha256(response.content).hexdigest()[:16] == digest
        assert response.content == (STATIC / name).read_bytes()
        assert response.headers["content-type"] == MEDIA[name.rsplit(".", 1)[1]]
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert response.headers["content-security-policy"] == STRICT_CSP
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cross-origin-resource-policy"] == "same-origin"
    assert page.headers["Content-Security-Policy"].count("'self'") == 3  # scripts, styles,
    # fetch; the page itself is never cached (it may carry the demo's token):
    async with _client() as client:
        assert (await client.get("/graphql")).headers["cache-control"] == "no-store"


async def test_nothing_but_the_pages_current_files_is_served() -> None:
    """Other files of the directory (manifest, licences, the template), another version
    of a file, path tricks: 404 with a coded error, never a file."""
    page = GraphiQLPage()
    ide_js = page.assets["ide.js"]
    manifest = (STATIC / "MANIFEST.json").read_bytes()
    licence = (STATIC / "LICENSE.react").read_bytes()
    wrong = "0" * 16 if not ide_js.sha256.startswith("0" * 16) else "1" * 16
    paths = [
        f"/graphql/assets/{wrong}/ide.js",
        f"/graphql/assets/{ide_js.sha256[:15]}/ide.js",
        f"/graphql/assets/{hashlib.sha256(manifest).hexdigest()[:16]}/MANIFEST.json",
        f"/graphql/assets/{hashlib.sha256(licence).hexdigest()[:16]}/LICENSE.react",
        f"/graphql/assets/{ide_js.sha256[:16]}/..%2FMANIFEST.json",
        f"/graphql/assets/{ide_js.sha256[:16]}/%2e%2e%2f%2e%2e%2ftemplates%2fgraphiql.html",
        "/graphql/assets/../../app.py",
        f"/graphql/assets/{ide_js.sha256[:16]}/ide.js/x",
        "/graphql/assets/ide.js",
    ]
    async with _client() as client:
        responses = {path: await client.get(path) for path in paths}
    for path, response in responses.items():
        assert response.status_code == 404, path
        assert response.json()["code"] == "NOT_FOUND", path
        assert response.headers["cache-control"] == "no-store", path
    assert "no such GraphiQL asset: ide.js" in responses[paths[0]].json()["error"]
    assert "another version" in responses[paths[0]].json()["error"]


def test_the_vendored_files_are_the_manifests_with_their_licences() -> None:
    manifest = json.loads((STATIC / "MANIFEST.json").read_text())
    files = manifest["files"]
    for name, entry in files.items():
        assert hashlib.sha256((STATIC / name).read_bytes()).hexdigest() == entry["sha256"]
        assert manifest["packages"][entry["package"]]["version"] == entry["version"]
    packages = {e["package"] for e in files.values()}
    assert packages == {"graphiql", "react", "react-dom"}
    assert {f"LICENSE.{p}" for p in packages} <= set(files)
    vendored = {p.name for p in STATIC.iterdir()} - {"MANIFEST.json", "ide.js", "ide.css"}
    assert vendored == set(files)  # nothing unlisted


@pytest.fixture
def tampered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    copy = tmp_path / "graphiql"
    shutil.copytree(STATIC, copy)
    monkeypatch.setattr(graphiql, "STATIC_DIR", copy)
    load_assets.cache_clear()
    yield copy
    load_assets.cache_clear()


@pytest.mark.parametrize("name", ["react-18.3.1.production.min.js", "graphiql-3.8.3.min.css",
                                  "LICENSE.graphiql"])
def test_a_vendored_file_that_differs_from_the_manifest_stops_start_up(
        tampered: Path, name: str) -> None:
    with (tampered / name).open("ab") as f:
        f.write(b"\n/* changed */")
    with pytest.raises(AssetMismatch, match=re.escape(name)):
        GraphiQLPage()


def test_the_demo_token_is_in_the_page_only_when_given_and_escaped() -> None:
    assert "data-demo-token" not in GraphiQLPage().html
    plain = GraphiQLPage(demo_token="eyJ.abc.def")
    assert 'data-demo-token="eyJ.abc.def"' in plain.html
    hostile = GraphiQLPage(demo_token='x" onmouseover="alert(1)"><script>alert(2)</script>')
    assert "<script>alert" not in hostile.html and '" onmouseover' not in hostile.html
    assert ('data-demo-token="x&quot; onmouseover=&quot;alert(1)&quot;&gt;&lt;script&gt;'
            in hostile.html)
    # No inline script either way: the policy does not change.
    assert plain.headers == hostile.headers == GraphiQLPage().headers

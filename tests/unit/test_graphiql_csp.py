"""The GraphiQL page's Content-Security-Policy (``gql_usage.http.graphiql.ide_csp``) and
the strict default of every other response (``gql_usage.http.security_headers``).

Hashes below were computed outside Python:
``printf '%s' 'alert(1)' | openssl dgst -sha256 -binary | base64``."""

from __future__ import annotations

import re

import httpx
from starlette.types import Receive, Scope, Send
from strawberry.http.ides import get_graphql_ide_html

from gql_usage.http.graphiql import ide_csp
from gql_usage.http.security_headers import STRICT_CSP, SecurityHeaders

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


def test_strawberrys_graphiql_page_gets_exactly_its_own_assets() -> None:
    page = get_graphql_ide_html("graphiql")
    sources = directives(ide_csp(page))
    # Read with regular expressions, independently of the HTML parser under test.
    script_urls = re.findall(r'<script[^>]*\ssrc="([^"]+)"', page)
    style_urls = re.findall(r'<link[^>]*rel="stylesheet"[^>]*href="([^"]+)"', page)
    inline = re.findall(r"<script>(.*?)</script>", page, re.S)
    assert (len(script_urls), len(style_urls), len(inline)) == (5, 2, 1)
    assert sources["script-src"][:5] == script_urls
    assert len(sources["script-src"]) == 6 and sources["script-src"][5].startswith("'sha256-")
    assert sources["style-src"] == [*style_urls, "'unsafe-inline'"]
    assert sources["default-src"] == ["'none'"] and sources["frame-ancestors"] == ["'none'"]
    assert sources["connect-src"] == ["'self'"]


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

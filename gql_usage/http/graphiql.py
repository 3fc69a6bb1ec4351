"""GraphiQL served from the package: our page (``templates/graphiql.html``), its
pinned third-party assets and our script (``static/graphiql/``, listed with their
sha256 in ``MANIFEST.json``) under content-addressed, immutable URLs, and the page's
Content-Security-Policy, derived from the page itself. Nothing is loaded from another
host. See docs/graphiql.md."""

from __future__ import annotations

import functools
import hashlib
import html
import json
from base64 import b64encode
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from string import Template

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gql_usage.http.errors import NOT_FOUND, error_response

STATIC_DIR = Path(__file__).parent / "static" / "graphiql"
TEMPLATE_PATH = Path(__file__).parent / "templates" / "graphiql.html"
#: Assets are served at ``{ASSET_PREFIX}/{first 16 hex digits of sha256}/{file name}``.
ASSET_PREFIX = "/graphql/assets"
#: A URL names one content for ever (its hash is in it): cache it for a year.
ASSET_CACHE_CONTROL = "public, max-age=31536000, immutable"
MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
#: Our own files beside the vendored ones (not in MANIFEST.json, which lists only those).
OWN_ASSETS = ("ide.js", "ide.css")
_DIGEST_CHARS = 16


@dataclass(frozen=True)
class Asset:
    name: str
    #: The npm package it comes from; ``gql_usage`` for our own.
    package: str
    body: bytes
    sha256: str

    @property
    def url(self) -> str:
        return f"{ASSET_PREFIX}/{self.sha256[:_DIGEST_CHARS]}/{self.name}"

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[Path(self.name).suffix]


class AssetMismatch(RuntimeError):
    """A vendored file differs from its sha256 in MANIFEST.json."""


@functools.cache
def load_assets() -> dict[str, Asset]:
    """The page's scripts and style sheets by file name: the vendored ones, each checked
    against its sha256 in ``MANIFEST.json`` (a mismatch stops start-up), and ours."""
    manifest = json.loads((STATIC_DIR / "MANIFEST.json").read_text(encoding="utf-8"))
    assets: dict[str, Asset] = {}
    for name, entry in manifest["files"].items():
        body = (STATIC_DIR / name).read_bytes()
        digest = hashlib.sha256(body).hexdigest()
        if digest != entry["sha256"]:
            raise AssetMismatch(f"{STATIC_DIR / name} has sha256 {digest}, but MANIFEST.json "
                                f"lists {entry['sha256']} ({entry['package']}@"
                                f"{entry['version']}); see docs/graphiql.md")
        if Path(name).suffix in MEDIA_TYPES:
            assets[name] = Asset(name, entry["package"], body, digest)
    for name in OWN_ASSETS:
        body = (STATIC_DIR / name).read_bytes()
        assets[name] = Asset(name, "gql_usage", body, hashlib.sha256(body).hexdigest())
    return assets


def render_page(assets: dict[str, Asset], *, endpoint: str = "/graphql",
                demo_token: str | None = None) -> str:
    """The GraphiQL page; ``demo_token`` (only ever given by ``gql-usage serve --demo``)
    pre-fills the token field."""

    def url(package: str, suffix: str) -> str:
        [asset] = [a for a in assets.values() if a.package == package
                   and a.name.endswith(suffix)]
        return html.escape(asset.url)

    attribute = ("" if demo_token is None
                 else f' data-demo-token="{html.escape(demo_token, quote=True)}"')
    return Template(TEMPLATE_PATH.read_text(encoding="utf-8")).substitute(
        graphiql_css=url("graphiql", ".css"), graphiql_js=url("graphiql", ".js"),
        react_js=url("react", ".js"), react_dom_js=url("react-dom", ".js"),
        ide_js=url("gql_usage", ".js"), ide_css=url("gql_usage", ".css"),
        endpoint=html.escape(endpoint, quote=True), demo_token_attribute=attribute)


class GraphiQLPage:
    """``GET /graphql`` (the page) and ``GET /graphql/assets/...`` (its files)."""

    def __init__(self, *, endpoint: str = "/graphql", demo_token: str | None = None) -> None:
        self.assets = load_assets()
        self.html = render_page(self.assets, endpoint=endpoint, demo_token=demo_token)
        self.headers = {"Content-Security-Policy": ide_csp(self.html)}

    async def page(self, scope: Scope, receive: Receive, send: Send) -> None:
        await HTMLResponse(self.html, headers=self.headers)(scope, receive, send)

    async def asset(self, request: Request) -> Response:
        name, digest = request.path_params["name"], request.path_params["digest"]
        asset = self.assets.get(name)
        if asset is None or asset.sha256[:_DIGEST_CHARS] != digest:
            known = "unknown file" if asset is None else "another version"
            return error_response(request.url.path, 404, f"no such GraphiQL asset: {name} "
                                  f"at {digest} ({known}; the page names the current URLs)",
                                  NOT_FOUND)
        return Response(asset.body, media_type=asset.media_type, headers={
            "Cache-Control": ASSET_CACHE_CONTROL,
            "Cross-Origin-Resource-Policy": "same-origin"})

    def routes(self) -> list[Route]:
        return [Route(ASSET_PREFIX + "/{digest}/{name}", self.asset, methods=["GET"])]


class _PageAssets(HTMLParser):
    """External scripts and style sheets of a page, and the text of its inline scripts."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.script_urls: list[str] = []
        self.style_urls: list[str] = []
        self.inline_scripts: list[str] = []
        self._inline: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "script":
            if attributes.get("src"):
                self.script_urls.append(str(attributes["src"]))
            else:
                self._inline = []
        elif tag == "link" and (attributes.get("rel") or "").lower() == "stylesheet":
            self.style_urls.append(str(attributes["href"]))

    def handle_data(self, data: str) -> None:
        if self._inline is not None:
            self._inline.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._inline is not None:
            self.inline_scripts.append("".join(self._inline))
            self._inline = None


def _source(url: str) -> str:
    """A page-relative URL is the page's own origin: ``'self'``."""
    return "'self'" if url.startswith("/") and not url.startswith("//") else url


def _sha256_source(text: str) -> str:
    return "'sha256-" + b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def ide_csp(html: str) -> str:
    """The Content-Security-Policy of the GraphiQL page, derived from the page itself:
    its external scripts and style sheets by URL (``'self'`` for our own, once), its
    inline scripts by SHA-256 hash;
    ``'unsafe-inline'`` styles (GraphiQL inserts ``<style>`` elements at run time);
    fonts and images from ``data:``; no ``'unsafe-eval'``, no framing. See README,
    "What every response carries"."""
    assets = _PageAssets()
    assets.feed(html)
    assets.close()
    scripts = " ".join(dict.fromkeys([*map(_source, assets.script_urls),
                                      *map(_sha256_source, assets.inline_scripts)]))
    styles = " ".join(dict.fromkeys([*map(_source, assets.style_urls), "'unsafe-inline'"]))
    return (f"default-src 'none'; script-src {scripts}; style-src {styles}; "
            "img-src data:; font-src data:; connect-src 'self'; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")

"""HTTP hygiene around the application: request ids, access log, security headers, CORS,
request timeouts, JSON-only GraphQL POSTs, and the liveness/readiness probes.

``harden(app, settings)`` wraps the Starlette app; outermost first:

``RequestId`` -> ``SecurityHeaders`` -> ``AccessLog`` -> ``CORSMiddleware`` ->
``RequestTimeout`` -> the app.

so every answer, including CORS preflights, timeouts and the last-resort 500, carries
``X-Request-ID`` and the security headers, and is written to the access log.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from base64 import b64encode
from collections.abc import Iterable
from html.parser import HTMLParser
from typing import Any

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from tortoise.migrations.loader import MigrationLoader

from gql_usage.db import Sql, Value, connection, dialect, tortoise_config
from gql_usage.logs import request_id_var
from gql_usage.settings import Settings

log = logging.getLogger("gql_usage.http")
access_log = logging.getLogger("gql_usage.access")

TIMEOUT = "TIMEOUT"
INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"
NOT_FOUND = "NOT_FOUND"
METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
UNAUTHENTICATED = "UNAUTHENTICATED"
PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
BAD_USER_INPUT = "BAD_USER_INPUT"
SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
CORS_REJECTED = "CORS_REJECTED"
#: The code of an ``HTTPException`` by status (Starlette raises 404 and 405 itself).
HTTP_EXCEPTION_CODES = {400: BAD_USER_INPUT, 401: UNAUTHENTICATED, 404: NOT_FOUND,
                        405: METHOD_NOT_ALLOWED, 413: PAYLOAD_TOO_LARGE,
                        415: UNSUPPORTED_MEDIA_TYPE, 422: BAD_USER_INPUT,
                        503: SERVICE_UNAVAILABLE}
GRAPHQL_PATH = "/graphql"
#: Applied to every response that does not set its own policy: it serves no documents.
STRICT_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", STRICT_CSP.encode()),
    (b"cache-control", b"no-store"),
)
#: Headers a browser may send cross-origin (CORS), and the ones it may read back.
CORS_ALLOW_HEADERS = ("Authorization", "Content-Type", "X-Request-ID")
CORS_EXPOSE_HEADERS = ("X-Request-ID", "Retry-After", "X-RateLimit-Limit",
                       "X-RateLimit-Remaining", "X-RateLimit-Used", "X-RateLimit-Reset",
                       "X-Query-Cost")


# --- error answers ----------------------------------------------------------------------

def error_response(path: str, status: int, message: str, code: str,
                   **extensions: Any) -> JSONResponse:
    """A coded JSON error in the shape of the route: GraphQL's on ``/graphql``, the
    service API's (``{"error", "code"}``) elsewhere."""
    if path == GRAPHQL_PATH:
        body: dict[str, Any] = {"data": None, "errors": [
            {"message": message, "extensions": {"code": code, **extensions}}]}
    else:
        body = {"error": message, "code": code, **extensions}
    return JSONResponse(body, status_code=status)


def internal_error_response(scope: Scope) -> JSONResponse:
    """The coded 500 for an unexpected exception: no internals, the request id to quote."""
    request_id = str(scope.get("state", {}).get("request_id", "-"))
    return error_response(scope["path"], 500, f"Internal server error (request id "
                          f"{request_id})", INTERNAL_SERVER_ERROR, requestId=request_id)


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's ``HTTPException``s (no route: 404; a route without the method: 405)
    as coded JSON instead of Starlette's plain text."""
    assert isinstance(exc, HTTPException)
    path, status = request.url.path, exc.status_code
    if status == 404:
        message = f"no such route: {request.method} {path}"
    elif status == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        message = f"method {request.method} not allowed on {path} (allowed: {allowed})"
    else:
        message = exc.detail
    code = HTTP_EXCEPTION_CODES.get(status, INTERNAL_SERVER_ERROR if status >= 500
                                    else BAD_USER_INPUT)
    response = error_response(path, status, message, code)
    response.headers.update(exc.headers or {})
    return response


async def internal_error(request: Request, exc: Exception) -> Response:
    """Starlette's handler for exceptions escaping a route (``ServerErrorMiddleware``
    sends this, then re-raises to ``AccessLog``, which logs it with the request id)."""
    return internal_error_response(request.scope)


# --- request id and access log -----------------------------------------------------------

def _sane_request_id(given: bytes) -> str | None:
    text = given.decode("latin-1")
    if 0 < len(text) <= 64 and text.isascii() and text.replace("-", "").isalnum():
        return text
    return None


class RequestId:
    """Gives every request an id: the caller's ``X-Request-ID`` when it is sane (1-64
    letters, digits, dashes), a fresh one otherwise. The id is sent back as
    ``X-Request-ID``, kept in ``scope["state"]["request_id"]`` and in the logging
    context (``gql_usage.logs.request_id_var``) while the request runs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _sane_request_id(dict(scope["headers"]).get(b"x-request-id", b"")) \
            or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        token = request_id_var.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


class AccessLog:
    """One ``gql_usage.access`` record per request (method, path, status, duration_ms),
    and the last line of defence: an exception escaping the app is logged with the
    request id and answered with a coded 500 (if no answer was started)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: int | None = None
        complete = False

        async def send_tracking(message: Message) -> None:
            nonlocal status, complete
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                complete = True
            await send(message)

        try:
            await self.app(scope, receive, send_tracking)
        except Exception:
            log.exception("unhandled error in %s %s", scope["method"], scope["path"])
            if status is None:
                await internal_error_response(scope)(scope, receive, send_tracking)
            elif not complete:
                raise  # an answer is half sent: let the server drop the connection
        finally:
            duration_ms = round((time.perf_counter() - started) * 1000, 3)
            access_log.info("%s %s %s %.1fms", scope["method"], scope["path"], status,
                            duration_ms, extra={"method": scope["method"],
                                                "path": scope["path"], "status": status,
                                                "duration_ms": duration_ms})


# --- security headers --------------------------------------------------------------------

class SecurityHeaders:
    """Adds ``SECURITY_HEADERS`` to every response, except those it already sets (the
    GraphiQL page brings its own ``Content-Security-Policy``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in present)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


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


def _sha256_source(text: str) -> str:
    return "'sha256-" + b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def ide_csp(html: str) -> str:
    """The Content-Security-Policy of the GraphiQL page, derived from the page itself:
    exactly its external scripts and style sheets (by full URL, each also pinned by
    Subresource Integrity in the page), its inline script by hash, fonts and images from
    ``data:`` (GraphiQL's CSS embeds them), requests to this origin only. Styles also
    need ``'unsafe-inline'``: the page has a ``<style>`` block and GraphiQL's components
    insert ``<style>`` elements at run time. No ``'unsafe-eval'``, no framing."""
    assets = _PageAssets()
    assets.feed(html)
    assets.close()
    scripts = " ".join([*assets.script_urls, *map(_sha256_source, assets.inline_scripts)])
    styles = " ".join([*assets.style_urls, "'unsafe-inline'"])
    return (f"default-src 'none'; script-src {scripts}; style-src {styles}; "
            "img-src data:; font-src data:; connect-src 'self'; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


# --- CSRF-safe GraphQL requests ----------------------------------------------------------

def is_json_content_type(value: str | None) -> bool:
    """Whether a request ``Content-Type`` is JSON (``application/json``, parameters such
    as ``charset`` allowed). Browsers send cross-site "simple" requests only as
    ``text/plain``, ``multipart/form-data`` or ``application/x-www-form-urlencoded``; a
    JSON content type needs a CORS preflight, which ``cors_origins`` governs."""
    if not value:
        return False
    essence = value.split(";", 1)[0].strip().lower()
    return essence == "application/json"


# --- CORS ----------------------------------------------------------------------------------

class JsonCORSMiddleware(CORSMiddleware):
    """Starlette's CORS middleware, refusing a preflight with coded JSON (400
    ``CORS_REJECTED``, naming what was disallowed) instead of plain text."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        detail = bytes(response.body).decode("utf-8", "replace")  # "Disallowed CORS origin"
        refusal = error_response("", response.status_code, f"CORS preflight refused: {detail}",
                                 CORS_REJECTED)
        for name, value in response.headers.items():
            if name not in ("content-type", "content-length"):
                refusal.headers[name] = value
        return refusal


# --- timeouts ----------------------------------------------------------------------------

class RequestTimeout:
    """Answers 503 (coded ``TIMEOUT``) when the app has not started its response within
    ``seconds`` of the request's arrival; reading a slow request body counts.

    Once the response has started, the deadline is lifted: a response is never cut off
    half-way (a client would get a truncated body it cannot tell from a complete one).
    All our responses are sent in one piece once computed, so the deadline bounds the
    whole of the work in practice."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        deadline = asyncio.timeout(self.seconds)

        async def send_lifting_deadline(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                deadline.reschedule(None)
            await send(message)

        try:
            async with deadline:
                await self.app(scope, receive, send_lifting_deadline)
        except TimeoutError:
            if not deadline.expired() or started:
                raise  # a TimeoutError of the app's own, not our deadline
            log.warning("request timed out after %ss: %s %s", self.seconds, scope["method"],
                        scope["path"])
            response = error_response(scope["path"], 503, "request timed out after "
                                      f"{self.seconds:g} s", TIMEOUT)
            await response(scope, receive, send)


# --- probes ------------------------------------------------------------------------------

async def healthz(request: Request) -> Response:
    """Liveness: the process answers."""
    return JSONResponse({"status": "ok"})


class Readiness:
    """``GET /readyz`` (``Readiness().endpoint``): 200 when the database answers and
    every migration shipped in ``gql_usage/migrations`` is recorded as applied; 503 with
    the reason otherwise."""

    def __init__(self, app_label: str = "models") -> None:
        apps = tortoise_config("sqlite://:memory:")["apps"]
        loader = MigrationLoader(apps, recorder=None)  # type: ignore[arg-type]
        loader.load_disk()  # Tortoise's own discovery of migration files
        self.app_label = app_label
        self.expected = sorted(key.name for key in loader.disk_migrations
                               if key.app_label == app_label)

    async def endpoint(self, request: Request) -> Response:
        try:
            conn = connection()
            await conn.execute_query("SELECT 1")
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            log.warning("readiness: database unreachable: %s", exc)
            return self._unready(f"database unreachable ({type(exc).__name__})")
        try:
            applied = await self._applied()
        except Exception as exc:  # noqa: BLE001 - no migrations table, for one
            log.warning("readiness: cannot read applied migrations: %s", exc)
            return self._unready("no migrations applied", pending=self.expected)
        pending = [name for name in self.expected if name not in applied]
        if pending:
            return self._unready("migrations not applied", pending=pending)
        return JSONResponse({"status": "ok", "migrations": self.expected})

    async def _applied(self) -> set[str]:
        sql = Sql(dialect()).add('SELECT "name" FROM "tortoise_migrations" WHERE "app" = ',
                                 Value(self.app_label))
        _, rows = await connection().execute_query(sql.text, sql.params)
        return {row["name"] for row in rows}

    @staticmethod
    def _unready(reason: str, **detail: Iterable[str]) -> Response:
        body: dict[str, Any] = {"status": "unavailable", "reason": reason,
                                "error": f"not ready: {reason}", "code": SERVICE_UNAVAILABLE}
        body.update({key: list(value) for key, value in detail.items()})
        return JSONResponse(body, status_code=503)


# --- assembly ----------------------------------------------------------------------------

def harden(app: ASGIApp, settings: Settings) -> ASGIApp:
    """Wrap ``app`` in the middlewares above, configured from ``settings``."""
    wrapped: ASGIApp = RequestTimeout(app, settings.request_timeout_seconds)
    wrapped = JsonCORSMiddleware(wrapped, allow_origins=settings.cors_origins,
                             allow_methods=("GET", "POST"), allow_headers=CORS_ALLOW_HEADERS,
                             expose_headers=CORS_EXPOSE_HEADERS, allow_credentials=False,
                             max_age=600)
    wrapped = AccessLog(wrapped)
    wrapped = SecurityHeaders(wrapped)
    return RequestId(wrapped)

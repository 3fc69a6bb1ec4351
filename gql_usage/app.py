"""The ASGI application: GraphQL (``/graphql``), the service API (``/v1``) and probes."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

from cross_web import HTTPException
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send
from strawberry.asgi import GraphQL
from strawberry.types.unset import UNSET

from gql_usage.auth import AuthError, Viewer, load_viewer
from gql_usage.db import close_db, connection, init_db
from gql_usage.graphql.context import Context
from gql_usage.graphql.errors import BAD_USER_INPUT, UNAUTHENTICATED
from gql_usage.graphql.schema import schema
from gql_usage.ingest import Ingestor
from gql_usage.loaders import Loaders
from gql_usage.service_api import BodyTooLarge, ServiceApi, read_body
from gql_usage.settings import Settings

log = logging.getLogger("gql_usage")


class GraphQLView(GraphQL[Context, None]):
    async def run(self, request: Any, context: Any = UNSET, root_value: Any = UNSET) -> Any:
        """Malformed GraphQL-over-HTTP requests answer in GraphQL's error shape too."""
        try:
            return await super().run(request, context=context, root_value=root_value)
        except HTTPException as exc:
            return _graphql_error(exc.status_code, exc.reason, BAD_USER_INPUT)

    async def get_context(self, request: Any, response: Any = None) -> Context:
        state = request.scope["state"]
        viewer: Viewer = state["viewer"]
        return Context(request=request, response=response, viewer=viewer,
                       loaders=Loaders(viewer.account.id), request_id=state["request_id"])


class RequestId:
    """Gives every request an id (``X-Request-ID``, kept when the caller sends a sane one)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if given.isascii() and 0 < len(given) <= 64 and given.replace(
            "-", "").isalnum() else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"],
                                      (b"x-request-id", request_id.encode())]
            await send(message)

        await self.app(scope, receive, send_with_id)


def _graphql_error(status: int, message: str, code: str) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="gql_usage"'} if status == 401 else None
    return JSONResponse({"data": None, "errors": [{"message": message,
                                                   "extensions": {"code": code}}]},
                        status_code=status, headers=headers)


class GraphQLEndpoint:
    """Authenticates, bounds the body, then hands the request to Strawberry."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.view = GraphQLView(schema, graphql_ide="graphiql")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        wants_ide = request.method == "GET" and "query" not in request.query_params
        if wants_ide:  # GraphiQL needs no token; the queries it sends do
            await HTMLResponse(self.view.graphql_ide_html)(scope, receive, send)
            return
        try:
            viewer = await load_viewer(str(self.settings.jwt_secret),
                                       request.headers.get("authorization"))
        except AuthError as exc:
            await _graphql_error(401, str(exc), UNAUTHENTICATED)(scope, receive, send)
            return
        scope.setdefault("state", {})["viewer"] = viewer
        if request.method == "POST":
            try:
                body = await read_body(request, self.settings.max_graphql_body_bytes)
            except BodyTooLarge:
                response = _graphql_error(413, "request body exceeds "
                                          f"{self.settings.max_graphql_body_bytes} bytes",
                                          BAD_USER_INPUT)
                await response(scope, receive, send)
                return
            receive = _replay(body)
        await self.view(scope, receive, send)


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    try:
        await connection().execute_query("SELECT 1 FROM tortoise_migrations LIMIT 1")
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        log.warning("readiness check failed: %s", exc)
        return JSONResponse({"status": "unavailable"}, status_code=503)
    return JSONResponse({"status": "ok"})


def create_app(settings: Settings, *, manage_db: bool = True) -> ASGIApp:
    """The application; with ``manage_db`` it migrates and connects on start-up."""
    settings.require("jwt_secret", "service_token")
    service = ServiceApi(settings, Ingestor(max_future_seconds=settings.max_future_seconds))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if manage_db:
            await init_db(settings.database_url)
        try:
            yield
        finally:
            if manage_db:
                await close_db()

    graphql = GraphQLEndpoint(settings)
    routes = [
        Route("/graphql", graphql, methods=["GET", "POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        *service.routes(),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    return RequestId(app)

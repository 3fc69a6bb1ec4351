"""Database faults: which exceptions mean "the database is unavailable, retry later", and
the ``503 Service Unavailable`` answers that say so (never a 500; nothing was stored).

``is_unavailable`` classifies; ``DatabaseFaults`` (ASGI middleware) answers 503 on every
route; ``forget_connections`` has the pools replace connections opened before an outage,
so the service recovers without a restart. See README, 'Faults and event age'.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sqlite3
from typing import Any

import asyncpg
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from tortoise import connections

log = logging.getLogger("gql_usage.faults")

SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
UNAVAILABLE_MESSAGE = "database unavailable, retry"

#: asyncpg errors that mean the server cannot serve now but will again (SQLSTATE classes
#: 08 connection exception, 57P01-57P03 shutdown/crash/starting up, 53300 too many
#: connections). Protocol violations (08P01) are bugs, not outages.
_ASYNCPG_UNAVAILABLE: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.ClientCannotConnectError,
    asyncpg.exceptions.ConnectionRejectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
)

#: Message fragments (lower case) of outages, for errors that arrive as text only: a
#: Tortoise ``OperationalError`` wrapping a driver error, an asyncpg ``InterfaceError``
#: about a connection that died, SQLite's ``OperationalError``.
_UNAVAILABLE_TEXT = (
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "terminating connection due to administrator command",
    "terminating connection due to unexpected postmaster exit",
    "connection was closed in the middle of operation",
    "the underlying connection is closed",
    "connection is closed",
    "pool is closing",
    "pool is closed",
    "server closed the connection unexpectedly",
    "connection refused",
    "connect call failed",
    "database is locked",
    "database table is locked",
    "unable to open database file",
    "disk i/o error",
)


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc``, the exceptions it was raised from or during, and exceptions it wraps (as
    Tortoise does: ``OperationalError(driver_error)``); each once."""
    seen: list[BaseException] = []
    todo = [exc]
    while todo:
        current = todo.pop()
        if any(current is s for s in seen) or len(seen) > 20:
            continue
        seen.append(current)
        for nested in (current.__cause__, current.__context__, *current.args):
            if isinstance(nested, BaseException):
                todo.append(nested)
        if isinstance(current, BaseExceptionGroup):
            todo.extend(current.exceptions)
    return seen


def _unavailable_one(exc: BaseException) -> bool:
    if isinstance(exc, _ASYNCPG_UNAVAILABLE):
        return True
    # Refused, reset, timed-out or unresolvable connects (Tortoise's DBConnectionError is a
    # ConnectionError), and asyncpg's plain OSError for "Multiple exceptions" / unreachable
    # networks; not file-system errors such as FileNotFoundError or PermissionError.
    if isinstance(exc, ConnectionError | TimeoutError | socket.gaierror) or type(exc) is OSError:
        return True
    if isinstance(exc, asyncpg.exceptions.InternalClientError):
        # The protocol is still waiting for the end of an error that the dying server
        # sent on a pooled connection ("cannot switch to state 12; another operation (2)
        # is in progress"): a connection the server dropped, not a bug of ours. Real
        # concurrent use is refused earlier, as an InterfaceError.
        return "cannot switch to state" in str(exc)
    if isinstance(exc, asyncpg.exceptions.InternalServerError):
        # A Citus coordinator's backend that was waiting on its workers when the
        # coordinator's postmaster died says so itself (XX000), before it is killed too.
        return "postmaster was shut down" in str(exc)
    if isinstance(exc, asyncpg.exceptions.InterfaceError | sqlite3.OperationalError) or (
        type(exc).__name__ in ("OperationalError", "TransactionManagementError")
    ):
        text = str(exc).lower()
        return any(fragment in text for fragment in _UNAVAILABLE_TEXT)
    return False


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` (or anything in its chain) says the database cannot be reached or
    cannot take the request right now, so that a retry later may succeed."""
    return any(_unavailable_one(e) for e in _causes(exc))


async def forget_connections() -> None:
    """Have every pool replace the connections it opened before the outage (asyncpg's
    ``Pool.expire_connections``; each is swapped for a new one on its next acquire, or
    closed when released if in use). A connection that went stale without noticing (the
    server's goodbye still being processed, or a host that vanished without closing its
    sockets) is then never handed out again once the server is back."""
    with contextlib.suppress(Exception):  # no Tortoise context: nothing to expire
        for client in connections.all():
            expire = getattr(client, "_expire_connections", None)
            if expire is not None:
                with contextlib.suppress(Exception):
                    await expire()


def describe(exc: BaseException) -> str:
    """The innermost cause, for logs (never sent to clients)."""
    innermost = _causes(exc)[-1]
    return f"{type(innermost).__name__}: {innermost}"


def unavailable_response(retry_after_seconds: int, *, graphql: bool = False) -> JSONResponse:
    """503 with ``Retry-After``; GraphQL-shaped (``errors[].extensions.code``) on /graphql."""
    body: dict[str, Any]
    if graphql:
        body = {"data": None, "errors": [{"message": UNAVAILABLE_MESSAGE,
                                          "extensions": {"code": SERVICE_UNAVAILABLE}}]}
    else:
        body = {"error": UNAVAILABLE_MESSAGE, "code": SERVICE_UNAVAILABLE}
    return JSONResponse(body, status_code=503,
                        headers={"Retry-After": str(retry_after_seconds)})


def has_unavailable_error(response_data: Any) -> bool:
    """Whether a processed GraphQL result (or batch of them) carries a
    ``SERVICE_UNAVAILABLE`` error, so that the HTTP answer should be 503."""
    results = response_data if isinstance(response_data, list) else [response_data]
    return any(
        (error.get("extensions") or {}).get("code") == SERVICE_UNAVAILABLE
        for result in results if isinstance(result, dict)
        for error in result.get("errors") or []
    )


class DatabaseFaults:
    """ASGI middleware: an exception from the database being unavailable becomes 503 with
    ``Retry-After`` (if no response has started yet); any other exception passes on."""

    def __init__(self, app: ASGIApp, retry_after_seconds: int) -> None:
        self.app = app
        self.retry_after_seconds = retry_after_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        status = 0

        async def tracking_send(message: Message) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started, status = True, int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started or not is_unavailable(exc):
                raise
            log.warning("database unavailable during %s %s: %s", scope.get("method"),
                        scope.get("path"), describe(exc))
            path = str(scope.get("path", ""))
            response = unavailable_response(self.retry_after_seconds,
                                            graphql=path.startswith("/graphql"))
            await response(scope, receive, send)
            status = 503
        if status == 503:  # this or a resolver's (GraphQL), or /readyz: an outage
            await forget_connections()

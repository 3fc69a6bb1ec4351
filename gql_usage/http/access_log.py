"""The access log, and the last-resort coded 500 for an exception escaping the app."""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gql_usage.http.errors import internal_error_response

log = logging.getLogger("gql_usage.http")
access_log = logging.getLogger("gql_usage.access")

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

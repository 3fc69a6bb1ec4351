"""The request timeout: 503 ``TIMEOUT`` when no response has started in time."""

from __future__ import annotations

import asyncio
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gql_usage.http.errors import TIMEOUT, error_response

log = logging.getLogger("gql_usage.http")

class RequestTimeout:
    """Answers 503 (coded ``TIMEOUT``) when the app has not started its response within
    ``seconds`` of the request's arrival (reading a slow body counts). Once it has
    started, the deadline is lifted: a body cut off half-way could not be told from a
    complete one. See README, "Body size and request time"."""

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

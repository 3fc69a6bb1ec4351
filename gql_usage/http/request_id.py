"""Request ids: the caller's ``X-Request-ID`` when sane, a fresh one otherwise."""

from __future__ import annotations

import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gql_usage.logs import request_id_var


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

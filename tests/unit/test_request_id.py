"""``gql_usage.http.request_id.RequestId``: a caller's sane ``X-Request-ID`` (1-64 ASCII
letters, digits, dashes) is kept and echoed; anything else is replaced by a fresh id.
Called as a plain ASGI app, so that any bytes can be sent as the header."""

from __future__ import annotations

import re
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from gql_usage.http.request_id import RequestId
from gql_usage.logs import request_id_var

FRESH = re.compile(r"[0-9a-f]{32}")  # uuid4().hex


async def _call(*header_values: bytes) -> tuple[list[bytes], dict[str, Any]]:
    """(the ``x-request-id`` headers answered, what the app saw)."""
    seen: dict[str, Any] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen["state"] = scope["state"]["request_id"]
        seen["var"] = request_id_var.get()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "GET", "path": "/", "headers":
             [(b"x-request-id", value) for value in header_values]}
    await RequestId(app)(scope, receive, send)
    answered = [v for n, v in sent[0]["headers"] if n == b"x-request-id"]
    return answered, seen


SANE = [b"a", b"abc-123", b"0123-ABCD-ef", b"x" * 64, b"5d0061842c344c1a977a063f1bce91cc",
        b"a-b-c-d"]
INSANE = [
    b"", b"x" * 65,  # length
    b"abc def", b"abc\n", b"abc\r\nX-Admin: 1", b"a\tb",  # whitespace, header injection
    b"a_b", b"a.b", b"a/b", b"a;b", b"%41", b"<script>", b"a\"b", b"{id}",  # punctuation
    "é".encode(), b"\xff\xfe", "\u0661\u0662\u0663".encode(),  # not ASCII (digits too)
    "abc".encode("utf-16"), b"a\x00b",
]


@pytest.mark.parametrize("given", SANE, ids=[v.decode() for v in SANE])
async def test_a_sane_id_is_kept_echoed_and_in_the_logging_context(given: bytes) -> None:
    answered, seen = await _call(given)
    assert answered == [given]
    assert seen == {"state": given.decode(), "var": given.decode()}


@pytest.mark.parametrize("given", INSANE, ids=[repr(v) for v in INSANE])
async def test_an_insane_id_is_replaced_by_a_fresh_one(given: bytes) -> None:
    answered, seen = await _call(given)
    assert len(answered) == 1 and FRESH.fullmatch(answered[0].decode())
    assert seen == {"state": answered[0].decode(), "var": answered[0].decode()}


async def test_no_id_gets_a_fresh_one_each_time_and_the_context_is_reset() -> None:
    before = request_id_var.get()
    first, _ = await _call()
    second, _ = await _call()
    assert FRESH.fullmatch(first[0].decode()) and FRESH.fullmatch(second[0].decode())
    assert first != second
    assert request_id_var.get() == before


async def test_a_non_http_scope_passes_through_untouched() -> None:
    calls: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(scope)

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        raise AssertionError("nothing to send")

    scope: dict[str, Any] = {"type": "lifespan"}
    await RequestId(app)(scope, receive, send)
    assert calls == [{"type": "lifespan"}]

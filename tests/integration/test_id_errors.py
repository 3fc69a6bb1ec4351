"""A raw id where a global id is expected: the error says what the global id looks like,
gives the one for that raw id, and says where ids are listed (issue 13, point 6)."""

from __future__ import annotations

import base64

import pytest
from support.helpers import event, gql, ingest, make_account

USAGE = """query($f: UsageFilter!) { account { usage(filter: $f) { calls credits } } }"""
MONTH = {"from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z"}


@pytest.mark.parametrize(("argument", "raw", "type_name", "listed"), [
    ("apiKeyIds", "k1", "ApiKey", "account { apiKeys { id } }"),
    ("userIds", "admin", "User",
     "viewer { id } or the rows of breakdown(by: USER) { user { id } }"),
])
async def test_a_raw_id_is_answered_with_its_global_id(client, argument, raw, type_name,
                                                       listed):
    await make_account(client, "acme", users=[("admin", "ADMIN")], keys=["k1"])
    assert (await ingest(client, [event("e1", "acme", "k1", "admin", "/v2/person", "api", 7,
                                        "2026-01-05T10:00:00Z")]))["accepted"] == 1
    body = await gql(client, USAGE, {"f": {**MONTH, argument: [raw]}})
    (error,) = body["errors"]
    global_id = base64.b64encode(f"{type_name}:{raw}".encode()).decode()
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "argument": f"filter.{argument}[0]"}
    assert error["message"] == (
        f"account.usage(filter.{argument}[0]): '{raw}' is not a valid id; a global id is the "
        f'base64 of "{type_name}:<id>"; read them from {listed} '
        f"(the {type_name} with id '{raw}' is '{global_id}')")
    # The id the message offers is the one that works.
    body = await gql(client, USAGE, {"f": {**MONTH, argument: [global_id]}})
    assert body["data"]["account"]["usage"] == {"calls": 1, "credits": 7}

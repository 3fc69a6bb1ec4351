"""Regression tests for the strawberry-graphql advisories our pins are above, each an
actual attack against our ASGI app:

* GHSA-79gp-q4wv-33fr / CVE-2024-47082 (fixed in 0.243.0): CSRF through multipart
  uploads, the "simple request" a cross-site HTML form can send;
* GHSA-5xh2-23cc-5jc6 / CVE-2025-22151 (fixed in 0.257.0): Relay ``node`` type
  confusion, one type's global id answering with another type;
* 0.312.3 / 0.314: WebSocket subscription flooding, and the legacy ``graphql-ws``
  handshake bypass (CVE-2026-35523): ``start`` messages without ``connection_init``;
* 0.315.7: circular fragments crashing ``QueryDepthLimiter``, and aliases hidden behind
  fragment spreads escaping ``MaxAliasesLimiter``.

The pins themselves are checked in ``test_pins_are_at_or_above_the_fixed_releases``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import tomllib
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.config import make_settings
from support.helpers import gid, gql, make_account, put, token

from gql_usage.app import GraphQLEndpoint, create_app
from gql_usage.graphql.errors import TOO_MANY_ALIASES
from gql_usage.storage.db import StatementCounter

ROOT = Path(__file__).resolve().parents[2]

#: package -> (release that fixed the advisory, advisory)
FIXED_RELEASES = {
    "strawberry-graphql": [
        ("0.243.0", "GHSA-79gp-q4wv-33fr CSRF via multipart uploads"),
        ("0.257.0", "GHSA-5xh2-23cc-5jc6 Relay node type confusion"),
        ("0.312.3", "CVE-2026-35523 graphql-ws handshake bypass / subscription flooding"),
        ("0.315.7", "QueryDepthLimiter circular fragments, MaxAliasesLimiter spreads"),
    ],
    "starlette": [
        ("0.40.0", "GHSA-f96h-pmfr-66vw multipart/form-data DoS"),
        ("0.47.2", "CVE-2025-54121 large multipart files block the event loop"),
        ("0.49.1", "CVE-2025-62727 Range header O(n^2) in FileResponse"),
    ],
    "h11": [("0.16.0", "CVE-2025-43859 lenient chunked encoding (request smuggling)")],
    "uvicorn": [("0.11.7", "CVE-2020-7694 log injection, CVE-2020-7695 header injection")],
    "pyjwt": [
        ("2.10.1", "CVE-2024-53861 issuer partial match"),
        ("2.12.0", "CVE-2026-32597 crit header not validated"),
    ],
    "tortoise-orm": [("0.16.6", "CVE-2020-11010 SQL injection in filters")],
}


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:3])


def test_pins_are_at_or_above_the_fixed_releases() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lower_bounds: dict[str, str] = {}
    for requirement in project["dependencies"]:
        name, _, spec = requirement.partition(">=")
        lower_bounds[name.split("[")[0].strip()] = spec.split(",")[0].strip()
    for package, fixes in FIXED_RELEASES.items():
        pinned = _version_tuple(lower_bounds[package])
        installed = _version_tuple(version(package))
        for fixed, advisory in fixes:
            assert pinned >= _version_tuple(fixed), f"{package} pin below {fixed}: {advisory}"
            assert installed >= _version_tuple(fixed), f"{package} installed below {fixed}"


# --- (a) CSRF: a cross-site form post executes nothing ------------------------------------

QUERY = "{ viewer { name } account { name } }"
MULTIPART_FORM = {  # the GraphQL multipart request spec, as a cross-site <form> sends it
    "operations": json.dumps({"query": QUERY, "variables": {"file": None}}),
    "map": json.dumps({"0": ["variables.file"]}),
}


async def _simple_request(client: httpx.AsyncClient, kind: str,
                          auth: dict[str, str]) -> httpx.Response:
    """A POST a cross-site page can send without a CORS preflight."""
    body = json.dumps({"query": QUERY}).encode()
    if kind == "multipart":
        response = await client.post("/graphql", data=MULTIPART_FORM, headers=auth,
                                     files={"0": ("a.txt", b"x", "text/plain")})
        assert response.request.headers["content-type"].startswith("multipart/form-data")
        return response
    if kind == "form-urlencoded":
        return await client.post("/graphql", data={"query": QUERY}, headers=auth)
    if kind == "no content type":
        return await client.post("/graphql", content=body, headers=auth)
    return await client.post("/graphql", content=body, headers={**auth, "Content-Type": kind})


async def test_csrf_simple_requests_are_refused_before_anything_runs(
        client: httpx.AsyncClient) -> None:
    await make_account(client, "acme", users=[("admin", "ADMIN")])
    # Worst case: the browser would even attach the credentials.
    auth = {"Authorization": f"Bearer {token('admin', 'acme')}"}
    for kind in ["multipart", "form-urlencoded", "text/plain", "text/plain;application/json",
                 "no content type"]:
        with StatementCounter() as sql:
            response = await _simple_request(client, kind, auth)
        assert response.status_code == 415, kind
        assert response.json() == {"data": None, "errors": [{
            "message": "Content-Type must be application/json",
            "extensions": {"code": "BAD_USER_INPUT"}}]}, kind
        assert sql.count == 0, kind  # refused before authentication read the database


async def test_the_same_request_as_json_runs(client: httpx.AsyncClient) -> None:
    await make_account(client, "acme", users=[("admin", "ADMIN")])
    response = await client.post("/graphql", json={"query": QUERY},
                                 headers={"Authorization": f"Bearer {token('admin', 'acme')}",
                                          "Content-Type": "application/json; charset=utf-8"})
    assert response.status_code == 200
    assert response.json() == {"data": {"viewer": {"name": "User admin"},
                                         "account": {"name": "Account acme"}}}


def test_multipart_uploads_stay_disabled_in_the_view() -> None:
    endpoint = GraphQLEndpoint(make_settings("sqlite://:memory:"))
    assert endpoint.view.multipart_uploads_enabled is False


# --- (b) Relay node type confusion -------------------------------------------------------

NODE = """query($id: ID!) { node(id: $id) {
  __typename id
  ... on Account { name plan }
  ... on ApiKey { name prefix }
  ... on User { name email role }
} }"""


async def _two_accounts(client: httpx.AsyncClient) -> None:
    # "shared" is both a user id and an API key id in acme; beta has ids acme lacks and
    # one ("k1") that acme has too, with a different secret-looking name.
    await make_account(client, "acme", users=[("admin", "ADMIN"), ("shared", "MEMBER")],
                       keys=["k1", "shared"])
    await make_account(client, "beta", users=[("b_admin", "ADMIN")], keys=["b_key"])
    await put(client, "/v1/accounts/beta/api-keys/k1", {
        "name": "beta secret key", "prefix": "pk_betasecret", "createdBy": "b_admin",
        "createdAt": "2025-06-01T00:00:00Z", "revokedAt": None})


async def _node(client: httpx.AsyncClient, global_id: str) -> dict[str, Any]:
    return await gql(client, NODE, {"id": global_id})


async def test_node_answers_with_the_type_the_id_names(client: httpx.AsyncClient) -> None:
    await _two_accounts(client)
    as_key = await _node(client, gid("ApiKey", "shared"))
    as_user = await _node(client, gid("User", "shared"))
    assert as_key == {"data": {"node": {"__typename": "ApiKey", "id": gid("ApiKey", "shared"),
                                        "name": "Key shared", "prefix": "pk_shared"}}}
    assert as_user == {"data": {"node": {
        "__typename": "User", "id": gid("User", "shared"), "name": "User shared",
        "email": "shared@acme.example", "role": "MEMBER"}}}
    own_k1 = await _node(client, gid("ApiKey", "k1"))
    assert own_k1["data"]["node"] == {"__typename": "ApiKey", "id": gid("ApiKey", "k1"),
                                      "name": "Key k1", "prefix": "pk_k1"}


FORGED_IDS = [
    gid("ApiKey", "admin"),        # a user's id presented as an API key
    gid("User", "k1"),             # an API key's id presented as a user
    gid("Account", "beta"),        # another account
    gid("ApiKey", "b_key"),        # another account's key
    gid("User", "b_admin"),        # another account's user
    gid("Endpoint", "/v2/person"),  # not a Node type
    gid("apikey", "k1"),           # type names are case-sensitive
    gid("ApiKey", "k1:x"),         # an id with a smuggled suffix
    gid("ApiKey", ""),
    "ApiKey:k1",                   # not base64
    gid("ApiKey", "shared").rstrip("="),  # unpadded: one canonical id per object
    "",
]


async def test_forged_and_foreign_ids_resolve_to_nothing(client: httpx.AsyncClient) -> None:
    await _two_accounts(client)
    never_existed = await _node(client, gid("ApiKey", "never-existed"))
    assert never_existed == {"data": {"node": None}}
    for forged in FORGED_IDS:
        # a foreign id is indistinguishable from a missing one: no error, no oracle
        assert await _node(client, forged) == never_existed, forged


async def test_node_as_a_member_obeys_the_listing_rules(client: httpx.AsyncClient) -> None:
    """SPEC 6.1: the tests above run as a paid-plan admin, who may read keys and emails.
    A member (``shared``) reads no API key through ``node``: every ApiKey id, existing,
    foreign, forged or missing, is the same FORBIDDEN (no oracle of which exist); a
    colleague's email is null with FORBIDDEN, their own is readable."""
    await _two_accounts(client)
    as_member = {"user": "shared", "account": "acme"}
    for global_id in [gid("ApiKey", "shared"), gid("ApiKey", "k1"), gid("ApiKey", "b_key"),
                      gid("ApiKey", "admin"), gid("ApiKey", "never-existed")]:
        body = await gql(client, NODE, {"id": global_id}, **as_member)
        assert body["data"] == {"node": None}, global_id
        assert [(e["path"], e["extensions"]["code"]) for e in body["errors"]] == [
            (["node"], "FORBIDDEN")], global_id
    own = await gql(client, NODE, {"id": gid("User", "shared")}, **as_member)
    assert own == {"data": {"node": {"__typename": "User", "id": gid("User", "shared"),
                                     "name": "User shared", "email": "shared@acme.example",
                                     "role": "MEMBER"}}}
    colleague = await gql(client, NODE, {"id": gid("User", "admin")}, **as_member)
    assert colleague["data"] == {"node": {"__typename": "User", "id": gid("User", "admin"),
                                          "name": "User admin", "email": None,
                                          "role": "ADMIN"}}
    assert [(e["path"], e["extensions"]["code"]) for e in colleague["errors"]] == [
        (["node", "email"], "FORBIDDEN")]
    for forged in FORGED_IDS:  # ids that are not one of the member's own users or keys
        body = await gql(client, NODE, {"id": forged}, **as_member)
        assert body["data"] == {"node": None}, forged


# --- (c) WebSocket subscription flooding -------------------------------------------------

async def _websocket_attempt(app: Any, subprotocol: str | None) -> list[dict[str, Any]]:
    """One WebSocket handshake to /graphql, followed by a flood of subscribe messages
    (both protocols' shapes), as raw ASGI messages. Returns what the app sent."""
    flood = [
        {"type": "connection_init"},  # graphql-transport-ws and graphql-ws
        *({"id": str(i), "type": "subscribe", "payload": {"query": "{ viewer { name } }"}}
          for i in range(50)),
        # graphql-ws without connection_init (CVE-2026-35523)
        *({"id": f"s{i}", "type": "start", "payload": {"query": "{ viewer { name } }"}}
          for i in range(50)),
    ]
    incoming: list[dict[str, Any]] = [{"type": "websocket.connect"}]
    incoming += [{"type": "websocket.receive", "text": json.dumps(m)} for m in flood]
    sent: list[dict[str, Any]] = []
    reads = 0

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        if incoming:
            return incoming.pop(0)
        await asyncio.sleep(3600)  # a client that never goes away
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [(b"host", b"testserver"), (b"origin", b"http://testserver"),
               (b"sec-websocket-version", b"13"),
               (b"sec-websocket-key", b"x3JJHMbDL1EzLkh9GBhXDw==")]
    if subprotocol:
        headers.append((b"sec-websocket-protocol", subprotocol.encode()))
    scope = {"type": "websocket", "asgi": {"version": "3.0"}, "scheme": "ws",
             "path": "/graphql", "raw_path": b"/graphql", "query_string": b"",
             "root_path": "", "headers": headers, "client": ("127.0.0.1", 5000),
             "server": ("testserver", 80),
             "subprotocols": [subprotocol] if subprotocol else [], "state": {}}
    await asyncio.wait_for(app(scope, receive, send), timeout=5)
    assert reads <= 1, "the app kept reading a socket it should have refused"
    return sent


@pytest.mark.parametrize("subprotocol", ["graphql-transport-ws", "graphql-ws", None])
async def test_websocket_handshakes_are_refused(subprotocol: str | None) -> None:
    app = create_app(make_settings("sqlite://:memory:"), manage_db=False)
    sent = await _websocket_attempt(app, subprotocol)
    assert [m["type"] for m in sent] == ["websocket.close"]  # never websocket.accept


async def test_a_flood_of_websocket_connections_holds_no_resources() -> None:
    app = create_app(make_settings("sqlite://:memory:"), manage_db=False)
    tasks_before = len(asyncio.all_tasks())
    protocols = ["graphql-transport-ws", "graphql-ws"] * 250
    results = await asyncio.gather(*(_websocket_attempt(app, p) for p in protocols))
    assert all([m["type"] for m in sent] == ["websocket.close"] for sent in results)
    assert len(results) == 500
    assert len(asyncio.all_tasks()) <= tasks_before  # nothing left running per connection


# --- (d) circular fragments --------------------------------------------------------------

CIRCULAR = [
    "query { viewer { ...A } } fragment A on User { name ...B } fragment B on User { ...A }",
    "query { viewer { ...A } } fragment A on User { ...A }",
    # the cycle deep inside a selection, through a list, with aliases on the way
    """query { account { k: apiKeys { c: createdBy { ...A } } } }
       fragment A on User { n: name ...B } fragment B on User { ...C }
       fragment C on User { e: email ...A }""",
]


async def test_circular_fragments_are_a_coded_validation_error(
        client: httpx.AsyncClient) -> None:
    await make_account(client, "acme", users=[("admin", "ADMIN")], keys=["k1"])
    for document in CIRCULAR:
        response = await client.post("/graphql", json={"query": document}, headers={
            "Authorization": f"Bearer {token('admin', 'acme')}"})
        assert response.status_code == 200, document
        body = response.json()
        assert body["data"] is None, document
        assert any("Cannot spread fragment" in e["message"] for e in body["errors"]), body
        assert {e["extensions"]["code"] for e in body["errors"]} == {"BAD_USER_INPUT"}, body
        assert "Internal server error" not in response.text
    # and the server is fine afterwards
    assert await gql(client, "{ viewer { name } }") == {"data": {"viewer": {"name": "User admin"}}}


# --- (e) aliases behind fragment spreads -------------------------------------------------

def _aliased(prefix: str, count: int) -> str:
    return " ".join(f"{prefix}{i}: name" for i in range(count))


def _behind_spreads(shape: str, total: int) -> str:
    """A document with exactly ``total`` aliases, every one of them behind a spread."""
    if shape == "two fragments":
        half = total // 2
        return (f"query {{ viewer {{ ...F1 ...F2 }} }} "
                f"fragment F1 on User {{ {_aliased('a', half)} }} "
                f"fragment F2 on User {{ {_aliased('b', total - half)} }}")
    if shape == "nested fragments":
        third = total // 3
        return (f"query {{ viewer {{ ...F1 }} }} "
                f"fragment F1 on User {{ {_aliased('a', third)} ...F2 }} "
                f"fragment F2 on User {{ {_aliased('b', third)} ...F3 }} "
                f"fragment F3 on User {{ {_aliased('c', total - 2 * third)} }}")
    assert shape == "one fragment spread twice"
    odd = total % 2 == 1
    return (f"query {{ viewer {{ ...F ...F {'...G' if odd else ''} }} }} "
            f"fragment F on User {{ {_aliased('a', total // 2)} }}"
            + (f" fragment G on User {{ {_aliased('b', 1)} }}" if odd else ""))


async def test_aliases_behind_fragment_spreads_count(client: httpx.AsyncClient) -> None:
    await make_account(client, "acme", users=[("admin", "ADMIN")])
    limit = make_settings("sqlite://:memory:").max_aliases
    for shape in ["two fragments", "nested fragments", "one fragment spread twice"]:
        for over in [1, 8]:
            refused = await gql(client, _behind_spreads(shape, limit + over))
            assert refused["data"] is None, shape
            [error] = refused["errors"]
            assert f"{limit + over} aliases found. Allowed: {limit}" in error["message"]
            assert error["extensions"]["code"] == TOO_MANY_ALIASES
        allowed = await gql(client, _behind_spreads(shape, limit))
        assert "errors" not in allowed, allowed
        viewer = allowed["data"]["viewer"]
        assert set(viewer.values()) == {"User admin"}
        twice = shape == "one fragment spread twice"  # whose fields are answered once
        assert len(viewer) == (limit // 2 + limit % 2 if twice else limit), shape


# --- not an advisory yet: exponential fragment fan-out -----------------------------------

FRAGMENT_FANOUT = textwrap.dedent("""
    import asyncio, signal, time
    from gql_usage.graphql.schema import schema
    signal.alarm(60)  # SIGALRM ends the process if validation never ends
    n = 24  # 2**24 paths through 25 fragments; the document is about 1 KB, 250 tokens
    frags = [f"fragment F{i} on User {{ ...F{i + 1} ...F{i + 1} }}" for i in range(n)]
    document = "query { viewer { ...F0 } } " + " ".join(frags) + \\
        f" fragment F{n} on User {{ name }}"
    started = time.process_time()
    asyncio.run(schema.execute(document))  # refused, or executed (no viewer: an error)
    signal.alarm(0)
    print(time.process_time() - started)
""")


# strawberry 0.341.2's QueryDepthLimiter and MaxAliasesLimiter walk every path through
# repeated fragment spreads; gql_usage/graphql/limits/expansion.py refuses such a document
# (QUERY_TOO_COSTLY, MAX_EXPANDED_FIELDS) before validation runs them.
def test_fragment_fanout_is_refused_quickly() -> None:
    """Measured in CPU seconds of the process (a loaded machine stretches wall time, not
    the work: a 2 s wall-clock alarm once fired at exit on a starved machine)."""
    done = subprocess.run([sys.executable, "-c", FRAGMENT_FANOUT], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"validating a 1 KB document never ended {done}"
    cpu_s = float(done.stdout.strip())
    assert cpu_s < 2, f"validating a 1 KB document took {cpu_s:.2f} CPU seconds"


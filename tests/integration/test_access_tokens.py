"""Access tokens for partners (SPEC 6.4), on both databases.

Three accounts: ``acme`` (PRO) with admins ``boss`` and ``deputy`` and member ``mem``;
``beta`` (PREMIUM) with admin ``badmin``; ``cheap`` (FREE) with admin ``fadmin``. The
app runs on a clock the tests move (``create_app(clock=...)``), which is the "now" of
``createAccessToken``, of a token's expiry and of its ``lastUsedAt``. Expected numbers are
computed here from the events this module ingests; the table is read directly to see
what is stored.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.config import JWT_SECRET, make_settings
from support.database import connect
from support.helpers import event, gid, ingest, make_account, put, token
from support.pg_server import create_database, drop_database
from tortoise import Tortoise
from tortoise.migrations.api import migrate

from gql_usage.access_tokens import TOKEN_LENGTH, account_part, digest
from gql_usage.app import create_app
from gql_usage.auth import AuthError, load_viewer
from gql_usage.storage.db import StatementCounter, connection, dialect, tortoise_config

pytestmark = pytest.mark.citus

#: 2026-03-01T00:00:00Z, the clock's start.
T0 = 1772323200.0
RANGE = '{from: "2026-01-01T00:00:00Z", to: "2026-02-01T00:00:00Z"}'
#: (id, account, api key, user, endpoint, source, credits, occurred at)
ACME_EVENTS = [
    ("a1", "acme", "k1", "boss", "/v2/person", "api", 3, "2026-01-05T10:00:00Z"),
    ("a2", "acme", "k2", "mem", "/v2/company", "chrome_extension", 7, "2026-01-06T10:00:00Z"),
    ("a3", "acme", "k1", "mem", "/v2/person", "salesforce", 11, "2026-01-13T10:00:00Z"),
    ("a4", "acme", "k2", "boss", "/v2/person", "api", 0, "2026-01-20T10:00:00Z"),
    ("a5", "acme", "k1", "boss", "/v2/person", "api", 5, "2026-02-02T10:00:00Z"),  # out
]
BETA_EVENTS = [
    ("b1", "beta", "bk", "badmin", "/v2/person", "api", 1000, "2026-01-05T10:00:00Z"),
]
REPORT = f"""{{ viewer {{ id role }} account {{ id plan usage(filter: {RANGE}) {{
    calls credits series(granularity: WEEK) {{ start calls credits }}
    byKey: breakdown(by: API_KEY) {{ key calls credits }}
    byUser: breakdown(by: USER) {{ key calls credits }} }} }} }}"""
CREATE = """mutation($name: String!, $expiresAt: DateTime) {
  createAccessToken(name: $name, expiresAt: $expiresAt) {
    token accessToken { id name prefix createdAt expiresAt lastUsedAt revokedAt
                        createdBy { id name } } } }"""
REVOKE = """mutation($id: ID!) { revokeAccessToken(id: $id) { id revokedAt } }"""
LIST = """{ account { accessTokens(includeRevoked: true) {
    id name prefix createdAt expiresAt lastUsedAt revokedAt createdBy { id } } } }"""
TOKEN_FORMAT = re.compile(r"gqlu_[A-Za-z0-9]{8}_[A-Za-z0-9_-]{43}\.[A-Za-z0-9_-]+")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def app(db_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, Clock]]:
    clock = Clock()
    asgi = create_app(make_settings(db_url), manage_db=False, clock=clock)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi),
                                 base_url="http://testserver") as client:
        await make_account(client, "acme", users=[("boss", "ADMIN"), ("deputy", "ADMIN"),
                                                  ("mem", "MEMBER")], keys=["k1", "k2"])
        await make_account(client, "beta", plan="PREMIUM", users=[("badmin", "ADMIN")],
                           keys=["bk"])
        await make_account(client, "cheap", plan="FREE", users=[("fadmin", "ADMIN")])
        result = await ingest(client, [event(*e) for e in ACME_EVENTS + BETA_EVENTS])
        assert result == {"accepted": 6, "duplicates": 0, "rejected": []}
        yield client, clock


async def call(client: httpx.AsyncClient, bearer: str, query: str,
               variables: dict[str, Any] | None = None) -> httpx.Response:
    return await client.post("/graphql", json={"query": query, "variables": variables or {}},
                             headers={"Authorization": f"Bearer {bearer}"})


async def as_user(client: httpx.AsyncClient, query: str, variables: dict[str, Any] | None = None,
                  *, user: str = "boss", account: str = "acme") -> dict[str, Any]:
    response = await call(client, token(user, account, ttl=10**8), query, variables)
    body: dict[str, Any] = response.json()
    return body


async def create(client: httpx.AsyncClient, name: str = "partner", expires_at: str | None = None,
                 *, user: str = "boss", account: str = "acme") -> dict[str, Any]:
    body = await as_user(client, CREATE, {"name": name, "expiresAt": expires_at},
                         user=user, account=account)
    assert "errors" not in body, body
    created: dict[str, Any] = body["data"]["createAccessToken"]
    return created


async def stored_rows() -> list[dict[str, Any]]:
    return await connection().execute_query_dict(
        "SELECT * FROM access_token ORDER BY id")


def codes(body: dict[str, Any]) -> list[str]:
    return [e["extensions"]["code"] for e in body.get("errors", [])]


def expected_report() -> dict[str, Any]:
    """The acme admin's report, from the events (January only)."""
    january = [e for e in ACME_EVENTS if e[7].startswith("2026-01")]

    def groups(column: int, type_name: str) -> list[dict[str, Any]]:
        out: dict[str, list[int]] = {}
        for e in january:
            calls_credits = out.setdefault(e[column], [0, 0])
            calls_credits[0] += 1
            calls_credits[1] += e[6]
        rows = [{"key": gid(type_name, k), "calls": c, "credits": cr}
                for k, (c, cr) in out.items()]
        return sorted(rows, key=lambda r: (-r["credits"], -r["calls"], r["key"]))

    weeks = ["2026-01-01T00:00:00+00:00", "2026-01-05T00:00:00+00:00",
             "2026-01-12T00:00:00+00:00", "2026-01-19T00:00:00+00:00",
             "2026-01-26T00:00:00+00:00"]
    series = []
    for i, start in enumerate(weeks):
        end = weeks[i + 1] if i + 1 < len(weeks) else "2026-02-01T00:00:00+00:00"
        inside = [e for e in january if start[:10] <= e[7][:10] < end[:10]]
        series.append({"start": start, "calls": len(inside),
                       "credits": sum(e[6] for e in inside)})
    return {"viewer": {"id": gid("User", "boss"), "role": "ADMIN"},
            "account": {"id": gid("Account", "acme"), "plan": "PRO", "usage": {
                "calls": 4, "credits": 21, "series": series,
                "byKey": groups(2, "ApiKey"), "byUser": groups(3, "User")}}}


# --- Creating: the secret is shown once, only its hash is stored ------------------------

async def test_create_shows_the_secret_once_and_stores_only_its_hash(app) -> None:
    client, _ = app
    created = await create(client, "Partner dashboard", "2026-06-01T00:00:00Z")
    secret = created["token"]
    assert TOKEN_FORMAT.fullmatch(secret), secret
    external = created["accessToken"]["id"]
    assert created["accessToken"] == {
        "id": external, "name": "Partner dashboard", "prefix": secret[:13],
        "createdAt": "2026-03-01T00:00:00+00:00", "expiresAt": "2026-06-01T00:00:00+00:00",
        "lastUsedAt": None, "revokedAt": None,
        "createdBy": {"id": gid("User", "boss"), "name": "User boss"}}

    rows = await stored_rows()
    assert len(rows) == 1
    row = rows[0]
    assert row["secret_hash"] == hashlib.sha256(secret.encode()).hexdigest()
    assert row["prefix"] == secret[:13]
    # The secret is in no column, whole or as its secret part.
    secret_part = secret[14:]
    assert all(secret_part not in str(value) for value in row.values()), row

    # Never shown again: not in the list, not through node(id:).
    listed = await as_user(client, LIST)
    node = await as_user(client, f'{{ node(id: "{external}") {{ ... on AccessToken {{ '
                         'id name prefix } } }')
    assert listed["data"]["account"]["accessTokens"][0]["prefix"] == secret[:13]
    assert node == {"data": {"node": {"id": external, "name": "Partner dashboard",
                                      "prefix": secret[:13]}}}
    assert secret_part not in str(listed) and secret_part not in str(node)
    # Two tokens never share a secret or a prefix-and-secret.
    other = await create(client, "second")
    assert other["token"] != secret and other["accessToken"]["id"] != external


async def test_a_token_reads_usage_exactly_as_its_creator(app) -> None:
    client, _ = app
    secret = (await create(client))["token"]
    with_token = await call(client, secret, REPORT)
    with_jwt = await as_user(client, REPORT)
    assert with_token.status_code == 200
    assert with_token.json() == {"data": expected_report()}
    assert with_jwt == {"data": expected_report()}


async def test_load_viewer_says_the_viewer_came_from_an_access_token(app, db_url) -> None:
    """What other routes (the CSV export) authenticate with: a JWT or an access token."""
    client, clock = app
    secret = (await create(client))["token"]
    row = (await stored_rows())[0]
    viewer = await load_viewer(JWT_SECRET, f"Bearer {secret}", clock=clock)
    assert (viewer.user.external_id, viewer.account.external_id) == ("boss", "acme")
    assert (viewer.access_token_id, viewer.read_only) == (row["id"], True)
    by_jwt = await load_viewer(JWT_SECRET, f"Bearer {token('boss', 'acme')}")
    assert (by_jwt.access_token_id, by_jwt.read_only) == (None, False)
    clock.now = T0 + 10**9  # never expires
    assert (await load_viewer(JWT_SECRET, f"bearer {secret}", clock=clock)).read_only


# --- Refused at once -------------------------------------------------------------------

async def assert_refused(client: httpx.AsyncClient, secret: str, status: int, code: str,
                         words: str) -> None:
    response = await call(client, secret, REPORT)
    body = response.json()
    assert response.status_code == status, body
    assert body["data"] is None and codes(body) == [code], body
    assert words in body["errors"][0]["message"], body


async def test_a_revoked_token_is_refused_at_once(app) -> None:
    client, clock = app
    created = await create(client)
    secret, external = created["token"], created["accessToken"]["id"]
    assert (await call(client, secret, REPORT)).status_code == 200
    clock.now = T0 + 90
    revoked = await as_user(client, REVOKE, {"id": external}, user="deputy")
    assert revoked == {"data": {"revokeAccessToken": {
        "id": external, "revokedAt": "2026-03-01T00:01:30+00:00"}}}
    await assert_refused(client, secret, 401, "UNAUTHENTICATED",
                         "was revoked at 2026-03-01T00:01:30Z")
    # Revoking again changes nothing; the default list leaves it out.
    clock.now = T0 + 500
    again = await as_user(client, REVOKE, {"id": external})
    assert again == revoked
    default = await as_user(client, "{ account { accessTokens { id } } }")
    assert default == {"data": {"account": {"accessTokens": []}}}
    listed = await as_user(client, LIST)
    assert [t["revokedAt"] for t in listed["data"]["account"]["accessTokens"]] == [
        "2026-03-01T00:01:30+00:00"]


async def test_an_expired_token_is_refused_from_its_expiry_on(app) -> None:
    client, clock = app
    secret = (await create(client, expires_at="2026-03-01T01:00:00Z"))["token"]
    clock.now = T0 + 3600 - 0.001
    assert (await call(client, secret, REPORT)).json() == {"data": expected_report()}
    clock.now = T0 + 3600
    await assert_refused(client, secret, 401, "UNAUTHENTICATED",
                         "expired at 2026-03-01T01:00:00Z")
    # A time without offset is in the account's time zone (UTC here).
    naive = await create(client, expires_at="2026-03-01T02:00:00")
    assert naive["accessToken"]["expiresAt"] == "2026-03-01T02:00:00+00:00"


async def test_a_demoted_creator_s_token_is_refused_at_once(app) -> None:
    client, _ = app
    secret = (await create(client))["token"]
    user = {"name": "User boss", "email": "boss@acme.example"}
    await put(client, "/v1/accounts/acme/users/boss", {**user, "role": "MEMBER"})
    await assert_refused(client, secret, 403, "FORBIDDEN", "no longer an admin")
    # Role is read per request: promoted again, the (unrevoked) token reads again.
    await put(client, "/v1/accounts/acme/users/boss", {**user, "role": "ADMIN"})
    assert (await call(client, secret, REPORT)).json() == {"data": expected_report()}


async def test_a_removed_creator_s_token_is_refused_at_once(app) -> None:
    client, _ = app
    secret = (await create(client))["token"]
    # Removed out of band (gql_usage deletes no users). The keys boss created forget
    # their creator first: what ON DELETE SET NULL does on PostgreSQL, which Citus refuses
    # on a key holding the distribution column (docs/citus.md, "Keys").
    await connection().execute_script(
        "UPDATE api_key AS k SET created_by_id = NULL FROM app_user u"
        " WHERE u.account_id = k.account_id AND u.id = k.created_by_id"
        " AND u.external_id = 'boss';"
        " DELETE FROM app_user WHERE external_id = 'boss'")
    await assert_refused(client, secret, 401, "UNAUTHENTICATED", "no longer exists")
    listed = await as_user(client, LIST, user="deputy")
    assert [t["createdBy"] for t in listed["data"]["account"]["accessTokens"]] == [None]


async def test_a_downgraded_plan_refuses_the_token_at_once(app) -> None:
    client, _ = app
    secret = (await create(client))["token"]
    account = {"name": "Account acme", "timeZone": "UTC", "creditsGranted": 1000,
               "periodStart": "2026-01-01T00:00:00Z", "periodEnd": "2026-02-01T00:00:00Z"}
    await put(client, "/v1/accounts/acme", {**account, "plan": "FREE"})
    await assert_refused(client, secret, 403, "PLAN_UPGRADE_REQUIRED", "paid plan")
    await put(client, "/v1/accounts/acme", {**account, "plan": "PRO"})
    assert (await call(client, secret, REPORT)).status_code == 200


async def test_unknown_and_malformed_tokens_are_refused(app) -> None:
    client, _ = app
    secret = (await create(client))["token"]
    end = TOKEN_LENGTH - 1  # the secret's last character
    flipped = secret[:end] + ("A" if secret[end] != "A" else "B") + secret[end + 1:]
    await assert_refused(client, flipped, 401, "UNAUTHENTICATED", "no such token")
    await assert_refused(client, secret + "==", 401, "UNAUTHENTICATED", "malformed")
    await assert_refused(client, secret[:13], 401, "UNAUTHENTICATED", "malformed")
    await assert_refused(client, secret.replace("_", "$", 2), 401, "UNAUTHENTICATED",
                         "malformed")
    # The stored hash itself is no credential.
    stored = (await stored_rows())[0]["secret_hash"]
    await assert_refused(client, stored, 401, "UNAUTHENTICATED", "invalid")


async def test_the_token_names_its_account_and_cannot_be_moved_to_another(app) -> None:
    """A token ends with its account's external id (so that the lookup can name the
    account); the hash covers it: the same secret with another account's part, an
    unknown account, or none at all is no token."""
    client, _ = app
    secret = (await create(client))["token"]
    head, part = secret.split(".")
    assert part == account_part("acme") and len(head) == TOKEN_LENGTH
    assert (await call(client, secret, "{ account { name } }")).json() == {
        "data": {"account": {"name": "Account acme"}}}
    for other in ("beta", "cheap", "nobody", "acme "):
        await assert_refused(client, f"{head}.{account_part(other)}", 401,
                             "UNAUTHENTICATED", "no such token")
    await assert_refused(client, head, 401, "UNAUTHENTICATED", "no such token")
    # Another account's admin's token never reads acme, whatever its account part says.
    beta = (await create(client, user="badmin", account="beta"))["token"]
    await assert_refused(client, f"{beta.split('.')[0]}.{part}", 401, "UNAUTHENTICATED",
                         "no such token")


async def test_a_token_of_the_first_format_still_works(app) -> None:
    """Tokens made before the account part (57 characters; the hash of those alone
    stored) are looked up by their hash alone."""
    client, _ = app
    made = (await create(client))
    first_format = made["token"].split(".")[0]
    await connection().execute_query(
        "UPDATE access_token SET secret_hash = $1" if dialect() == "postgres"
        else "UPDATE access_token SET secret_hash = ?", [digest(first_format)])
    response = await call(client, first_format, "{ account { name } }")
    assert response.json() == {"data": {"account": {"name": "Account acme"}}}
    await assert_refused(client, made["token"], 401, "UNAUTHENTICATED", "no such token")


# --- Read-only --------------------------------------------------------------------------

async def test_a_token_cannot_run_mutations(app) -> None:
    client, _ = app
    created = await create(client)
    secret, external = created["token"], created["accessToken"]["id"]
    for query, variables in ((CREATE, {"name": "more"}), (REVOKE, {"id": external})):
        response = await call(client, secret, query, variables)
        body = response.json()
        assert body["data"] is None and codes(body) == ["FORBIDDEN"], body
        assert "read-only" in body["errors"][0]["message"]
    # A document with both: the mutation is refused, the query answers.
    both = "query Q { viewer { id } } mutation M { revokeAccessToken(id: \"%s\") { id } }"
    response = await client.post("/graphql", json={"query": both % external,
                                                    "operationName": "M"},
                                  headers={"Authorization": f"Bearer {secret}"})
    assert codes(response.json()) == ["FORBIDDEN"]
    response = await client.post("/graphql", json={"query": both % external,
                                                    "operationName": "Q"},
                                  headers={"Authorization": f"Bearer {secret}"})
    assert response.json() == {"data": {"viewer": {"id": gid("User", "boss")}}}
    # So is a batch of them.
    response = await client.post("/graphql", json=[{"query": REVOKE,
                                                    "variables": {"id": external}}] * 2,
                                 headers={"Authorization": f"Bearer {secret}"})
    assert [codes(b) for b in response.json()] == [["FORBIDDEN"], ["FORBIDDEN"]]
    # Nothing changed: one token, not revoked, still working.
    rows = await stored_rows()
    assert [(r["name"], r["revoked_at_us"]) for r in rows] == [("partner", None)]
    assert (await call(client, secret, REPORT)).status_code == 200


async def test_get_cannot_run_mutations(app) -> None:
    """GraphQL over GET is for queries: not even a user's JWT runs a mutation with it."""
    client, _ = app
    mutation = 'mutation { createAccessToken(name: "via get") { token } }'
    response = await client.get("/graphql", params={"query": mutation},
                                headers={"Authorization": f"Bearer {token('boss', 'acme')}"})
    assert response.status_code == 400, response.text
    assert response.json() == {"data": None, "errors": [{
        "message": "mutations are not allowed when using GET",
        "extensions": {"code": "BAD_USER_INPUT"}}]}
    assert await stored_rows() == []
    query = await client.get("/graphql", params={"query": "{ viewer { id } }"},
                             headers={"Authorization": f"Bearer {token('boss', 'acme')}"})
    assert query.json() == {"data": {"viewer": {"id": gid("User", "boss")}}}


# --- lastUsedAt -------------------------------------------------------------------------

async def test_last_used_at_is_written_at_most_once_a_minute(app) -> None:
    client, clock = app
    secret = (await create(client))["token"]

    async def last_used() -> str | None:
        listed = await as_user(client, LIST)
        value: str | None = listed["data"]["account"]["accessTokens"][0]["lastUsedAt"]
        return value

    assert await last_used() is None
    clock.now = T0 + 10
    await call(client, secret, "{ viewer { id } }")
    assert await last_used() == "2026-03-01T00:00:10+00:00"
    clock.now = T0 + 69  # within the minute: not written again
    await call(client, secret, "{ viewer { id } }")
    assert await last_used() == "2026-03-01T00:00:10+00:00"
    clock.now = T0 + 70
    await call(client, secret, "{ viewer { id } }")
    assert await last_used() == "2026-03-01T00:01:10+00:00"


async def test_a_token_request_costs_what_a_jwt_request_costs(app) -> None:
    """Within the minute after a write of lastUsedAt, a token's request runs as many
    statements as the same request with a JWT: the lookup is one statement."""
    client, clock = app
    secret = (await create(client))["token"]
    await call(client, secret, "{ viewer { id } }")  # writes lastUsedAt
    clock.now = T0 + 30
    with StatementCounter() as by_token:
        response = await call(client, secret, "{ viewer { id } account { name } }")
    with StatementCounter() as by_jwt:
        await as_user(client, "{ viewer { id } account { name } }")
    assert response.json()["data"]["account"] == {"name": "Account acme"}
    assert by_token.count == by_jwt.count == 1, (by_token.statements, by_jwt.statements)


# --- Who may create, list and revoke ------------------------------------------------------

async def test_only_admins_of_paid_accounts_create_list_or_revoke(app) -> None:
    client, _ = app
    external = (await create(client))["accessToken"]["id"]
    for user, account, code in (("mem", "acme", "FORBIDDEN"),
                                ("fadmin", "cheap", "PLAN_UPGRADE_REQUIRED")):
        made = await as_user(client, CREATE, {"name": "x"}, user=user, account=account)
        assert made["data"] == {"createAccessToken": None} and codes(made) == [code]
        listed = await as_user(client, "{ account { name accessTokens { id } } }",
                               user=user, account=account)
        assert listed["data"]["account"]["accessTokens"] is None and codes(listed) == [code]
        revoked = await as_user(client, REVOKE, {"id": external}, user=user, account=account)
        assert revoked["data"] == {"revokeAccessToken": None} and codes(revoked) == [code]
        node = await as_user(client, f'{{ node(id: "{external}") {{ id }} }}', user=user,
                             account=account)
        assert node["data"] == {"node": None} and codes(node) == [code]
    assert [r["revoked_at_us"] for r in await stored_rows()] == [None]


async def test_another_account_s_token_is_not_found(app) -> None:
    client, _ = app
    created = await create(client)
    secret, external = created["token"], created["accessToken"]["id"]
    theirs = await as_user(client, REVOKE, {"id": external}, user="badmin", account="beta")
    missing_id = gid("AccessToken", "0" * 32)
    missing = await as_user(client, REVOKE, {"id": missing_id}, user="badmin",
                            account="beta")
    assert codes(theirs) == codes(missing) == ["NOT_FOUND"]
    assert theirs["errors"][0]["message"].replace(external, "X") == \
        missing["errors"][0]["message"].replace(missing_id, "X")
    assert theirs["data"] == missing["data"] == {"revokeAccessToken": None}
    node = await as_user(client, f'{{ node(id: "{external}") {{ id }} }}', user="badmin",
                         account="beta")
    assert node == {"data": {"node": None}}
    listed = await as_user(client, LIST, user="badmin", account="beta")
    assert listed == {"data": {"account": {"accessTokens": []}}}
    # Untouched: acme's token still reads acme, and only acme.
    assert (await call(client, secret, REPORT)).json() == {"data": expected_report()}


@pytest.mark.parametrize(("variables", "argument", "words"), [
    ({"name": ""}, "name", "must not be empty"),
    ({"name": "   "}, "name", "must not be empty"),
    ({"name": "x" * 101}, "name", "at most 100 characters"),
    ({"name": "a\nb"}, "name", "control characters"),
    ({"name": "a\x00b"}, "name", "NUL"),
    ({"name": "ok", "expiresAt": "2026-03-01T00:00:00Z"}, "expiresAt", "in the future"),
    ({"name": "ok", "expiresAt": "2020-01-01T00:00:00+05:00"}, "expiresAt", "in the future"),
])
async def test_bad_input_to_create_is_refused_naming_the_argument(app, variables, argument,
                                                                  words) -> None:
    client, _ = app
    body = await as_user(client, CREATE, variables)
    assert body["data"] == {"createAccessToken": None}, body
    assert codes(body) == ["BAD_USER_INPUT"]
    error = body["errors"][0]
    assert error["extensions"]["argument"] == argument and words in error["message"], error
    assert await stored_rows() == []


@pytest.mark.parametrize(("value", "words"), [
    ("not base64!", "is not a valid id"),
    (gid("ApiKey", "k1"), "is a ApiKey id, not an AccessToken id"),
])
async def test_a_bad_id_to_revoke_is_refused_naming_it(app, value, words) -> None:
    client, _ = app
    body = await as_user(client, REVOKE, {"id": value})
    assert codes(body) == ["BAD_USER_INPUT"], body
    assert body["errors"][0]["extensions"]["argument"] == "id"
    assert words in body["errors"][0]["message"]


async def test_a_token_and_its_creator_share_a_rate_limit_and_authentication_errors_stay_401(
        app) -> None:
    """A token counts against its creator's budget (rate limit per account and user), and
    AuthError's default is still 401 UNAUTHENTICATED for JWTs."""
    client, _ = app
    secret = (await create(client))["token"]
    by_token = await call(client, secret, "{ viewer { id } }")
    by_jwt = await call(client, token("boss", "acme"), "{ viewer { id } }")
    assert int(by_jwt.headers["x-ratelimit-remaining"]) == \
        int(by_token.headers["x-ratelimit-remaining"]) - int(by_jwt.headers["x-query-cost"])
    response = await call(client, "eyJ.not.a.jwt", "{ viewer { id } }")
    assert response.status_code == 401 and codes(response.json()) == ["UNAUTHENTICATED"]
    with pytest.raises(AuthError) as refused:
        await load_viewer(JWT_SECRET, "Bearer gqlu_short")
    assert (refused.value.status, refused.value.code) == (401, "UNAUTHENTICATED")


# --- The table ------------------------------------------------------------------------

async def test_every_key_of_the_table_includes_the_account(db_url: str) -> None:
    """Ids and hashes are unique per account (the keys a Citus distribution by account
    needs); PostgreSQL's primary key is (account_id, id)."""
    conn = connection()
    insert = ("INSERT INTO access_token (account_id, external_id, name, prefix, secret_hash, "
              "created_by_id, created_at_us) VALUES ({a}, '{e}', 'n', 'p', '{h}', 1, 0)")
    await conn.execute_script(insert.format(a=1, e="x", h="h1"))
    await conn.execute_script(insert.format(a=2, e="x", h="h1"))  # another account: fine
    for duplicate in (insert.format(a=1, e="x", h="h2"), insert.format(a=1, e="y", h="h1")):
        with pytest.raises(Exception, match="(?i)unique"):
            await conn.execute_script(duplicate)
    if "postgres" in db_url:
        primary = await conn.execute_query_dict(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'access_token'::regclass "
            "AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)")
        assert [r["attname"] for r in primary] == ["account_id", "id"]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_the_migration_applies_and_reverts(backend: str, tmp_path: Path,
                                                 request: pytest.FixtureRequest) -> None:
    """0006 on a database at 0005 adds the table; back to 0005 drops it."""
    if backend == "sqlite":
        url, base = f"sqlite://{tmp_path / 'old.sqlite3'}", None
    else:
        base = request.getfixturevalue("pg_base_url")
        url = create_database(base, "tokens_migration")

    async def has_table() -> bool:
        await connect(url)
        try:
            await connection().execute_query("SELECT COUNT(*) FROM access_token")
        except Exception:  # noqa: BLE001 - no such table, in either dialect's words
            return False
        finally:
            await Tortoise.close_connections()
        return True

    try:
        await migrate(config=tortoise_config(url), target="models.0005_alerts")
        await Tortoise.close_connections()
        assert not await has_table()
        await migrate(config=tortoise_config(url))
        await Tortoise.close_connections()
        assert await has_table()
        await migrate(config=tortoise_config(url), target="models.0005_alerts")
        await Tortoise.close_connections()
        assert not await has_table()
    finally:
        await Tortoise.close_connections()
        if base is not None:
            drop_database(base, "tokens_migration")

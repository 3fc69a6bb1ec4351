"""Access rules (SPEC section 3, "Access rules, enforced at execution time").

Two accounts: ``pro`` (PRO plan) and ``free`` (FREE plan), each with an ADMIN and a
MEMBER. The five guarded fields are ``Account.usage``, ``Account.apiKeys``,
``Account.creditPool``, ``ApiKey.usage`` and ``Endpoint.usage``:

===============  ==============  ============  =======================  ============
field            paid admin      paid member   free admin               free member
===============  ==============  ============  =======================  ============
usage            data            FORBIDDEN     PLAN_UPGRADE_REQUIRED    FORBIDDEN
apiKeys          data            FORBIDDEN     PLAN_UPGRADE_REQUIRED    FORBIDDEN
creditPool       data            FORBIDDEN     data (@adminOnly only)   FORBIDDEN
ApiKey.usage     data            FORBIDDEN     PLAN_UPGRADE_REQUIRED    FORBIDDEN
Endpoint.usage   data            FORBIDDEN     PLAN_UPGRADE_REQUIRED    FORBIDDEN
===============  ==============  ============  =======================  ============

A refusal nulls only the guarded field: ``viewer { name }`` and ``account { name plan }``
still render. Role and plan are read from the database on every request, never from the
token. The last tests walk the schema itself: every guarded field prints its directives,
is nullable, and is enforced by the very permissions that print them.

SPEC 6.1 (version 2): an ``ApiKey`` is read only by admins of paid-plan accounts wherever
it is reached, ``node(id:)`` included, so ``ApiKey.usage`` reached through ``node`` is
now refused one level up (``node`` is null, with the same code); ``User.email`` is read
only by admins and by the user themself. The tests of both follow the matrix tests.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Annotated, Any

import graphql
import httpx
import jwt
import pytest
import strawberry
from strawberry.permission import PermissionExtension
from strawberry.schema.config import StrawberryConfig
from support.config import JWT_SECRET
from support.helpers import event, gid, gql, ingest, make_account, put, token

from gql_usage.auth import issue_token
from gql_usage.graphql.directives import RULES, AdminOnly, PaidPlan, guarded_type, type_rules
from gql_usage.graphql.execution import FastExecutionContext
from gql_usage.graphql.guards import field_rules, unguarded_paths
from gql_usage.graphql.scalars import SCALAR_MAP
from gql_usage.graphql.schema import Schema, schema
from gql_usage.graphql.types import ApiKey, Node, Source
from gql_usage.storage import models

pytestmark = pytest.mark.citus

FILTER = '{from: "2026-01-01T00:00:00Z", to: "2026-02-01T00:00:00Z"}'

#: (id, account, api key, user, endpoint, source, credits, occurred at)
PRO_EVENTS = [
    ("p1", "pro", "pk1", "padmin", "/v2/person", "api", 3, "2026-01-05T10:00:00Z"),
    ("p2", "pro", "pk1", "pmember", "/v2/company", "chrome_extension", 5,
     "2026-01-06T11:00:00Z"),
    ("p3", "pro", "pk2", "padmin", "/v2/person", "api", 2, "2026-01-07T12:00:00Z"),
]
FREE_EVENTS = [
    ("f1", "free", "fk1", "fadmin", "/v2/person", "api", 1, "2026-01-05T10:00:00Z"),
]

#: viewer -> (user, account, display name, account plan)
VIEWERS = {
    "paid admin": ("padmin", "pro", "User padmin", "PRO"),
    "paid member": ("pmember", "pro", "User pmember", "PRO"),
    "free admin": ("fadmin", "free", "User fadmin", "FREE"),
    "free member": ("fmember", "free", "User fmember", "FREE"),
}
#: The access matrix of the module docstring: None means "gets data".
EXPECTED_CODE: dict[str, dict[str, str | None]] = {
    "paid admin": dict.fromkeys(
        ("usage", "apiKeys", "creditPool", "ApiKey.usage", "Endpoint.usage")),
    "paid member": dict.fromkeys(
        ("usage", "apiKeys", "creditPool", "ApiKey.usage", "Endpoint.usage"), "FORBIDDEN"),
    "free admin": {"usage": "PLAN_UPGRADE_REQUIRED", "apiKeys": "PLAN_UPGRADE_REQUIRED",
                   "creditPool": None, "ApiKey.usage": "PLAN_UPGRADE_REQUIRED",
                   "Endpoint.usage": "PLAN_UPGRADE_REQUIRED"},
    "free member": dict.fromkeys(
        ("usage", "apiKeys", "creditPool", "ApiKey.usage", "Endpoint.usage"), "FORBIDDEN"),
}


def _totals(events: list[tuple[Any, ...]], **where: str) -> dict[str, int]:
    """Calls and credits of the events matching ``where`` (key, endpoint, ...)."""
    columns = {"key": 2, "user": 3, "endpoint": 4, "source": 5}
    chosen = [e for e in events if all(e[columns[k]] == v for k, v in where.items())]
    return {"calls": len(chosen), "credits": sum(e[6] for e in chosen)}


async def _setup(client: httpx.AsyncClient) -> None:
    await make_account(client, "pro", plan="PRO", keys=["pk1", "pk2"],
                       users=[("padmin", "ADMIN"), ("pmember", "MEMBER")])
    await make_account(client, "free", plan="FREE", keys=["fk1"],
                       users=[("fadmin", "ADMIN"), ("fmember", "MEMBER")])
    result = await ingest(client, [event(*e) for e in PRO_EVENTS + FREE_EVENTS])
    assert result == {"accepted": 4, "duplicates": 0, "rejected": []}


def _assert_codes(body: dict[str, Any]) -> None:
    """SPEC: every error carries ``extensions.code``."""
    for error in body.get("errors", []):
        assert "code" in (error.get("extensions") or {}), error


# The guarded field, the query that reaches it, and where it sits in the answer.
# ``ApiKey.usage`` is reached through ``node(id:)`` and ``Endpoint.usage`` through
# ``account.endpoints`` (neither is guarded), so members and Free accounts reach them too.
def _query(field: str, key_id: str) -> str:
    inner = {
        "usage": f"usage(filter: {FILTER}) {{ calls credits }}",
        "apiKeys": "apiKeys { name }",
        "creditPool": "creditPool { granted used remaining }",
        "ApiKey.usage": "",
        "Endpoint.usage": f"endpoints {{ path usage(filter: {FILTER}) {{ calls credits }} }}",
    }[field]
    node = (f'node(id: "{gid("ApiKey", key_id)}") {{ ... on ApiKey {{ name '
            f"usage(filter: {FILTER}) {{ calls credits }} }} }}"
            if field == "ApiKey.usage" else "")
    return f"{{ viewer {{ name }} account {{ name plan {inner} }} {node} }}"


def _guarded_value(field: str, data: dict[str, Any]) -> Any:
    if field == "ApiKey.usage":
        return data["node"]["usage"]
    if field == "Endpoint.usage":
        return {e["path"]: e["usage"] for e in data["account"]["endpoints"]}
    return data["account"][field]


def _expected_data(viewer: str, field: str) -> Any:
    """What an allowed viewer reads, computed from the events ingested above."""
    account = VIEWERS[viewer][1]
    events = PRO_EVENTS if account == "pro" else FREE_EVENTS
    if field == "usage":
        return _totals(events)
    if field == "apiKeys":
        return [{"name": "Key pk1"}, {"name": "Key pk2"}]
    if field == "creditPool":
        used = _totals(events)["credits"]
        return {"granted": 1000, "used": used, "remaining": 1000 - used}
    if field == "ApiKey.usage":
        return _totals(events, key=f"{account[0]}k1")
    paths = sorted({e[4] for e in events})
    return {path: _totals(events, endpoint=path) for path in paths}


@pytest.mark.parametrize("field", ["usage", "apiKeys", "creditPool", "ApiKey.usage",
                                   "Endpoint.usage"])
@pytest.mark.parametrize("viewer", list(VIEWERS))
async def test_guarded_field_access_matrix(client, viewer, field):
    """Each viewer reads each guarded field as the matrix in the module docstring says;
    a refused field is null with one error per refused value, the rest still renders."""
    await _setup(client)
    user, account, name, plan = VIEWERS[viewer]
    body = await gql(client, _query(field, f"{account[0]}k1"), user=user, account=account)
    _assert_codes(body)
    data = body["data"]
    assert data["viewer"] == {"name": name}
    assert {k: data["account"][k] for k in ("name", "plan")} == {
        "name": f"Account {account}", "plan": plan}
    code = EXPECTED_CODE[viewer][field]
    if field == "ApiKey.usage" and code is not None:
        # SPEC 6.1: a viewer who may not list keys may not read one through node(id:)
        # either; the key (and so its usage) is refused as a whole, with the same code.
        assert data["node"] is None
        assert [(e["path"], e["extensions"]["code"]) for e in body["errors"]] == [
            (["node"], code)]
        return
    if field == "ApiKey.usage":
        assert data["node"]["name"] == f"Key {account[0]}k1"  # the key itself is visible
    if code is None:
        assert "errors" not in body, body
        assert _guarded_value(field, data) == _expected_data(viewer, field)
        return
    if field == "Endpoint.usage":
        # Every endpoint row still renders its path; only each usage is nulled.
        paths = sorted({e[4] for e in (PRO_EVENTS if account == "pro" else FREE_EVENTS)})
        assert _guarded_value(field, data) == dict.fromkeys(paths)
        assert sorted(tuple(e["path"]) for e in body["errors"]) == [
            ("account", "endpoints", i, "usage") for i in range(len(paths))]
    else:
        assert _guarded_value(field, data) is None
        assert [e["path"] for e in body["errors"]] == [["account", field]]
    assert {e["extensions"]["code"] for e in body["errors"]} == {code}


async def test_refusal_messages_say_which_rule_applies(client):
    """The dashboard tells "ask your admin" from "upgrade your plan" by code; the
    messages say the same in words."""
    await _setup(client)
    query = f"{{ account {{ usage(filter: {FILTER}) {{ calls }} }} }}"
    member = await gql(client, query, user="pmember", account="pro")
    free = await gql(client, query, user="fadmin", account="free")
    assert member["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert "admin" in member["errors"][0]["message"].lower()
    assert free["errors"][0]["extensions"]["code"] == "PLAN_UPGRADE_REQUIRED"
    assert "paid plan" in free["errors"][0]["message"].lower()


async def test_all_guarded_fields_refused_in_one_request(client):
    """A member asking for every guarded field at once gets every one nulled, each with
    its own FORBIDDEN error, and the unguarded parts of the answer intact."""
    await _setup(client)
    body = await gql(client, f"""{{ viewer {{ name role }}
        account {{ name plan timeZone creditPool {{ used }} apiKeys {{ name }}
                   endpoints {{ path usage(filter: {FILTER}) {{ calls }} }}
                   usage(filter: {FILTER}) {{ calls }} }}
        node(id: "{gid("ApiKey", "pk1")}") {{ ... on ApiKey {{ name prefix
                   usage(filter: {FILTER}) {{ calls }} }} }} }}""",
                     user="pmember", account="pro")
    _assert_codes(body)
    assert body["data"] == {
        "viewer": {"name": "User pmember", "role": "MEMBER"},
        "account": {"name": "Account pro", "plan": "PRO", "timeZone": "UTC",
                    "creditPool": None, "apiKeys": None,
                    "endpoints": [{"path": "/v2/company", "usage": None},
                                  {"path": "/v2/person", "usage": None}],
                    "usage": None},
        "node": None,  # SPEC 6.1: an API key is not for members, through node(id:) either
    }
    assert sorted(tuple(e["path"]) for e in body["errors"]) == sorted([
        ("account", "creditPool"), ("account", "apiKeys"), ("account", "usage"),
        ("account", "endpoints", 0, "usage"), ("account", "endpoints", 1, "usage"),
        ("node",)])
    assert {e["extensions"]["code"] for e in body["errors"]} == {"FORBIDDEN"}


# --- SPEC 6.1: an API key obeys its rules wherever it is reached --------------------------

#: (node selection, what a paid admin reads for the key pk1): every shape of asking.
NODE_SELECTIONS = {
    "fields": ("... on ApiKey { name prefix createdBy { name } }",
               {"name": "Key pk1", "prefix": "pk_pk1", "createdBy": {"name": "User padmin"}}),
    "typename only": ("__typename", {"__typename": "ApiKey"}),
    "through the interface": ("... on Node { id }", {"id": gid("ApiKey", "pk1")}),
}


@pytest.mark.parametrize("viewer", list(VIEWERS))
async def test_node_reads_an_api_key_only_where_api_keys_may_be_listed(client, viewer):
    """``node(id:)`` obeys ``Account.apiKeys``' rules: a paid admin reads the key; anyone
    else gets the code ``apiKeys`` gives them (FORBIDDEN before PLAN_UPGRADE_REQUIRED),
    for any key id at all (their own, another account's, one that never existed) and any
    selection, so a refusal says nothing about which ids exist. ``viewer`` still renders."""
    await _setup(client)
    user, account, name, _plan = VIEWERS[viewer]
    code = EXPECTED_CODE[viewer]["apiKeys"]
    for shape, (selection, own_key) in NODE_SELECTIONS.items():
        for key in ("pk1", "fk1", "never-existed"):
            body = await gql(client, f'{{ viewer {{ name }} node(id: "{gid("ApiKey", key)}") '
                             f"{{ {selection} }} }}", user=user, account=account)
            where = (shape, key)
            _assert_codes(body)
            assert body["data"]["viewer"] == {"name": name}, where
            if code is not None:
                assert body["data"]["node"] is None, where
                assert [(e["path"], e["extensions"]["code"]) for e in body["errors"]] == [
                    (["node"], code)], where
            elif key == "pk1":
                assert body == {"data": {"viewer": {"name": name}, "node": own_key}}, where
            else:  # another account's key, or none: nothing, and no error
                assert body == {"data": {"viewer": {"name": name}, "node": None}}, where


async def test_api_keys_of_a_breakdown_still_render_for_paid_admins(client):
    """``UsageRow.apiKey`` is guarded like every path to an API key; inside
    ``Account.usage`` (already admin and paid plan) it renders as before."""
    await _setup(client)
    body = await gql(client, f"""{{ account {{ usage(filter: {FILTER}) {{
        breakdown(by: API_KEY) {{ key label calls credits
                                  apiKey {{ id name prefix createdBy {{ name }} }} }} }} }} }}""",
                     user="padmin", account="pro")
    assert "errors" not in body, body
    rows = []
    for key in ("pk1", "pk2"):
        totals = _totals(PRO_EVENTS, key=key)
        rows.append({"key": gid("ApiKey", key), "label": f"Key {key}", **totals,
                     "apiKey": {"id": gid("ApiKey", key), "name": f"Key {key}",
                                "prefix": f"pk_{key}", "createdBy": {"name": "User padmin"}}})
    rows.sort(key=lambda r: (-r["credits"], -r["calls"], r["key"]))
    assert body["data"]["account"]["usage"]["breakdown"] == rows


#: viewer -> (a colleague in the same account, may the viewer read the colleague's email?)
COLLEAGUES = {"paid admin": ("pmember", True), "paid member": ("padmin", False),
              "free admin": ("fmember", True), "free member": ("fadmin", False)}


@pytest.mark.parametrize("viewer", list(VIEWERS))
async def test_user_email_is_read_by_admins_and_the_user_themself(client, viewer):
    """SPEC 6.1: ``User.email`` is nullable; the user reads their own, an admin reads
    everyone's in the account, and anyone else gets that one field null with FORBIDDEN
    (the rest of the user renders). ``node`` completes a ``User`` of plain attributes in
    one step (fast execution): the email's permission must run there too."""
    await _setup(client)
    user, account, name, _plan = VIEWERS[viewer]
    colleague, allowed = COLLEAGUES[viewer]
    body = await gql(client, f"""{{ viewer {{ name email }}
        node(id: "{gid("User", colleague)}") {{ ... on User {{ id name email role }} }} }}""",
                     user=user, account=account)
    _assert_codes(body)
    assert body["data"]["viewer"] == {"name": name, "email": f"{user}@{account}.example"}
    role = "ADMIN" if colleague.endswith("admin") else "MEMBER"
    assert body["data"]["node"] == {
        "id": gid("User", colleague), "name": f"User {colleague}",
        "email": f"{colleague}@{account}.example" if allowed else None, "role": role}
    if allowed:
        assert "errors" not in body, body
    else:
        assert [(e["path"], e["extensions"]["code"]) for e in body["errors"]] == [
            (["node", "email"], "FORBIDDEN")]
        assert "admin" in body["errors"][0]["message"].lower()


async def test_admins_read_emails_in_lists(client):
    """An admin reads every email of a USER breakdown (a list completed in one step
    when its objects are plain) and of a key's creator."""
    await _setup(client)
    body = await gql(client, f"""{{ account {{ usage(filter: {FILTER}) {{
        breakdown(by: USER) {{ user {{ name email }} }} }}
        apiKeys {{ createdBy {{ email }} }} }} }}""", user="padmin", account="pro")
    assert "errors" not in body, body
    by_user = {e[3]: 0 for e in PRO_EVENTS}
    for e in PRO_EVENTS:
        by_user[e[3]] += e[6]
    ordered_users = sorted(by_user, key=lambda u: -by_user[u])
    assert body["data"]["account"]["usage"]["breakdown"] == [
        {"user": {"name": f"User {u}", "email": f"{u}@pro.example"}} for u in ordered_users]
    assert body["data"]["account"]["apiKeys"] == [
        {"createdBy": {"email": "padmin@pro.example"}}] * 2


# --- Authentication --------------------------------------------------------------------

OTHER_SECRET = "another-secret-that-is-not-the-configured-one-0123"


def _unsigned_claims(**claims: Any) -> str:
    return jwt.encode({"exp": int(time.time()) + 600, **claims}, JWT_SECRET,
                      algorithm="HS256")


AUTH_CASES = {
    "missing header": None,
    "not a bearer scheme": f"Basic {token('padmin', 'pro')}",
    "empty bearer": "Bearer ",
    "garbage token": "Bearer not-a-jwt-at-all",
    "signed with another secret": f"Bearer {issue_token(OTHER_SECRET, 'padmin', 'pro')}",
    "expired": f"Bearer {issue_token(JWT_SECRET, 'padmin', 'pro', -10)}",
    "unknown user": f"Bearer {token('ghost', 'pro')}",
    "unknown account": f"Bearer {token('padmin', 'nowhere')}",
    "user of another account": f"Bearer {token('padmin', 'free')}",
    "lacks acc": f"Bearer {_unsigned_claims(sub='padmin')}",
    "lacks sub": f"Bearer {_unsigned_claims(acc='pro')}",
    "lacks exp": "Bearer " + jwt.encode({"sub": "padmin", "acc": "pro"}, JWT_SECRET,
                                        algorithm="HS256"),
    "alg none": "Bearer " + jwt.encode({"sub": "padmin", "acc": "pro",
                                        "exp": int(time.time()) + 600}, None,
                                       algorithm="none"),
}


@pytest.mark.parametrize("case", list(AUTH_CASES))
async def test_bad_credentials_are_401_unauthenticated(client, case):
    """Anything but a valid, unexpired token (signed with the configured secret) of an
    existing user of the named account is HTTP 401 with code UNAUTHENTICATED."""
    await _setup(client)
    header = AUTH_CASES[case]
    headers = {} if header is None else {"Authorization": header}
    response = await client.post("/graphql", json={"query": "{ viewer { name } }"},
                                 headers=headers)
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["data"] is None
    assert [e["extensions"]["code"] for e in body["errors"]] == ["UNAUTHENTICATED"]
    assert response.headers["www-authenticate"].lower().startswith("bearer")


async def test_valid_token_is_accepted(client):
    """The counterpart of the 401 cases: a fresh token of an existing user works."""
    await _setup(client)
    response = await client.post("/graphql", json={"query": "{ viewer { name } }"},
                                 headers={"Authorization": f"Bearer {token('padmin', 'pro')}"})
    assert response.status_code == 200
    assert response.json() == {"data": {"viewer": {"name": "User padmin"}}}


# --- Role and plan come from the database, per request ---------------------------------

USAGE = f"{{ viewer {{ role }} account {{ plan usage(filter: {FILTER}) {{ calls credits }} }} }}"


async def test_demoted_admin_is_refused_on_the_next_request(client):
    """Role is read from the database: the same token stops working for usage as soon
    as the admin is demoted, and works again once promoted back."""
    await _setup(client)
    bearer = token("padmin", "pro")
    before = await gql(client, USAGE, bearer=bearer)
    assert before == {"data": {"viewer": {"role": "ADMIN"}, "account": {
        "plan": "PRO", "usage": _totals(PRO_EVENTS)}}}

    await put(client, "/v1/accounts/pro/users/padmin", {
        "name": "User padmin", "email": "padmin@pro.example", "role": "MEMBER"})
    after = await gql(client, USAGE, bearer=bearer)
    assert after["data"] == {"viewer": {"role": "MEMBER"},
                             "account": {"plan": "PRO", "usage": None}}
    assert [e["extensions"]["code"] for e in after["errors"]] == ["FORBIDDEN"]

    await put(client, "/v1/accounts/pro/users/padmin", {
        "name": "User padmin", "email": "padmin@pro.example", "role": "ADMIN"})
    again = await gql(client, USAGE, bearer=bearer)
    assert again == before


async def test_promoted_member_gets_data_on_the_next_request(client):
    """A member's token is not stuck at MEMBER either: promotion takes effect at once."""
    await _setup(client)
    bearer = token("pmember", "pro")
    before = await gql(client, USAGE, bearer=bearer)
    assert [e["extensions"]["code"] for e in before["errors"]] == ["FORBIDDEN"]
    await put(client, "/v1/accounts/pro/users/pmember", {
        "name": "User pmember", "email": "pmember@pro.example", "role": "ADMIN"})
    after = await gql(client, USAGE, bearer=bearer)
    assert after == {"data": {"viewer": {"role": "ADMIN"}, "account": {
        "plan": "PRO", "usage": _totals(PRO_EVENTS)}}}


async def _set_plan(client: httpx.AsyncClient, account: str, plan: str) -> None:
    await put(client, f"/v1/accounts/{account}", {
        "name": f"Account {account}", "plan": plan, "timeZone": "UTC",
        "creditsGranted": 1000, "periodStart": "2026-01-01T00:00:00Z",
        "periodEnd": "2026-02-01T00:00:00Z"})


async def test_downgraded_account_needs_upgrade_on_the_next_request(client):
    """Plan is read from the database: downgrading to FREE refuses usage with
    PLAN_UPGRADE_REQUIRED on the very next request with the same token; upgrading back
    (to any paid plan) restores it."""
    await _setup(client)
    bearer = token("padmin", "pro")
    before = await gql(client, USAGE, bearer=bearer)
    assert "errors" not in before, before

    await _set_plan(client, "pro", "FREE")
    after = await gql(client, USAGE, bearer=bearer)
    assert after["data"] == {"viewer": {"role": "ADMIN"},
                             "account": {"plan": "FREE", "usage": None}}
    assert [e["extensions"]["code"] for e in after["errors"]] == ["PLAN_UPGRADE_REQUIRED"]

    await _set_plan(client, "pro", "SCALE")
    again = await gql(client, USAGE, bearer=bearer)
    assert again == {"data": {"viewer": {"role": "ADMIN"}, "account": {
        "plan": "SCALE", "usage": _totals(PRO_EVENTS)}}}


@pytest.mark.parametrize("plan", ["PRO", "PREMIUM", "SCALE"])
async def test_every_paid_plan_may_read_usage(client, plan):
    """PRO, PREMIUM and SCALE are all paid plans."""
    await _setup(client)
    await _set_plan(client, "free", plan)
    body = await gql(client, USAGE, user="fadmin", account="free")
    assert body == {"data": {"viewer": {"role": "ADMIN"}, "account": {
        "plan": plan, "usage": _totals(FREE_EVENTS)}}}


# --- The schema: directives printed == directives enforced -----------------------------

GUARDED_NAMES = {"usage", "apiKeys", "creditPool"}
GUARDED_TYPES = {"UsageReport", "UsageTotals", "CreditPool"}


def _fields() -> list[tuple[str, str, Any, Any]]:
    """(type, field, graphql-core field of the running schema, same field as printed)."""
    printed = graphql.build_schema(schema.as_str())
    out = []
    for type_name, gtype in schema._schema.type_map.items():
        if type_name.startswith("__") or not isinstance(
                gtype, graphql.GraphQLObjectType | graphql.GraphQLInterfaceType):
            continue
        for field_name, field in gtype.fields.items():
            out.append((type_name, field_name, field,
                        printed.type_map[type_name].fields[field_name]))  # type: ignore[union-attr]
    return out


def _printed_directives(printed_field: Any) -> list[str]:
    return [d.name.value for d in printed_field.ast_node.directives or ()]


def test_schema_walk_covers_every_field():
    """Sanity check of the walk below: it sees every type's fields, guarded or not."""
    seen = {(t, f) for t, f, _, _ in _fields()}
    assert {("Query", "viewer"), ("Query", "node"), ("Account", "endpoints"),
            ("UsageRow", "apiKey"), ("CreditPool", "remaining")} <= seen
    guarded = {(t, f) for t, f, _, p in _fields() if _printed_directives(p)}
    assert guarded == {("Account", "usage"), ("Account", "apiKeys"), ("Account", "creditPool"),
                       ("ApiKey", "usage"), ("ApiKey", "budget"), ("Endpoint", "usage"),
                       ("Account", "alerts"), ("Alert", "apiKey"),
                       ("UsageRow", "apiKey"), ("User", "email"),  # these two: SPEC 6.1
                       ("Account", "accessTokens"), ("Mutation", "createAccessToken"),
                       ("Mutation", "revokeAccessToken")}  # SPEC 6.4


def test_every_usage_field_is_admin_only_and_paid():
    """Every field named usage/apiKeys/creditPool, or returning UsageReport, UsageTotals
    or CreditPool (except within those types), prints ``@adminOnly``; usage and apiKeys
    also print ``@paidPlan``."""
    for type_name, field_name, field, printed in _fields():
        returns = graphql.get_named_type(field.type).name
        directives = _printed_directives(printed)
        where = f"{type_name}.{field_name}"
        if field_name in GUARDED_NAMES or returns in GUARDED_TYPES:
            if type_name in GUARDED_TYPES and field_name not in GUARDED_NAMES:
                # A field of a guarded type (``UsageReport.previous: UsageReport!``, SPEC
                # 6.2) is reached only through the guarded fields returning that type,
                # which this walk checks: it needs (and, non-null, may have) no directive.
                continue
            assert "adminOnly" in directives, where
        if field_name in {"usage", "apiKeys"}:
            assert "paidPlan" in directives, where


def test_every_guarded_field_is_nullable():
    """A refusal nulls only the guarded field, which needs the field to be nullable."""
    for type_name, field_name, field, printed in _fields():
        if _printed_directives(printed):
            assert not graphql.is_non_null_type(field.type), f"{type_name}.{field_name}"


def test_printed_directives_are_the_enforced_permissions():
    """The directives in the SDL and the checks run at execution time are one
    declaration: each field's PermissionExtension holds exactly the permissions whose
    schema directives are printed on it, in the printed order (adminOnly first), and a
    field without directives has no permission check."""
    for type_name, field_name, field, printed in _fields():
        where = f"{type_name}.{field_name}"
        definition = field.extensions["strawberry-definition"]
        extensions = [e for e in definition.extensions if isinstance(e, PermissionExtension)]
        directives = _printed_directives(printed)
        if not directives:
            assert extensions == [], where
            continue
        assert len(extensions) == 1, where
        (extension,) = extensions
        assert extension.use_directives is True, where
        assert extension.fail_silently is False, where
        names = [type(p._schema_directive).__strawberry_directive__.graphql_name
                 for p in extension.permissions]
        assert names == directives, where
        assert [type(p) for p in extension.permissions] == [RULES[n] for n in directives], where


# --- SPEC 6.1: a guarded type is guarded on every path, present and future -------------

def test_every_field_returning_an_api_key_is_guarded():
    """Walk the served schema: every field whose type is ``ApiKey`` (in any list or
    nullable wrapper) prints ``@adminOnly @paidPlan``, is enforced by those very
    permissions and is nullable; the schema's own check finds nothing unguarded."""
    reaching = []
    for type_name, field_name, field, printed in _fields():
        if graphql.get_named_type(field.type).name != "ApiKey":
            continue
        where = f"{type_name}.{field_name}"
        reaching.append(where)
        assert _printed_directives(printed)[:2] == ["adminOnly", "paidPlan"], where
        assert {AdminOnly, PaidPlan} <= field_rules(field), where
        assert not graphql.is_non_null_type(field.type), where
    assert {"Account.apiKeys", "UsageRow.apiKey"} <= set(reaching)
    assert unguarded_paths(schema._schema) == []
    # node(id:) returns the Node interface: the type's rules are checked on the object
    # (the node tests above), and the type declares them for that.
    assert type_rules(ApiKey) == (AdminOnly, PaidPlan)


def _context(role: str, plan: str) -> Any:
    user = SimpleNamespace(id=1, role=models.Role(role))
    return SimpleNamespace(viewer=SimpleNamespace(user=user,
                                                  account=SimpleNamespace(plan=models.Plan(plan))))


def _key(n: int) -> ApiKey:
    return ApiKey(id=strawberry.ID(f"k{n}"), name=f"key {n}", prefix=f"pk_{n}",
                  created_at=datetime(2026, 1, 1, tzinfo=UTC), revoked_at=None, _pk=n,
                  _created_by_id=None)


@strawberry.type
class Stranger:
    """A type from a future change that reaches API keys without declaring any guard."""

    @strawberry.field
    def key(self) -> ApiKey | None:
        return _key(1)

    @strawberry.field
    def keys(self) -> list[ApiKey] | None:
        return [_key(1), _key(2)]


@strawberry.type
class StrangeQuery:
    @strawberry.field
    def stranger(self) -> Stranger:
        return Stranger()

    @strawberry.field
    def anything(self) -> Node | None:
        return _key(3)

    @strawberry.field
    def either(self) -> Annotated[ApiKey | Source, strawberry.union("KeyOrSource")] | None:
        return _key(4)


STRANGE = "{ stranger { key { name } keys { name prefix } } anything { id } either { __typename } }"
#: role, plan -> the code every path to a key answers with (None: the data)
STRANGE_CODES = {("ADMIN", "PRO"): None, ("MEMBER", "PRO"): "FORBIDDEN",
                 ("ADMIN", "FREE"): "PLAN_UPGRADE_REQUIRED", ("MEMBER", "FREE"): "FORBIDDEN"}


@pytest.mark.parametrize(("role", "plan"), list(STRANGE_CODES))
def test_a_new_path_to_an_api_key_is_guarded_without_being_told(role, plan):
    """A field added later that returns ``ApiKey`` and declares nothing still prints and
    enforces the type's rules; a field of an interface or a union type is refused when
    execution meets a key there."""
    strange = Schema(query=StrangeQuery, types=[ApiKey, Source],
                     execution_context_class=FastExecutionContext,
                     config=StrawberryConfig(scalar_map=SCALAR_MAP))
    sdl = strange.as_str()
    assert "key: ApiKey @adminOnly @paidPlan" in sdl
    assert "keys: [ApiKey!] @adminOnly @paidPlan" in sdl
    result = strange.execute_sync(STRANGE, context_value=_context(role, plan))
    code = STRANGE_CODES[role, plan]
    if code is None:
        assert result.errors is None
        assert result.data == {"stranger": {"key": {"name": "key 1"}, "keys": [
            {"name": "key 1", "prefix": "pk_1"}, {"name": "key 2", "prefix": "pk_2"}]},
            "anything": {"id": "k3"}, "either": {"__typename": "ApiKey"}}
        return
    assert result.data == {"stranger": {"key": None, "keys": None}, "anything": None,
                           "either": None}
    assert sorted((tuple(e.path or ()), (e.extensions or {}).get("code"))
                  for e in result.errors or []) == sorted([
        (("stranger", "key"), code), (("stranger", "keys"), code), (("anything",), code),
        (("either",), code)])


@guarded_type(AdminOnly)
@strawberry.type
class Secret:
    """A guarded type of plain fields only: a list of them is completed in one step."""

    name: str


@strawberry.type
class ListQuery:
    @strawberry.field
    def keys(self) -> list[ApiKey] | None:
        return [_key(1), _key(2)]

    @strawberry.field
    def secrets(self) -> list[Secret] | None:
        return [Secret(name="a"), Secret(name="b")]


def test_execution_refuses_guarded_objects_even_without_the_field_guards():
    """Defence in depth: with a plain Strawberry schema (no field gets the type's guard),
    the execution alone refuses guarded objects: each key as it is completed, and a list
    of plain guarded objects, which fast execution completes in one step, as a whole."""
    bare = strawberry.Schema(query=ListQuery, execution_context_class=FastExecutionContext,
                             config=StrawberryConfig(scalar_map=SCALAR_MAP))
    sdl = bare.as_str()
    assert "  keys: [ApiKey!]\n" in sdl and "  secrets: [Secret!]\n" in sdl  # unguarded
    query = "{ keys { name prefix } secrets { name } }"
    refused = bare.execute_sync(query, context_value=_context("MEMBER", "PRO"))
    assert refused.data == {"keys": None, "secrets": None}
    assert sorted((e.path, (e.extensions or {}).get("code")) for e in refused.errors or []) == [
        (["keys", 0], "FORBIDDEN"), (["secrets"], "FORBIDDEN")]
    allowed = bare.execute_sync(query, context_value=_context("ADMIN", "PRO"))
    assert allowed.errors is None
    assert allowed.data == {"keys": [{"name": "key 1", "prefix": "pk_1"},
                                     {"name": "key 2", "prefix": "pk_2"}],
                            "secrets": [{"name": "a"}, {"name": "b"}]}

    one_by_one = []

    class Counting(FastExecutionContext):
        def complete_list_item_value(self, *args: Any, **kwargs: Any) -> Any:
            one_by_one.append(1)
            return super().complete_list_item_value(*args, **kwargs)

    counted = strawberry.Schema(query=ListQuery, execution_context_class=Counting,
                                config=StrawberryConfig(scalar_map=SCALAR_MAP))
    result = counted.execute_sync("{ secrets { name } }",
                                  context_value=_context("MEMBER", "PRO"))
    assert result.data == {"secrets": None}
    assert one_by_one == []  # refused on the fast path itself, not item by item


@strawberry.type
class NonNullQuery:
    @strawberry.field
    def key(self) -> ApiKey:
        return _key(1)


def test_a_non_null_path_to_an_api_key_does_not_build():
    """A refusal must null only the field: a non-null field returning a key is a
    schema error at start-up, naming the field."""
    with pytest.raises(TypeError, match=r"NonNullQuery\.key.*nullable"):
        Schema(query=NonNullQuery, types=[ApiKey],
               config=StrawberryConfig(scalar_map=SCALAR_MAP))

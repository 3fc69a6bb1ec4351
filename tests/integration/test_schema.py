"""The published schema: ``schema.graphql`` is the printed schema of the running code,
it contains SPEC section 3's minimum schema as written, and GraphiQL is served."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import graphql
from graphql import language as ast

from gql_usage.graphql.schema import schema

ROOT = Path(__file__).resolve().parents[2]

#: SPEC section 3, "Minimum schema", verbatim (comments kept).
SPEC_SDL = """
directive @adminOnly on FIELD_DEFINITION
directive @paidPlan on FIELD_DEFINITION

enum Plan { FREE PRO PREMIUM SCALE }
enum Role { ADMIN MEMBER }
enum Granularity { HOUR DAY WEEK MONTH }
enum UsageDimension { ENDPOINT API_KEY SOURCE USER }

type Query {
  viewer: User!
  account: Account!          # the viewer's own account
  node(id: ID!): Node
}

type Account implements Node {
  id: ID!
  name: String!
  plan: Plan!
  timeZone: String!
  creditPool: CreditPool @adminOnly
  apiKeys(includeRevoked: Boolean! = false): [ApiKey!] @adminOnly @paidPlan
  endpoints: [Endpoint!]!
  sources: [Source!]!
  usage(filter: UsageFilter!): UsageReport @adminOnly @paidPlan
}

input UsageFilter {
  from: DateTime!            # inclusive
  to: DateTime!              # exclusive
  timeZone: String           # IANA name; default: the account's time zone
  apiKeyIds: [ID!]           # null or absent: all API keys
  endpoints: [String!]       # endpoint paths
  sources: [String!]         # source keys
  userIds: [ID!]
}

type UsageReport {
  calls: Int!
  credits: Int!
  series(granularity: Granularity!): [UsageBucket!]!
  breakdown(by: UsageDimension!, limit: Int): [UsageRow!]!
}

type UsageBucket { start: DateTime!  end: DateTime!  calls: Int!  credits: Int! }

type UsageRow {
  key: String!               # endpoint path, api key id, source key or user id
  label: String!             # what a person reads: path, key name, source name, user name
  endpoint: Endpoint
  apiKey: ApiKey
  source: Source
  user: User
  calls: Int!
  credits: Int!
  shareOfCredits: Float!     # percent of the report's credits, 0..100; 0 when the report has 0 credits
}

type ApiKey implements Node {
  id: ID!  name: String!  prefix: String!  createdAt: DateTime!  revokedAt: DateTime
  createdBy: User
  usage(filter: UsageFilter!): UsageTotals @adminOnly @paidPlan   # batched: one query for all keys
}
type Endpoint { path: String!  usage(filter: UsageFilter!): UsageTotals @adminOnly @paidPlan }  # batched
type Source { key: String!  name: String! }
type User implements Node { id: ID!  name: String!  email: String!  role: Role! }
type UsageTotals { calls: Int!  credits: Int! }
type CreditPool { granted: Int!  used: Int!  remaining: Int!  periodStart: DateTime!  periodEnd: DateTime! }
"""  # noqa: E501 - the spec's lines, verbatim

#: SPEC section 6.1 changes section 3's types: every count is a ``SafeInt!``, and
#: ``User.email`` is nullable.
V2_TYPES = {
    **{f"{t}.{f}": "SafeInt!" for t in ("UsageReport", "UsageBucket", "UsageRow",
                                        "UsageTotals") for f in ("calls", "credits")},
    **{f"CreditPool.{f}": "SafeInt!" for f in ("granted", "used", "remaining")},
    "User.email": "String",
}
#: ... and its access rules: ``User.email`` is read only by admins and the user themself;
#: an ``ApiKey`` only by admins of paid-plan accounts, wherever it is reached.
V2_DIRECTIVES = {"User.email": ["adminOrSelf"], "UsageRow.apiKey": ["adminOnly", "paidPlan"]}
#: SPEC 6.1: every field with one of these names is ``SafeInt!``.
SAFE_INT_NAMES = {"calls", "credits", "granted", "used", "remaining", "overage"}

SPEC = graphql.parse(SPEC_SDL)
OURS_TEXT = (ROOT / "schema.graphql").read_text()
OURS = graphql.build_schema(OURS_TEXT)


def _directives(node: ast.FieldDefinitionNode) -> list[str]:
    return [d.name.value for d in node.directives or ()]


def _definitions(kind: type) -> list:
    return [d for d in SPEC.definitions if isinstance(d, kind)]


def test_schema_file_is_the_printed_schema():
    """``schema.graphql`` is exactly what ``gql-usage export-schema`` prints."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GQL_USAGE_")}
    result = subprocess.run([sys.executable, "-m", "gql_usage.cli", "export-schema"],
                            cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert result.stdout == OURS_TEXT, (
        "schema.graphql is out of date; regenerate it with "
        "`python -m gql_usage.cli export-schema > schema.graphql`")


def test_printed_schema_is_the_served_schema():
    """The file also equals the schema object the app serves (``schema.as_str()``)."""
    assert OURS_TEXT == schema.as_str() + "\n"


def test_spec_block_is_parsed_completely():
    """Sanity check: the checks below see every definition of the spec's block."""
    names = sorted(d.name.value for d in SPEC.definitions)
    assert names == sorted([
        "adminOnly", "paidPlan", "Plan", "Role", "Granularity", "UsageDimension", "Query",
        "Account", "UsageFilter", "UsageReport", "UsageBucket", "UsageRow", "ApiKey",
        "Endpoint", "Source", "User", "UsageTotals", "CreditPool"])


def test_spec_directives_exist():
    for spec in _definitions(ast.DirectiveDefinitionNode):
        ours = OURS.get_directive(spec.name.value)
        assert ours is not None, f"@{spec.name.value}"
        assert sorted(loc.name for loc in ours.locations) == sorted(
            loc.value for loc in spec.locations), f"@{spec.name.value}"
        assert ours.args == {}, f"@{spec.name.value}"


def test_spec_enums_have_their_values():
    for spec in _definitions(ast.EnumTypeDefinitionNode):
        ours = OURS.get_type(spec.name.value)
        assert isinstance(ours, graphql.GraphQLEnumType), spec.name.value
        assert [v.name.value for v in spec.values] == list(ours.values), spec.name.value


def test_spec_object_types_have_their_fields_arguments_and_directives():
    """Every type, field (same type string), argument (same type and default) and
    field directive of the spec exists in ours; a field the spec leaves unguarded is
    unguarded in ours too."""
    for spec in _definitions(ast.ObjectTypeDefinitionNode):
        name = spec.name.value
        ours = OURS.get_type(name)
        assert isinstance(ours, graphql.GraphQLObjectType), name
        interfaces = {i.name.value for i in spec.interfaces or ()}
        assert interfaces <= {i.name for i in ours.interfaces}, name
        for field in spec.fields:
            where = f"{name}.{field.name.value}"
            assert field.name.value in ours.fields, where
            mine = ours.fields[field.name.value]
            assert str(mine.type) == V2_TYPES.get(where, graphql.print_ast(field.type)), where
            assert _directives(mine.ast_node) == V2_DIRECTIVES.get(
                where, _directives(field)), where
            for arg in field.arguments or ():
                at = f"{where}({arg.name.value}:)"
                assert arg.name.value in mine.args, at
                my_arg = mine.args[arg.name.value]
                assert str(my_arg.type) == graphql.print_ast(arg.type), at
                if arg.default_value is not None:
                    printed = my_arg.ast_node.default_value
                    assert printed is not None, f"{at} has no default"
                    assert graphql.print_ast(printed) == graphql.print_ast(arg.default_value), at
            required_extra = [a for a, v in mine.args.items()
                              if a not in {x.name.value for x in field.arguments or ()}
                              and graphql.is_required_argument(v)]
            assert required_extra == [], f"{where}: new required arguments break clients"


def test_every_count_is_a_safe_int():
    """SPEC 6.1: every ``calls``, ``credits``, ``granted``, ``used``, ``remaining`` and
    ``overage`` field, on any type, is ``SafeInt!``; ``SafeInt`` is a scalar."""
    assert isinstance(OURS.get_type("SafeInt"), graphql.GraphQLScalarType)
    seen = []
    for name, gtype in OURS.type_map.items():
        if name.startswith("__") or not isinstance(
                gtype, graphql.GraphQLObjectType | graphql.GraphQLInterfaceType):
            continue
        for field_name, field in gtype.fields.items():
            if field_name in SAFE_INT_NAMES:
                seen.append(f"{name}.{field_name}")
                assert str(field.type) == "SafeInt!", f"{name}.{field_name}"
    assert {"UsageReport.calls", "UsageRow.credits", "CreditPool.overage",
            "CreditPool.remaining", "UsageTotals.calls"} <= set(seen)


def test_spec_input_types_have_their_fields():
    for spec in _definitions(ast.InputObjectTypeDefinitionNode):
        name = spec.name.value
        ours = OURS.get_type(name)
        assert isinstance(ours, graphql.GraphQLInputObjectType), name
        for field in spec.fields:
            where = f"{name}.{field.name.value}"
            assert field.name.value in ours.fields, where
            assert str(ours.fields[field.name.value].type) == graphql.print_ast(field.type), where
        required_extra = [f for f, v in ours.fields.items()
                          if f not in {x.name.value for x in spec.fields}
                          and graphql.is_required_input_field(v)]
        assert required_extra == [], name


def test_node_interface_and_datetime_scalar():
    """Types the spec uses without declaring: ``Node`` (with ``id: ID!``) and
    ``DateTime``."""
    node = OURS.get_type("Node")
    assert isinstance(node, graphql.GraphQLInterfaceType)
    assert str(node.fields["id"].type) == "ID!"
    assert isinstance(OURS.get_type("DateTime"), graphql.GraphQLScalarType)
    assert {t.name for t in OURS.get_possible_types(node)} >= {"Account", "ApiKey", "User"}


async def test_graphiql_is_served_without_a_token(client):
    """Developers open GraphiQL in a browser, before they have pasted a token."""
    response = await client.get("/graphql", headers={"Accept": "text/html"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "graphiql" in response.text.lower()


async def test_get_with_a_query_still_needs_a_token(client):
    """Only the IDE page is public: a query sent with GET is authenticated like POST."""
    response = await client.get("/graphql", params={"query": "{ viewer { name } }"})
    assert response.status_code == 401
    assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"

"""The schema: ``Query`` and the extensions every operation runs with."""

from __future__ import annotations

import strawberry
from graphql import GraphQLError
from strawberry.extensions import MaxAliasesLimiter, MaxTokensLimiter, QueryDepthLimiter
from strawberry.types import ExecutionContext

from gql_usage.graphql import ids
from gql_usage.graphql.errors import ErrorCodes
from gql_usage.graphql.types import Account, ApiKey, Info, Node, NodeId, User


@strawberry.type
class Query:
    @strawberry.field(description="The user the token belongs to.")
    def viewer(self, info: Info) -> User:
        return User.from_model(info.context.viewer.user)

    @strawberry.field(description="The viewer's own account.")
    def account(self, info: Info) -> Account:
        return Account.from_model(info.context.viewer.account)

    @strawberry.field(description="An object by global id; null for an unknown id or one "
                      "outside the viewer's account.")
    async def node(self, info: Info, id: NodeId) -> Node | None:
        try:
            type_name, external_id = ids.decode(str(id))
        except ValueError:
            return None
        viewer = info.context.viewer
        if type_name == "Account":
            ok = external_id == viewer.account.external_id
            return Account.from_model(viewer.account) if ok else None
        if type_name == "ApiKey":
            key = await info.context.loaders.api_keys_by_external.load(external_id)
            return ApiKey.from_model(key) if key else None
        user = await info.context.loaders.users_by_external.load(external_id)
        return User.from_model(user) if user else None


class Schema(strawberry.Schema):
    def process_errors(self, errors: list[GraphQLError],
                       execution_context: ExecutionContext | None = None) -> None:
        """Expected errors (refusals, bad input) are not logged as failures; unexpected
        ones are logged with the request id by ``ErrorCodes``."""


def build_schema(*, max_depth: int = 12, max_aliases: int = 30,
                 max_tokens: int = 2_000) -> strawberry.Schema:
    return Schema(
        query=Query,
        types=[Account, ApiKey, User],
        extensions=[
            ErrorCodes,
            lambda: QueryDepthLimiter(max_depth=max_depth),
            lambda: MaxAliasesLimiter(max_alias_count=max_aliases),
            lambda: MaxTokensLimiter(max_token_count=max_tokens),
        ],
    )


schema = build_schema()

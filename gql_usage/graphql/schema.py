"""The schema: ``Query`` and the extensions every operation runs with.

``build_schema(settings)`` makes the schema an app serves, with that app's query limits,
batching cap and rate limiter (``gql_usage/graphql/limits.py``); the module-level
``schema`` has the default settings and is what ``gql-usage export-schema`` prints (limits
do not change the SDL).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator

import graphql
import strawberry
from graphql import GraphQLError
from strawberry.extensions import SchemaExtension, ValidationCache
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from gql_usage.graphql import ids
from gql_usage.graphql.errors import ErrorCodes
from gql_usage.graphql.execution import FastExecutionContext
from gql_usage.graphql.limits import Clock, RateLimiter, limit_extensions
from gql_usage.graphql.types import Account, ApiKey, Info, Node, NodeId, RateLimit, User
from gql_usage.settings import Settings


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

    @strawberry.field(description="What this operation cost and the viewer's budget left "
                      "(free: asking costs no points).")
    def rate_limit(self, info: Info) -> RateLimit:
        charge = info.context.charges.get(id(info.operation))
        if charge is None:  # pragma: no cover - QueryCost charges every executed operation
            raise RuntimeError("operation executed without a rate-limit charge")
        return RateLimit.from_charge(charge)


#: Documents by text (and parse options): a dashboard sends the same few over and over.
#: Bounded, and each document is at most ``max_tokens`` tokens long.
_parse = functools.lru_cache(maxsize=256)(graphql.parse)


class CachedParse(SchemaExtension):
    """Parses each document text once. Unlike Strawberry's ``ParserCache``, a document
    that does not parse is left to Strawberry's own parse, which reports the syntax error
    as usual (and the token limit's refusal keeps its code); errors are not cached."""

    def on_parse(self) -> Iterator[None]:
        ctx = self.execution_context
        if ctx.query and ctx.graphql_document is None:
            try:
                ctx.graphql_document = _parse(ctx.query, **ctx.parse_options)
            except GraphQLError:
                pass
        yield


class CachedValidation(ValidationCache):
    """Strawberry's validation cache, except for a document an earlier extension has
    already refused (the fragment fan-out check of ``QueryCost``): validating that one is
    the very work the refusal avoids."""

    def on_validate(self) -> Iterator[None]:
        if self.execution_context.pre_execution_errors:
            yield
            return
        yield from super().on_validate()


class Schema(strawberry.Schema):
    rate_limiter: RateLimiter

    def process_errors(self, errors: list[GraphQLError],
                       execution_context: ExecutionContext | None = None) -> None:
        """Expected errors (refusals, bad input) are not logged as failures; unexpected
        ones are logged with the request id by ``ErrorCodes``."""


def build_schema(settings: Settings | None = None, *, clock: Clock = time.time) -> Schema:
    """The schema with ``settings``' limits (default: the defaults, not the environment)
    and its own rate limiter."""
    settings = settings or Settings.model_construct()
    limiter = RateLimiter(settings.rate_limit_points,
                          storage_url=settings.rate_limit_storage_url, clock=clock)
    built = Schema(
        query=Query,
        types=[Account, ApiKey, User],
        # Parsing and validation are cached per document (dashboards send the same few
        # documents over and over); the rate limit runs on every request.
        extensions=[ErrorCodes, *limit_extensions(settings, limiter), CachedParse,
                    lambda: CachedValidation(maxsize=256)],
        config=StrawberryConfig(
            batching_config={"max_operations": settings.max_batch_operations}),
        execution_context_class=FastExecutionContext,
    )
    built.rate_limiter = limiter
    return built


schema = build_schema()

"""The schema: ``Query`` and the extensions every operation runs with.

``build_schema(settings)`` makes the schema an app serves, with that app's query limits,
batching cap and rate limiter (``gql_usage/graphql/limits/``); the module-level
``schema`` has the default settings and is what ``gql-usage export-schema`` prints (limits
do not change the SDL).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import graphql
import strawberry
from graphql import GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.schema import validate_document
from strawberry.types import ExecutionContext

from gql_usage.caches import MIB, ByteLRU, text_digest
from gql_usage.graphql import access_tokens, ids
from gql_usage.graphql.access_tokens import AccessToken, Mutation, ReadOnlyTokens
from gql_usage.graphql.directives import enforce, type_rules
from gql_usage.graphql.errors import ErrorCodes
from gql_usage.graphql.execution import FastExecutionContext
from gql_usage.graphql.guards import apply_type_guards, check_type_guards
from gql_usage.graphql.limits.cost_map import validate_cost_map
from gql_usage.graphql.limits.extension import limit_extensions
from gql_usage.graphql.limits.rate_limit import Clock, RateLimiter
from gql_usage.graphql.scalars import SCALAR_MAP
from gql_usage.graphql.types import Account, ApiKey, Info, Node, NodeId, RateLimit, User
from gql_usage.settings import Settings

#: The types ``node(id:)`` answers with, by the type name in the id.
NODE_TYPES: dict[str, type] = {"Account": Account, "ApiKey": ApiKey, "User": User,
                               "AccessToken": AccessToken}
if set(NODE_TYPES) != set(ids.TYPES):  # pragma: no cover - a module-level consistency check
    raise TypeError("node(id:) must know a type for every id type in ids.TYPES")


@strawberry.type
class Query:
    @strawberry.field(description="The user the token belongs to.")
    def viewer(self, info: Info) -> User:
        return User.from_model(info.context.viewer.user)

    @strawberry.field(description="The viewer's own account.")
    def account(self, info: Info) -> Account:
        return Account.from_model(info.context.viewer.account)

    @strawberry.field(description="An object by global id; null for an unknown id or one "
                      "outside the viewer's account. The object obeys the rules of its "
                      "type wherever it is listed: an `ApiKey` only for admins of "
                      "paid-plan accounts (`FORBIDDEN`, then `PLAN_UPGRADE_REQUIRED`).")
    async def node(self, info: Info, id: NodeId) -> Node | None:
        try:
            type_name, external_id = ids.decode(str(id))
        except ValueError:
            return None
        # The type's rules, before anything is looked up: a refused viewer learns
        # nothing about which ids exist. (Execution checks them again on the object.)
        enforce(type_rules(NODE_TYPES[type_name]), info)
        viewer = info.context.viewer
        if type_name == "AccessToken":
            # Not a @guarded_type (CreatedAccessToken.accessToken is non-null, SPEC 6.4):
            # the rules of the fields that list tokens are applied here.
            enforce(access_tokens.NODE_RULES, info)
            return await access_tokens.node(info, external_id)
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


#: What a parsed document holds per token (its nodes and the token chain its locations
#: keep), measured with tracemalloc: ~610 bytes.
TOKEN_BYTES = 640


def document_bytes(document: graphql.DocumentNode) -> int:
    """Bytes a parsed document keeps alive: its text (every node's location refers to the
    source) and its nodes and tokens."""
    loc = document.loc
    if loc is None:
        return TOKEN_BYTES * len(document.definitions)
    tokens = 0
    token: graphql.Token | None = loc.start_token
    while token is not None:
        tokens += 1
        token = token.next
    return sys.getsizeof(loc.source.body) + TOKEN_BYTES * tokens


#: Documents by digest of their text (and parse options): a dashboard sends the same few
#: over and over. Bounded by bytes: a padded 256 KiB text weighs 256 KiB.
_PARSED: ByteLRU[tuple[bytes, tuple[tuple[str, Any], ...]], graphql.DocumentNode] = ByteLRU(
    "parsed documents", 16 * MIB, document_bytes)
#: Validation errors by (schema, rules, digest of the text); errors refer to the
#: document's nodes, so an entry with errors weighs as much as its document.
_VALIDATED: ByteLRU[tuple[object, ...], list[GraphQLError]] = ByteLRU(
    "validation results", 16 * MIB, lambda errors: 0)


def _options_key(options: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(options.items()))


class CachedParse(SchemaExtension):
    """Parses each document text once. Unlike Strawberry's ``ParserCache``, a document
    that does not parse is left to Strawberry's own parse, which reports the syntax error
    as usual (and the token limit's refusal keeps its code); errors are not cached."""

    def on_parse(self) -> Iterator[None]:
        ctx = self.execution_context
        if ctx.query and ctx.graphql_document is None:
            key = (text_digest(ctx.query), _options_key(ctx.parse_options))
            document = _PARSED.get(key)
            if document is None:
                try:
                    document = graphql.parse(ctx.query, **ctx.parse_options)
                except GraphQLError:
                    pass
                else:
                    _PARSED.put(key, document)
            ctx.graphql_document = document
        yield


class CachedValidation(SchemaExtension):
    """Validates each document once per schema and rules, except a document an earlier
    extension has already refused (the fragment fan-out check of ``QueryCost``):
    validating that one is the very work the refusal avoids."""

    def on_validate(self) -> Iterator[None]:
        ctx = self.execution_context
        document = ctx.graphql_document
        if ctx.pre_execution_errors or document is None:
            yield
            return
        rules = tuple(ctx.validation_rules)
        schema = ctx.schema._schema
        if not ctx.query:
            ctx.pre_execution_errors = validate_document(schema, document, rules)
            yield
            return
        key = (schema, rules, text_digest(ctx.query), _options_key(ctx.parse_options))
        errors = _VALIDATED.get(key)
        if errors is None:
            errors = validate_document(schema, document, rules)
            _VALIDATED.put(key, errors, document_bytes(document) if errors else 0)
        ctx.pre_execution_errors = errors
        yield


class Schema(strawberry.Schema):
    """Strawberry's schema, with every field that returns a ``@guarded_type`` guarded by
    that type's rules (``gql_usage/graphql/guards.py``): it does not build otherwise."""

    rate_limiter: RateLimiter

    def __init__(self, query: type, mutation: type | None = None,
                 subscription: type | None = None, types: Iterable[Any] = (),
                 **kwargs: Any) -> None:
        types = list(types)
        apply_type_guards([query, mutation, subscription, *types])
        super().__init__(query=query, mutation=mutation, subscription=subscription,
                         types=types, **kwargs)
        check_type_guards(self._schema)

    def process_errors(self, errors: list[GraphQLError],
                       execution_context: ExecutionContext | None = None) -> None:
        """Expected errors (refusals, bad input) are not logged as failures; unexpected
        ones are logged with the request id by ``ErrorCodes``."""


def build_schema(settings: Settings | None = None, *, clock: Clock = time.time) -> Schema:
    """The schema with ``settings``' limits (default: the defaults, not the environment)
    and its own rate limiter. Raises ``StaleCostMap`` if the cost model names a type,
    field, argument or enum value the schema lacks."""
    settings = settings or Settings.model_construct()
    limiter = RateLimiter(settings.rate_limit_points,
                          storage_url=settings.rate_limit_storage_url, clock=clock)
    built = Schema(
        query=Query,
        mutation=Mutation,
        types=[Account, ApiKey, User, AccessToken],
        # Parsing and validation are cached per document (dashboards send the same few
        # documents over and over); the rate limit runs on every request. Access tokens
        # are refused mutations (``ReadOnlyTokens``).
        extensions=[ErrorCodes, *limit_extensions(settings, limiter), CachedParse,
                    CachedValidation, ReadOnlyTokens],
        config=StrawberryConfig(
            batching_config={"max_operations": settings.max_batch_operations},
            scalar_map=SCALAR_MAP),
        execution_context_class=FastExecutionContext,
    )
    validate_cost_map(built._schema)
    built.rate_limiter = limiter
    return built


schema = build_schema()

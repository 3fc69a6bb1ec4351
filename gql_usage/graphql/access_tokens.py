"""Access tokens in GraphQL (SPEC 6.4): the ``AccessToken`` type, the schema's
``Mutation`` (create and revoke, ``@adminOnly @paidPlan``) and ``ReadOnlyTokens``, which
refuses every mutation to a request made with an access token. Resolvers are thin: the
secret's rules are ``gql_usage.access_tokens``, the table ``gql_usage.storage.access_tokens``.
See docs/access-tokens.md.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated

import strawberry
from graphql import ExecutionResult as GraphQLExecutionResult
from graphql import GraphQLError, OperationType, get_operation_ast
from strawberry.extensions import SchemaExtension

from gql_usage import access_tokens, calendar
from gql_usage.graphql import ids
from gql_usage.graphql.directives import ADMIN_ONLY, PAID_PLAN, guarded
from gql_usage.graphql.errors import FORBIDDEN, BadUserInput, NotFound
from gql_usage.graphql.types import Info, Node, User
from gql_usage.storage import access_tokens as stored
from gql_usage.storage import models
from gql_usage.untrusted import echo, utc_problem

#: ``node(id:)`` of an ``AccessToken`` obeys the rules of the fields that list tokens.
NODE_RULES = (ADMIN_ONLY, PAID_PLAN)


def _at(us: int | None) -> datetime | None:
    return None if us is None else calendar.from_us(us)


@strawberry.type(description="A read-only access token for a partner's server (the secret "
                 "is shown once, by `createAccessToken`, and never stored). It reads as "
                 "its creator while the creator is an admin of a paid-plan account.")
class AccessToken(Node):
    id: strawberry.ID
    name: str
    prefix: str = strawberry.field(description="The token's first characters "
                                   "(`gqlu_` and 8 more), to recognise it.")
    created_at: datetime
    expires_at: datetime | None = strawberry.field(description="After this the token is "
                                                   "refused; null: it never expires.")
    last_used_at: datetime | None = strawberry.field(
        description="When the token was last used, to the minute (written at most once a "
        "minute); null if never.")
    revoked_at: datetime | None
    _created_by_id: strawberry.Private[int | None]

    @classmethod
    def from_model(cls, m: models.AccessToken) -> AccessToken:
        created_at = calendar.from_us(m.created_at_us)
        return cls(id=strawberry.ID(ids.encode("AccessToken", m.external_id)), name=m.name,
                   prefix=m.prefix, created_at=created_at, expires_at=_at(m.expires_at_us),
                   last_used_at=_at(m.last_used_at_us), revoked_at=_at(m.revoked_at_us),
                   _created_by_id=m.created_by_id)

    @strawberry.field(description="The admin who created the token (null once removed).")
    async def created_by(self, info: Info) -> User | None:
        if self._created_by_id is None:
            return None
        user = await info.context.loaders.users.load(self._created_by_id)
        return User.from_model(user) if user else None


@strawberry.type(description="A new access token: `token` is its secret, shown this once.")
class CreatedAccessToken:
    token: str = strawberry.field(description="The secret, to send as `Authorization: "
                                  "Bearer <token>`. Shown only here: store it now.")
    access_token: AccessToken


async def listed(account_id: int, include_revoked: bool) -> list[AccessToken]:
    """``Account.accessTokens``."""
    return [AccessToken.from_model(t) for t in await stored.listed(account_id,
                                                                   include_revoked)]


async def node(info: Info, external_id: str) -> AccessToken | None:
    """``node(id:)`` of an access token: the viewer's account's only."""
    found = await stored.find(info.context.viewer.account.id, external_id)
    return AccessToken.from_model(found) if found else None


def _name(name: str) -> str:
    problem = access_tokens.name_problem(name)
    if problem:
        raise BadUserInput("name", problem)
    return name.strip()


def _expires_at_us(info: Info, expires_at: datetime | None) -> int | None:
    if expires_at is None:
        return None
    if expires_at.tzinfo is None or expires_at.utcoffset() is None:  # the account's zone
        expires_at = expires_at.replace(
            tzinfo=calendar.zone(info.context.viewer.account.time_zone))
    problem = utc_problem(expires_at)
    if problem:
        raise BadUserInput("expiresAt", problem)
    us = calendar.to_us(expires_at)
    now_us = info.context.now_us()
    if us <= now_us:
        raise BadUserInput("expiresAt", f"must be in the future (it is "
                           f"{expires_at.isoformat()}, now is "
                           f"{calendar.from_us(now_us).isoformat()}); omit it for a token "
                           "that never expires")
    return us


def _external_id(value: str) -> str:
    try:
        kind, external = ids.decode(value)
    except ValueError as exc:
        raise BadUserInput("id", f"{exc}; {ids.hint(value, 'AccessToken')}") from None
    if kind != "AccessToken":
        raise BadUserInput("id", f"{echo(value)} is a {kind} id, not an AccessToken id")
    return external


@strawberry.type(description="Changes; each needs a user's token (access tokens are "
                 "read-only).")
class Mutation:
    @strawberry.mutation(
        description="Creates a read-only access token that reads as you; the secret is in "
        "the answer only. `name`: 1 to 100 characters; `expiresAt`: in the future, or "
        "null for a token that never expires.",
        extensions=[guarded(ADMIN_ONLY, PAID_PLAN)])
    async def create_access_token(
            self, info: Info, name: str,
            expires_at: Annotated[datetime | None, strawberry.argument(
                description="When the token stops working (a time without offset is in "
                "the account's time zone).")] = strawberry.UNSET,
    ) -> CreatedAccessToken | None:
        viewer = info.context.viewer
        clean = _name(name)
        expires = _expires_at_us(info, expires_at or None)
        new = access_tokens.generate(viewer.account.external_id)
        row = await stored.create(stored.NewRow(
            account_id=viewer.account.id, external_id=uuid.uuid4().hex, name=clean,
            prefix=new.prefix, secret_hash=new.digest, created_by_id=viewer.user.id,
            created_at_us=info.context.now_us(), expires_at_us=expires))
        return CreatedAccessToken(token=new.token, access_token=AccessToken.from_model(row))

    @strawberry.mutation(
        description="Revokes an access token of the account at once (revoking a revoked "
        "token changes nothing); `NOT_FOUND` for an id the account has no token with.",
        extensions=[guarded(ADMIN_ONLY, PAID_PLAN)])
    async def revoke_access_token(self, info: Info, id: strawberry.ID) -> AccessToken | None:
        external = _external_id(str(id))
        revoked = await stored.revoke(info.context.viewer.account.id, external,
                                      info.context.now_us())
        if revoked is None:
            raise NotFound(f"this account has no access token with id {echo(str(id))}; "
                           "list them with account { accessTokens { id } }")
        return AccessToken.from_model(revoked)


class ReadOnlyTokens(SchemaExtension):
    """Refuses a mutation made with an access token (``FORBIDDEN``), before any resolver
    runs: tokens are read-only, whatever mutations the schema has."""

    def on_execute(self) -> Iterator[None]:
        ctx = self.execution_context
        viewer = getattr(ctx.context, "viewer", None)
        document = ctx.graphql_document
        if (viewer is not None and viewer.read_only and document is not None
                and ctx.result is None):
            operation = get_operation_ast(document, ctx.operation_name)
            if operation is not None and operation.operation == OperationType.MUTATION:
                ctx.result = GraphQLExecutionResult(data=None, errors=[GraphQLError(
                    "Access tokens are read-only and cannot run mutations; send a user's "
                    "token (JWT) to change anything.", extensions={"code": FORBIDDEN})])
        yield

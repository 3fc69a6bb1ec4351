"""Authentication: user JWTs (HS256: ``sub`` user, ``acc`` account, ``exp``), partners'
access tokens (``gqlu_...``, SPEC 6.4) and the service token. Role and plan are never
taken from a token; the viewer is read from the database on every request, in one
statement. An access token reads as its creator, and only while it is neither revoked
nor expired, its creator exists and is an admin, and the account is on a paid plan."""

from __future__ import annotations

import hmac
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from tortoise.backends.base.client import BaseDBAsyncClient

from gql_usage import access_tokens
from gql_usage.calendar import HOUR_S, US, from_us
from gql_usage.graphql.errors import FORBIDDEN, PLAN_UPGRADE_REQUIRED, UNAUTHENTICATED
from gql_usage.storage import access_tokens as stored_tokens
from gql_usage.storage.db import Sql, Value, connection, dialect, fetch
from gql_usage.storage.models import Account, Plan, Role, User
from gql_usage.untrusted import id_problem

ALGORITHM = "HS256"


class AuthError(Exception):
    """Missing, malformed, forged or expired credentials (401 ``UNAUTHENTICATED``), or a
    valid access token whose creator may no longer read usage (403 ``FORBIDDEN`` or
    ``PLAN_UPGRADE_REQUIRED``); the message says which. An HTTP route answers
    ``status`` with ``code``."""

    def __init__(self, message: str, *, code: str = UNAUTHENTICATED,
                 status: int = 401) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass(frozen=True)
class Viewer:
    """Who a request reads as: a user of an account (role and plan as stored now)."""

    user: User
    account: Account
    #: The access token the request came with (``access_token.id``), or None for a
    #: user's JWT. With a token, ``user`` is the token's creator.
    access_token_id: int | None = None

    @property
    def read_only(self) -> bool:
        """Access tokens are read-only: no mutations."""
        return self.access_token_id is not None


def issue_token(secret: str, user_id: str, account_id: str, ttl_seconds: int = HOUR_S) -> str:
    now = int(time.time())
    claims = {"sub": user_id, "acc": account_id, "iat": now, "exp": now + ttl_seconds}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def bearer(header: str | None) -> str:
    if not header:
        raise AuthError("missing Authorization header; send 'Authorization: Bearer <token>'")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("Authorization header must be 'Bearer <token>'")
    return token.strip()


def decode_token(secret: str, token: str) -> tuple[str, str]:
    """(user external id, account external id) of a valid token."""
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM],
                            options={"require": ["exp", "sub", "acc"]})
    except jwt.ExpiredSignatureError:
        raise AuthError("token has expired") from None
    except jwt.MissingRequiredClaimError as exc:
        raise AuthError(f"token lacks the '{exc.claim}' claim") from None
    except jwt.InvalidTokenError:
        raise AuthError("token is invalid (bad signature or malformed)") from None
    sub, acc = claims.get("sub"), claims.get("acc")
    if not isinstance(sub, str) or not isinstance(acc, str):
        raise AuthError("token claims 'sub' and 'acc' must be strings")
    for name, value in (("sub", sub), ("acc", acc)):
        # Never an id: a lone surrogate ("\ud800" is valid JSON) cannot even be sent to
        # the database, NUL is stored nowhere, and ids are at most 128 characters.
        problem = id_problem(value)
        if problem:
            raise AuthError(f"token claim '{name}' is not a valid id: it {problem}")
    return sub, acc


async def load_viewer(secret: str, header: str | None, *,
                      clock: Callable[[], float] = time.time) -> Viewer:
    """The viewer of an ``Authorization: Bearer`` header holding a user's JWT (signed
    with ``secret``) or an access token; ``AuthError`` says why not. ``clock`` (Unix
    seconds) decides whether an access token has expired."""
    credential = bearer(header)
    if access_tokens.looks_like(credential):
        return await _token_viewer(credential, round(clock() * US))
    user_id, account_id = decode_token(secret, credential)
    # Always the primary, never a lagging replica: a demoted admin or a downgraded plan
    # must take effect on the next request.
    conn = connection()
    rows = await _routed(conn, account_id, lambda *known: viewer_sql(
        dialect(conn), user_id, account_id, *known))
    if not rows:
        raise AuthError("token names a user or account that does not exist")
    _account_ids.setdefault(conn, {})[account_id] = int(rows[0]["account_id"])
    user, account = _models(rows[0])
    return Viewer(user=user, account=account)


async def _routed(conn: BaseDBAsyncClient, account_id: str | None,
                  statement: Callable[..., Sql]) -> list[dict[str, Any]]:
    """Rows of ``statement()``, first asked as ``statement(internal id)`` when this
    client has seen the account (the account's shard alone on Citus); a stale entry
    finds nothing and the lookup by external id is made."""
    known = _account_ids.get(conn, {})
    if account_id in known:
        rows = await fetch(statement(known[account_id]), conn)
        if rows:
            return rows
    return await fetch(statement(), conn)


def _models(row: dict[str, Any]) -> tuple[User, Account]:
    account = Account._init_from_db(**{c: row[f"a_{c}"] for c in _ACCOUNT_COLUMNS})
    user = User._init_from_db(**{c: row[c] for c in _USER_COLUMNS})
    return user, account


async def _token_viewer(credential: str, now_us: int) -> Viewer:
    """The creator of a valid access token, read with the token in one statement (plus,
    at most once a minute per token, the write of its ``lastUsedAt``)."""
    problem = access_tokens.format_problem(credential)
    if problem:
        raise AuthError(f"access token is malformed: {problem}")
    digest = access_tokens.digest(credential)
    conn = connection()  # the primary: a revocation or a demotion counts at once
    account_id = access_tokens.account_of(credential)
    rows = await _routed(conn, account_id, lambda *known: token_sql(
        dialect(conn), digest, account_id, *known))
    if not rows or not access_tokens.matches(credential, rows[0]["t_secret_hash"]):
        raise AuthError("access token is not valid (no such token); check that it was "
                        "copied whole, or ask an admin of your account for a new one")
    row = rows[0]
    if account_id is not None:
        _account_ids.setdefault(conn, {})[account_id] = int(row["a_id"])
    name = f"access token {row['t_prefix']}…"
    if row["t_revoked_at_us"] is not None:
        raise AuthError(f"{name} was revoked at {_when(row['t_revoked_at_us'])}; ask an "
                        "admin of your account for a new one")
    expires = row["t_expires_at_us"]
    if expires is not None and expires <= now_us:
        raise AuthError(f"{name} expired at {_when(expires)}; ask an admin of your "
                        "account for a new one")
    if row["id"] is None:
        raise AuthError(f"the user who created {name} no longer exists, so the token no "
                        "longer works; ask an admin of your account for a new one")
    user, account = _models(row)
    if user.role != Role.ADMIN:
        raise AuthError(f"{name} reads as the user who created it, who is no longer an "
                        "admin of the account; ask an admin for a new token",
                        code=FORBIDDEN, status=403)
    if account.plan == Plan.FREE:
        raise AuthError(f"{name} works only while the account is on a paid plan (PRO, "
                        "PREMIUM or SCALE); this account is on FREE",
                        code=PLAN_UPGRADE_REQUIRED, status=403)
    every_us = access_tokens.LAST_USED_EVERY_S * US
    last_used = row["t_last_used_at_us"]
    if last_used is None or last_used <= now_us - every_us:
        await stored_tokens.touch(account.id, row["t_id"], now_us, every_us)
    return Viewer(user=user, account=account, access_token_id=row["t_id"])


def _when(us: int) -> str:
    return from_us(us).isoformat().replace("+00:00", "Z")


# One hand-written statement (this runs on every request; building the same query with
# the ORM cost more than the query itself), turned into models the way the ORM does.
_USER_COLUMNS = ("id", "account_id", "external_id", "name", "email", "role")
_ACCOUNT_COLUMNS = ("id", "external_id", "name", "plan", "time_zone", "credits_granted",
                    "period_start", "period_end", "updated_at")
_VIEWER_SQL = (
    "SELECT " + ", ".join(f"u.{c}" for c in _USER_COLUMNS) + ", "
    + ", ".join(f"a.{c} AS a_{c}" for c in _ACCOUNT_COLUMNS)
    + " FROM app_user u JOIN account a ON a.id = u.account_id WHERE "
)
# An access token by the hash of its secret, with its creator (NULL columns when the
# creator no longer exists) and its account: the token's state says whether it may be
# used, the creator's role and the account's plan whether it may read usage.
_TOKEN_SQL = (
    "SELECT t.id AS t_id, t.prefix AS t_prefix, t.secret_hash AS t_secret_hash, "
    "t.expires_at_us AS t_expires_at_us, t.revoked_at_us AS t_revoked_at_us, "
    "t.last_used_at_us AS t_last_used_at_us, "
    + ", ".join(f"u.{c}" for c in _USER_COLUMNS) + ", "
    + ", ".join(f"a.{c} AS a_{c}" for c in _ACCOUNT_COLUMNS)
    + " FROM access_token t JOIN account a ON a.id = t.account_id"
    " LEFT JOIN app_user u ON u.id = t.created_by_id AND u.account_id = t.account_id"
    " WHERE t.secret_hash = "
)


#: Internal id by external id of the accounts viewers were read for, per database
#: client (an account's id never changes; a stale entry only finds no row, and the
#: lookup is made again without it).
_account_ids: weakref.WeakKeyDictionary[BaseDBAsyncClient, dict[str, int]] = (
    weakref.WeakKeyDictionary())


def viewer_sql(d: str, user_id: str, account_id: str, internal_id: int | None = None) -> Sql:
    """The viewer's user and account by their external ids; with the account's
    ``internal_id`` (known from an earlier request) also by the distribution column, so
    that on Citus it reads one shard instead of every shard of ``app_user``."""
    q = Sql(d).add(_VIEWER_SQL, "u.external_id = ", Value(user_id),
                   " AND a.external_id = ", Value(account_id))
    if internal_id is not None:
        q.add(" AND u.account_id = ", internal_id)
    return q


def token_sql(d: str, digest: str, account_id: str | None,
              internal_id: int | None = None) -> Sql:
    """An access token by the hash of its secret and the external id of the account it
    names (None for a token of the first format, which names none); with the account's
    ``internal_id`` (known from an earlier request) also by the distribution column, so
    that on Citus it reads one shard instead of every shard of ``access_token``."""
    q = Sql(d).add(_TOKEN_SQL, Value(digest))
    if account_id is not None:
        q.add(" AND a.external_id = ", Value(account_id))
    if internal_id is not None:
        q.add(" AND t.account_id = ", internal_id)
    return q


def service_token_ok(expected: str, header: str | None) -> bool:
    try:
        given = bearer(header)
    except AuthError:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())

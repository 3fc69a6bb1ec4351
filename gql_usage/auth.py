"""Authentication: user JWTs (HS256: ``sub`` user, ``acc`` account, ``exp``) and the
service token. Role and plan are never taken from a token; the viewer is read from the
database on every request."""

from __future__ import annotations

import hmac
import time
import weakref
from dataclasses import dataclass

import jwt
from tortoise.backends.base.client import BaseDBAsyncClient

from gql_usage.calendar import HOUR_S
from gql_usage.storage.db import Sql, Value, connection, dialect, fetch
from gql_usage.storage.models import Account, User
from gql_usage.untrusted import id_problem

ALGORITHM = "HS256"


class AuthError(Exception):
    """Missing, malformed, forged or expired credentials; the message says which."""


@dataclass(frozen=True)
class Viewer:
    user: User
    account: Account


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


async def load_viewer(secret: str, header: str | None) -> Viewer:
    user_id, account_id = decode_token(secret, bearer(header))
    # Always the primary, never a lagging replica: a demoted admin or a downgraded plan
    # must take effect on the next request.
    conn = connection()
    known = _account_ids.setdefault(conn, {})
    rows = []
    if account_id in known:  # the account's shard alone on Citus
        rows = await fetch(viewer_sql(dialect(conn), user_id, account_id, known[account_id]),
                           conn)
    if not rows:
        rows = await fetch(viewer_sql(dialect(conn), user_id, account_id), conn)
    if not rows:
        raise AuthError("token names a user or account that does not exist")
    row = rows[0]
    known[account_id] = int(row["account_id"])
    account = Account._init_from_db(**{c: row[f"a_{c}"] for c in _ACCOUNT_COLUMNS})
    user = User._init_from_db(**{c: row[c] for c in _USER_COLUMNS})
    return Viewer(user=user, account=account)


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


def service_token_ok(expected: str, header: str | None) -> bool:
    try:
        given = bearer(header)
    except AuthError:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())

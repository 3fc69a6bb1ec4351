"""Authentication: user JWTs (HS256: ``sub`` user, ``acc`` account, ``exp``) and the
service token. Role and plan are never taken from a token; the viewer is read from the
database on every request."""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass

import jwt

from gql_usage.db import connection
from gql_usage.models import Account, User

ALGORITHM = "HS256"


class AuthError(Exception):
    """Missing, malformed, forged or expired credentials; the message says which."""


@dataclass(frozen=True)
class Viewer:
    user: User
    account: Account


def issue_token(secret: str, user_id: str, account_id: str, ttl_seconds: int = 3600) -> str:
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
    return sub, acc


async def load_viewer(secret: str, header: str | None) -> Viewer:
    user_id, account_id = decode_token(secret, bearer(header))
    # Always the primary, never a lagging replica: a demoted admin or a downgraded plan
    # must take effect on the next request.
    user = await User.filter(external_id=user_id, account__external_id=account_id) \
        .select_related("account").using_db(connection()).first()
    if user is None:
        raise AuthError("token names a user or account that does not exist")
    return Viewer(user=user, account=user.account)


def service_token_ok(expected: str, header: str | None) -> bool:
    try:
        given = bearer(header)
    except AuthError:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())

"""The ``access_token`` table (migration 0006): create, list, find, revoke, and the
occasional ``lastUsedAt`` write. Every statement names the account (a Citus shard key)
and runs on the primary: an admin must see a token they just made or revoked, and access
is never decided from a lagging replica. Authentication's lookup by hash is in
``gql_usage.auth`` (one statement with the viewer's user and account)."""

from __future__ import annotations

from dataclasses import dataclass

from gql_usage.storage.db import Sql, Value, connection, dialect, fetch
from gql_usage.storage.models import AccessToken

_COLUMNS = ("id, account_id, external_id, name, prefix, secret_hash, created_by_id, "
            "created_at_us, expires_at_us, last_used_at_us, revoked_at_us")


@dataclass(frozen=True)
class NewRow:
    """What ``create`` stores."""

    account_id: int
    external_id: str
    name: str
    prefix: str
    secret_hash: str
    created_by_id: int
    created_at_us: int
    expires_at_us: int | None


async def create(row: NewRow) -> AccessToken:
    conn = connection()
    q = Sql(dialect(conn)).add(
        "INSERT INTO access_token (account_id, external_id, name, prefix, secret_hash, "
        "created_by_id, created_at_us, expires_at_us) VALUES (",
        row.account_id, ", ", Value(row.external_id), ", ", Value(row.name), ", ",
        Value(row.prefix), ", ", Value(row.secret_hash), ", ", row.created_by_id, ", ",
        row.created_at_us, ", ", row.expires_at_us, f") RETURNING {_COLUMNS}")
    rows = await fetch(q, conn)
    return AccessToken._init_from_db(**rows[0])


async def listed(account_id: int, include_revoked: bool) -> list[AccessToken]:
    """The account's tokens, newest first; revoked ones only with ``include_revoked``."""
    conn = connection()
    q = Sql(dialect(conn)).add(f"SELECT {_COLUMNS} FROM access_token WHERE account_id = ",
                               account_id)
    if not include_revoked:
        q.add(" AND revoked_at_us IS NULL")
    q.add(" ORDER BY created_at_us DESC, id DESC")
    return [AccessToken._init_from_db(**r) for r in await fetch(q, conn)]


async def find(account_id: int, external_id: str) -> AccessToken | None:
    """The account's token with this id; None for an unknown id or another account's."""
    conn = connection()
    q = Sql(dialect(conn)).add(f"SELECT {_COLUMNS} FROM access_token WHERE account_id = ",
                               account_id, " AND external_id = ", Value(external_id))
    rows = await fetch(q, conn)
    return AccessToken._init_from_db(**rows[0]) if rows else None


async def revoke(account_id: int, external_id: str, now_us: int) -> AccessToken | None:
    """Revokes the account's token (one statement); a token revoked before keeps its
    first ``revoked_at_us``. None for an unknown id or another account's."""
    conn = connection()
    q = Sql(dialect(conn)).add(
        "UPDATE access_token SET revoked_at_us = COALESCE(revoked_at_us, ", now_us,
        ") WHERE account_id = ", account_id, " AND external_id = ", Value(external_id),
        f" RETURNING {_COLUMNS}")
    rows = await fetch(q, conn)
    return AccessToken._init_from_db(**rows[0]) if rows else None


async def touch(account_id: int, token_id: int, now_us: int, every_us: int) -> None:
    """Sets ``last_used_at_us`` to ``now_us`` unless it was set less than ``every_us``
    ago (concurrent requests of one token write it once)."""
    conn = connection()
    q = Sql(dialect(conn)).add(
        "UPDATE access_token SET last_used_at_us = ", now_us, " WHERE account_id = ",
        account_id, " AND id = ", token_id, " AND (last_used_at_us IS NULL OR "
        "last_used_at_us <= ", now_us - every_us, ")")
    await conn.execute_query(q.text, q.params)

"""The account's lists: its API keys, its endpoint and source catalogues, and how long
every list the query cost prices can be (``ListSizes``).

The query cost (``gql_usage.graphql.limits.cost``) prices a list by its real length: before an
operation with such a list runs, ``list_sizes`` counts the account's rows in one
statement. Each count is an upper bound of what the list can return: a breakdown only
holds ids the account has used (``account_endpoint``, ``account_source``) or owns (API
keys, users).
"""

from __future__ import annotations

from dataclasses import dataclass

from gql_usage.storage.db import Sql, dialect, fetch_models, fetch_rows, read_connection
from gql_usage.storage.models import ApiKey, Endpoint, Source

_ENDPOINTS = ("FROM endpoint WHERE listed OR id IN "
              "(SELECT endpoint_id FROM account_endpoint WHERE account_id = {a})")
_SOURCES = ("FROM source WHERE listed OR id IN "
            "(SELECT source_id FROM account_source WHERE account_id = {a})")


@dataclass(frozen=True)
class ListSizes:
    """Rows each list of one account can return."""

    endpoints: int  # Account.endpoints: the listed catalogue plus the account's own paths
    sources: int  # Account.sources
    api_keys: int  # Account.apiKeys (not revoked)
    api_keys_all: int  # Account.apiKeys(includeRevoked: true); breakdown(by: API_KEY)
    used_endpoints: int  # breakdown(by: ENDPOINT)
    used_sources: int  # breakdown(by: SOURCE)
    users: int  # breakdown(by: USER)


async def list_sizes(account_id: int) -> ListSizes:
    """Every size of ``ListSizes`` for one account, in one statement (index counts)."""
    a = int(account_id)
    counts = [
        f"SELECT COUNT(*) {_ENDPOINTS.format(a=a)}",
        f"SELECT COUNT(*) {_SOURCES.format(a=a)}",
        f"SELECT COUNT(*) FROM api_key WHERE account_id = {a} AND revoked_at IS NULL",
        f"SELECT COUNT(*) FROM api_key WHERE account_id = {a}",
        f"SELECT COUNT(*) FROM account_endpoint WHERE account_id = {a}",
        f"SELECT COUNT(*) FROM account_source WHERE account_id = {a}",
        f"SELECT COUNT(*) FROM app_user WHERE account_id = {a}",
    ]
    conn = read_connection()
    q = Sql(dialect(conn)).add("SELECT " + ", ".join(f"({c})" for c in counts))
    row = (await fetch_rows(q, conn))[0]
    return ListSizes(*(int(v) for v in row))


async def endpoints(account_id: int) -> list[Endpoint]:
    """The listed endpoints and every path the account used, by path (one statement,
    the account's ids never leave the database)."""
    sql = "SELECT * " + _ENDPOINTS.format(a=int(account_id)) + " ORDER BY path"
    return await fetch_models(Endpoint, Sql(dialect(read_connection())).add(sql))


async def sources(account_id: int) -> list[Source]:
    """The listed sources and every source the account used, by key."""
    sql = "SELECT * " + _SOURCES.format(a=int(account_id)) + ' ORDER BY "key"'
    return await fetch_models(Source, Sql(dialect(read_connection())).add(sql))


async def api_keys(account_id: int, include_revoked: bool = False) -> list[ApiKey]:
    """The account's API keys (without the revoked ones unless asked), by name then id."""
    q = Sql(dialect(read_connection())).add(
        "SELECT * FROM api_key WHERE account_id = ", account_id)
    if not include_revoked:
        q.add(" AND revoked_at IS NULL")
    return await fetch_models(ApiKey, q.add(" ORDER BY name, id"))

"""Internal ids of accounts, API keys and users, by the vendor's external ids."""

from __future__ import annotations

from gql_usage.storage.db import Sql, fetch_rows


class Directory:
    """Internal ids of accounts, API keys and users by external id.

    Only found ids are cached (they never change); an unknown id is looked up again next
    time, so a key or user created after a rejected event is found on the retry.
    """

    def __init__(self) -> None:
        self._accounts: dict[str, int] = {}
        self._members: dict[str, dict[tuple[int, str], int]] = {"api_key": {}, "app_user": {}}

    async def accounts(self, d: str, external_ids: set[str]) -> dict[str, int]:
        """Ids by external id (the cache: look up each wanted one with ``get``)."""
        cache = self._accounts
        missing = sorted(x for x in external_ids if x not in cache)
        if missing:
            q = Sql(d).add('SELECT external_id, id FROM "account" WHERE ')
            q.in_list("external_id", missing)
            cache.update({str(ext): int(i) for ext, i in await fetch_rows(q)})
        return cache

    async def members(self, d: str, table: str,
                      wanted: set[tuple[int, str]]) -> dict[tuple[int, str], int]:
        """Ids of ``table`` (``api_key`` or ``app_user``) by (account id, external id)."""
        cache = self._members[table]
        missing = [w for w in wanted if w not in cache]
        if missing:
            q = Sql(d).add(f'SELECT account_id, external_id, id FROM "{table}" WHERE ')
            q.in_list("account_id", sorted({a for a, _ in missing})).add(" AND ")
            q.in_list("external_id", sorted({x for _, x in missing}))
            cache.update({(int(a), str(x)): int(i) for a, x, i in await fetch_rows(q)})
        return cache

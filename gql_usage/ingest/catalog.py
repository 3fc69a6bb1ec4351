"""Endpoint and source ids, created on first sight, and the accounts that use them."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence

from gql_usage.ingest.rows import Row
from gql_usage.storage.db import Sql, Value, connection, dialect, fetch_rows


def source_display_name(key: str) -> str:
    """The name a new source is listed under: ``zapier_v2`` -> ``Zapier v2``."""
    return key.replace("_", " ").replace("-", " ").strip().capitalize() or key


class Catalog:
    """Endpoint and source ids by path/key. Ids never change, so they are cached."""

    def __init__(self) -> None:
        self.endpoints: dict[str, int] = {}
        self.sources: dict[str, int] = {}
        self.account_endpoints: set[tuple[int, int]] = set()
        self.account_sources: set[tuple[int, int]] = set()

    async def endpoint_ids(self, paths: Iterable[str]) -> dict[str, int]:
        return await self._ids("endpoint", "path", None, self.endpoints, paths)

    async def source_ids(self, keys: Iterable[str]) -> dict[str, int]:
        return await self._ids("source", "key", source_display_name, self.sources, keys)

    async def link(self, rows: Collection[Row]) -> None:
        """Record which endpoints and sources each account has used (new pairs only).

        Written before the events (idempotently): a link never points at nothing for
        long, and an event is never stored without its link.
        """
        for table, column, seen, pairs in (
            ("account_endpoint", "endpoint_id", self.account_endpoints,
             {(r.account_id, r.endpoint_id) for r in rows}),
            ("account_source", "source_id", self.account_sources,
             {(r.account_id, r.source_id) for r in rows}),
        ):
            new = sorted(pairs - seen)
            if not new:
                continue
            conn = connection()
            q = Sql(dialect(conn)).add(f"INSERT INTO {table} (account_id, {column}) VALUES ")
            for i, (account_id, value) in enumerate(new):
                q.add(", (" if i else "(", account_id, ", ", value, ")")
            q.add(f" ON CONFLICT (account_id, {column}) DO NOTHING")
            await conn.execute_query(q.text, q.params)
            seen.update(new)

    async def _ids(self, table: str, column: str, name_of: Callable[[str], str] | None,
                   cache: dict[str, int], values: Iterable[str]) -> dict[str, int]:
        missing = sorted({v for v in values if v not in cache})
        if missing:
            conn = connection()
            d = dialect(conn)
            found = await self._select(d, table, column, missing)
            absent = [v for v in missing if v not in found]
            if absent:
                q = Sql(d)
                cols = f'"{column}", "listed", "name"' if name_of else f'"{column}", "listed"'
                q.add(f'INSERT INTO "{table}" ({cols}) VALUES ')
                for i, v in enumerate(absent):
                    q.add(", " if i else "", "(", Value(v), ", ", False)
                    if name_of:
                        q.add(", ", Value(name_of(v)))
                    q.add(")")
                q.add(f' ON CONFLICT ("{column}") DO NOTHING')
                await conn.execute_query(q.text, q.params)
                found.update(await self._select(d, table, column, absent))
            cache.update(found)
        return cache

    @staticmethod
    async def _select(d: str, table: str, column: str, values: Sequence[str]) -> dict[str, int]:
        q = Sql(d).add(f'SELECT "{column}", id FROM "{table}" WHERE ')
        q.in_list(f'"{column}"', list(values))
        return {str(v): int(i) for v, i in await fetch_rows(q)}

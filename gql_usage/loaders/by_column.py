"""Per-request aiodataloader loaders: every per-item lookup and aggregate is batched.

Loaders are created for each request (``Loaders(account_id)`` inside the running loop)
and cache for that request only. All of them are scoped to the viewer's account: an id
of another account's key or user simply resolves to nothing.

With a read replica configured, every loader reads it: the model lookups run inside the
GraphQL endpoint's ``gql_usage.db.replica_reads()`` (routed by ``ReplicaRouter``), and the
aggregates' SQL uses ``gql_usage.db.read_connection()``.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from aiodataloader import DataLoader as _DataLoader

from gql_usage.analytics import query as analytics
from gql_usage.analytics.query import Spec, UsageQuery
from gql_usage.db import M, Sql, dialect, fetch_models, read_connection
from gql_usage.models import ApiKey, Endpoint, Source, User

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")


class DataLoader(_DataLoader[K, V]):
    """A loader whose answer outlives a cancelled caller.

    A key's future is shared by every field that loads it (the breakdown and each
    endpoint's ``usage`` read one answer). When a field fails on bad input and its
    non-null parent is nulled, graphql-core cancels the parent's other pending fields;
    cancelling a task cancels the future it awaits, so the shared future was cancelled
    and the ``CancelledError`` reached the fields that were still wanted: the request
    failed as a whole (no answer, a 500). Each caller now awaits its own shield."""

    def load(self, key: K) -> asyncio.Future[V]:
        return asyncio.shield(super().load(key))


def _in_order(keys: Sequence[Any], found: dict[Any, T]) -> list[T | None]:
    return [found.get(k) for k in keys]


class Loaders:
    def __init__(self, account_id: int) -> None:
        self.account_id = account_id
        self.aggregates: DataLoader[tuple[UsageQuery, Spec], object] = DataLoader(
            self._aggregates)
        self.api_keys: DataLoader[int, ApiKey | None] = DataLoader(self._api_keys)
        self.api_keys_by_external: DataLoader[str, ApiKey | None] = DataLoader(
            self._api_keys_by_external)
        self.users: DataLoader[int, User | None] = DataLoader(self._users)
        self.users_by_external: DataLoader[str, User | None] = DataLoader(
            self._users_by_external)
        self.endpoints: DataLoader[int, Endpoint | None] = DataLoader(self._endpoints)
        self.endpoints_by_path: DataLoader[str, Endpoint | None] = DataLoader(
            self._endpoints_by_path)
        self.sources: DataLoader[int, Source | None] = DataLoader(self._sources)
        self.sources_by_key: DataLoader[str, Source | None] = DataLoader(self._sources_by_key)

    async def _aggregates(self, keys: Sequence[tuple[UsageQuery, Spec]]) -> list[object]:
        """One SQL statement per distinct query, answering all of its specs."""
        by_query: dict[UsageQuery, list[Spec]] = defaultdict(list)
        for query, spec in keys:
            if spec not in by_query[query]:
                by_query[query].append(spec)
        answers: dict[tuple[UsageQuery, Spec], object] = {}
        for query, specs in by_query.items():
            results = await analytics.aggregate(query, specs)
            answers.update({(query, spec): r for spec, r in zip(specs, results, strict=True)})
        return [answers[k] for k in keys]

    def prime_api_keys(self, keys: Iterable[ApiKey]) -> None:
        for key in keys:
            self.api_keys.prime(key.id, key)

    async def _api_keys(self, ids: Sequence[int]) -> list[ApiKey | None]:
        rows = await self._members(ApiKey, "api_key", "id", ids)
        return _in_order(ids, {r.id: r for r in rows})

    async def _api_keys_by_external(self, ids: Sequence[str]) -> list[ApiKey | None]:
        rows = await self._members(ApiKey, "api_key", "external_id", ids)
        return _in_order(ids, {r.external_id: r for r in rows})

    async def _users(self, ids: Sequence[int]) -> list[User | None]:
        rows = await self._members(User, "app_user", "id", ids)
        return _in_order(ids, {r.id: r for r in rows})

    async def _users_by_external(self, ids: Sequence[str]) -> list[User | None]:
        rows = await self._members(User, "app_user", "external_id", ids)
        return _in_order(ids, {r.external_id: r for r in rows})

    async def _endpoints(self, ids: Sequence[int]) -> list[Endpoint | None]:
        rows = await _catalogue(Endpoint, "endpoint", "id", ids)
        return _in_order(ids, {r.id: r for r in rows})

    async def _endpoints_by_path(self, paths: Sequence[str]) -> list[Endpoint | None]:
        rows = await _catalogue(Endpoint, "endpoint", "path", paths)
        return _in_order(paths, {r.path: r for r in rows})

    async def _sources(self, ids: Sequence[int]) -> list[Source | None]:
        rows = await _catalogue(Source, "source", "id", ids)
        return _in_order(ids, {r.id: r for r in rows})

    async def _sources_by_key(self, keys: Sequence[str]) -> list[Source | None]:
        rows = await _catalogue(Source, "source", "key", keys)
        return _in_order(keys, {r.key: r for r in rows})

    async def _members(self, model: type[M], table: str, column: str,
                       values: Sequence[Any]) -> list[M]:
        """Rows of this account's ``table`` (keys, users) whose ``column`` is in
        ``values``; another account's ids find nothing."""
        q = Sql(dialect(read_connection())).add(
            f'SELECT * FROM "{table}" WHERE account_id = ', self.account_id, " AND ")
        q.in_list(column, sorted(set(values)))
        return await fetch_models(model, q)


async def _catalogue(model: type[M], table: str, column: str, values: Sequence[Any]) -> list[M]:
    q = Sql(dialect(read_connection())).add(f'SELECT * FROM "{table}" WHERE ')
    q.in_list(f'"{column}"', sorted(set(values)))
    return await fetch_models(model, q)

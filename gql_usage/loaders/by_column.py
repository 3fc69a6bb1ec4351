"""One loader for every lookup of rows by a column (ids, external ids, paths, keys)."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from typing import TypeVar

from gql_usage.loaders.base import DataLoader
from gql_usage.storage.db import M, Sql, dialect, fetch_models, read_connection

K = TypeVar("K", bound=Hashable)


class ByColumnLoader(DataLoader[K, M | None]):
    """Rows of ``model`` whose ``column`` is one of the keys, one statement per batch,
    answered in key order (None where no row has the key).

    ``account_id`` scopes the lookup to one account (tables with an ``account_id``: API
    keys, users), so another account's id or external id finds nothing; ``None`` reads a
    catalogue shared by all accounts (endpoints, sources)."""

    def __init__(self, model: type[M], column: str, account_id: int | None) -> None:
        super().__init__(self._load)
        self.model = model
        self.column = column
        self.account_id = account_id
        self._table = model._meta.db_table
        self._sql_column = model._meta.fields_db_projection[column]

    async def _load(self, keys: list[K]) -> list[M | None]:
        q = Sql(dialect(read_connection())).add(f'SELECT * FROM "{self._table}" WHERE ')
        if self.account_id is not None:
            q.add("account_id = ", self.account_id, " AND ")
        q.in_list(f'"{self._sql_column}"', sorted(set(keys)))  # type: ignore[type-var]
        return in_key_order(keys, await fetch_models(self.model, q), self.column)

    def prime_many(self, rows: Iterable[M]) -> None:
        """Answer these rows' keys without a statement (rows read by another query)."""
        for row in rows:
            self.prime(getattr(row, self.column), row)


def in_key_order(keys: Sequence[K], rows: Iterable[M], column: str) -> list[M | None]:
    """For each key (repeats included), the row whose ``column`` equals it, or None."""
    found = {getattr(row, column): row for row in rows}
    return [found.get(key) for key in keys]

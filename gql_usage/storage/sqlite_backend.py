"""Tortoise's SQLite backend plus the SQL functions gql_usage's statements use.

A breakdown with ``limit`` is ordered and cut in SQL by global id (base64), which SQLite
cannot compute: ``gql_global_id(type, external_id)`` is ``ids.encode`` itself, registered
on every connection, so both orders agree. Selected by ``db.connection_config``.
See README, 'Limits' (Large accounts).
"""

from __future__ import annotations

from tortoise.backends.sqlite.client import SqliteClient

from gql_usage.graphql import ids


def global_id(type_name: str | None, external_id: str | None) -> str | None:
    if type_name is None or external_id is None:
        return None
    return ids.encode(type_name, external_id)


class Client(SqliteClient):
    async def create_connection(self, with_db: bool) -> None:
        fresh = self._connection is None
        await super().create_connection(with_db)
        if fresh and self._connection is not None:
            await self._connection.create_function("gql_global_id", 2, global_id,
                                                   deterministic=True)


client_class = Client

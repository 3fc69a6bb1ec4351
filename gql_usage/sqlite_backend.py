"""Tortoise's SQLite backend plus the SQL functions gql_usage's statements use.

PostgreSQL computes everything the analytics SQL needs with built-in functions; SQLite
lacks one: base64. A breakdown's rows are ordered by their API key, which for API keys
and users is the global id (``gql_usage.graphql.ids.encode``, base64 of
``"<Type>:<external id>"``), and a breakdown with ``limit`` is cut in SQL, so SQLite must
order by that same text. ``gql_global_id(type, external_id)`` is registered on every
connection; it is ``ids.encode`` itself, so both orders agree by construction.

Selected by ``gql_usage.db.connection_config`` (Tortoise loads a backend by its module's
``client_class``).
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

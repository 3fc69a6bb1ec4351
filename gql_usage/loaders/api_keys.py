"""API keys by id within the account, answered from the request's key list when it
asks for one."""

from __future__ import annotations

import asyncio

from gql_usage.loaders.by_column import ByColumnLoader, in_key_order
from gql_usage.storage import catalogue
from gql_usage.storage.models import ApiKey


class ApiKeysLoader(ByColumnLoader[int, ApiKey]):
    """Keys of one account by id. A request that lists the account's keys
    (``Account.apiKeys``) reads them all once, revoked ones included, with
    :meth:`listing`; every batch of ids is then answered from that list instead of a
    statement of its own, whichever of the two comes back first. Without this, a
    breakdown by API key looked its keys up again whenever its aggregates came back
    before the list did: one statement more, by timing luck."""

    def __init__(self, account_id: int) -> None:
        super().__init__(ApiKey, "id", account_id)
        self._account_id = account_id
        self._listing: asyncio.Future[list[ApiKey]] | None = None

    def listing(self) -> asyncio.Future[list[ApiKey]]:
        """Every key of the account, revoked ones included (by name, then id): one
        statement per request, shared by every caller."""
        if self._listing is None:
            self._listing = asyncio.ensure_future(
                catalogue.api_keys(self._account_id, include_revoked=True))
        # A cancelled caller must not cancel what the others await (``loaders.base``).
        return asyncio.shield(self._listing)

    async def _load(self, keys: list[int]) -> list[ApiKey | None]:
        if self._listing is None:
            return await super()._load(keys)
        return in_key_order(keys, await self.listing(), "id")

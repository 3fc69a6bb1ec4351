"""The loader every per-request lookup uses: aiodataloader's, shielded per caller."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TypeVar

from aiodataloader import DataLoader as _DataLoader

K = TypeVar("K")
V = TypeVar("V")


class DataLoader(_DataLoader[K, V]):
    """A loader whose answer outlives a cancelled caller.

    A key's future is shared by every field that loads it; when graphql-core cancels a
    nulled parent's pending fields, cancelling one caller must not cancel the answer the
    others still await (that failed the whole request with a 500). Each caller awaits its
    own shield."""

    def load(self, key: K) -> asyncio.Future[V]:
        return asyncio.shield(super().load(key))

    def load_many(self, keys: Iterable[K]) -> asyncio.Future[list[V]]:
        """One shield for the whole batch (a breakdown loads every row's object at once:
        a shield per key cost more than the lookups)."""
        return asyncio.shield(asyncio.gather(*[super(DataLoader, self).load(key)
                                               for key in keys]))

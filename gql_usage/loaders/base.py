"""The loader every per-request lookup uses: aiodataloader's, shielded per caller."""

from __future__ import annotations

import asyncio
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

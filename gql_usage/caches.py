"""Caches bounded by bytes, keyed by digests of what users send.

Dashboards repeat the same few documents, so parsing, validation, cost and the analytics
statement are cached; caches keyed on client texts (up to 256 KiB each) once pinned
gigabytes. ``CACHES`` lists every cache with its budget and current bytes (tests and
operators read it). Per process, touched only from the event loop's thread.
See README, 'Limits' (Caches).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable
from typing import Any, Generic, ParamSpec, TypeVar

from cachetools import LRUCache

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
P = ParamSpec("P")
R = TypeVar("R")

KIB = 1024
MIB = 1024 * KIB
#: Bytes a cache entry costs besides its value: the key tuple, digests, the LRU links.
ENTRY_BYTES = 512


def digest(text: str | bytes) -> bytes:
    """A 32-byte BLAKE2b digest of ``text`` (UTF-8; lone surrogates kept as they are)."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    return hashlib.blake2b(data, digest_size=32).digest()


_last: tuple[str | None, bytes] = (None, b"")


def text_digest(text: str) -> bytes:
    """``digest(text)``, computed once for the same string object in a row: one request's
    text is looked up by the parse, validation and cost caches in turn."""
    global _last
    if _last[0] is not text:
        _last = (text, digest(text))
    return _last[1]


class ByteLRU(Generic[K, V]):
    """A least-recently-used cache of at most ``budget`` bytes, as ``weigh`` counts them."""

    def __init__(self, name: str, budget: int, weigh: Callable[[V], int]) -> None:
        self.name = name
        self.budget = budget
        self._weigh = weigh
        self._cache: LRUCache[K, tuple[V, int]] = LRUCache(
            maxsize=budget, getsizeof=lambda entry: entry[1])
        self.hits = 0
        self.misses = 0
        CACHES.append(self)

    def get(self, key: K) -> V | None:
        entry = self._cache.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        return entry[0]

    def put(self, key: K, value: V, weight: int | None = None) -> None:
        """Cache ``value``, weighing ``weight`` bytes (default: ``weigh(value)``)."""
        weight = ENTRY_BYTES + (self._weigh(value) if weight is None else weight)
        if weight > self.budget:  # would evict everything else: not cached
            return
        self._cache[key] = (value, weight)

    @property
    def bytes(self) -> int:
        """Bytes of the entries held now (at most ``budget``)."""
        return int(self._cache.currsize)

    def __len__(self) -> int:
        return len(self._cache)

    def clear(self) -> None:
        self._cache.clear()


#: Every cache of the process.
CACHES: list[ByteLRU[Any, Any]] = []


def cached_bytes() -> int:
    """Bytes held by every cache of the process."""
    return sum(c.bytes for c in CACHES)


def byte_lru_cache(name: str, budget: int,
                   weigh: Callable[[R], int]) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """``functools.lru_cache`` for functions of small hashable arguments (never a user's
    text), bounded by the bytes of the results instead of their count. Exceptions are not
    cached."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        cache: ByteLRU[Hashable, R] = ByteLRU(name, budget, weigh)

        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            key = (args, tuple(sorted(kwargs.items())))
            found = cache.get(key)
            if found is None:
                found = fn(*args, **kwargs)
                cache.put(key, found)
            return found

        wrapper.__doc__ = fn.__doc__
        wrapper.__name__ = fn.__name__
        wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
        wrapper.cache = cache  # type: ignore[attr-defined]
        return wrapper

    return decorate

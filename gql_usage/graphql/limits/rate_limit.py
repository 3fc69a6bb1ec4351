"""Per-viewer budgets of query-cost points in fixed one-minute windows, in memory or in
Redis. See README, 'Limits' ("Rate limit")."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis.asyncio
from limits import RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import FixedWindowRateLimiter
from limits.errors import StorageError
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

#: What an operation refused before execution (too costly, a wrong argument) is charged:
#: refusing is cheap, but not free, so a client cannot repeat refusals without limit.
REFUSAL_POINTS = 100
#: Length of a rate-limit window, in seconds.
WINDOW_SECONDS = 60

Clock = Callable[[], float]
_T = TypeVar("_T")


#: Seconds the limiter waits for the shared store (to connect, or to answer a command)
#: before it counts the store as down.
STORE_TIMEOUT_SECONDS = 0.5
#: After the shared store failed, seconds the limiter counts in process memory before it
#: tries the store again (so an outage costs one timeout per interval, not per request).
STORE_RETRY_SECONDS = 5.0

log = logging.getLogger("gql_usage.rate_limit")


@dataclass(frozen=True)
class Budget:
    """A viewer's budget in the current window."""

    limit: int
    used: int
    reset_at: float  # Unix time the window ends

    @property
    def remaining(self) -> int:
        return max(self.limit - self.used, 0)

    def reset_datetime(self) -> datetime:
        return datetime.fromtimestamp(self.reset_at, UTC)


@dataclass(frozen=True)
class Charge:
    """What one operation cost and the budget it left."""

    cost: int
    budget: Budget


class _ClockedMemoryStorage(MemoryStorage):
    """``limits``' in-process storage for fixed windows, on the limiter's clock instead of
    ``time.time`` (tests move time): a window starts with the first increment of its key
    and ends ``expiry`` seconds later."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock

    async def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        now = self.clock()
        if self.expirations.get(key, 0.0) <= now:
            if len(self.expirations) >= 10_000:
                for old in [k for k, end in self.expirations.items() if end <= now]:
                    del self.expirations[old], self.storage[old]
            self.expirations[key] = now + expiry
            self.storage[key] = 0
        self.storage[key] += amount
        return self.storage[key]

    async def get(self, key: str) -> int:
        if self.expirations.get(key, 0.0) <= self.clock():
            return 0
        return self.storage[key]

    async def get_expiry(self, key: str) -> float:
        now = self.clock()
        return max(self.expirations.get(key, now), now)


class RateLimiter:
    """Fixed windows of ``points`` per key (a viewer), in this process's memory or in Redis;
    fails open to memory while Redis is down (README, 'Limits', "Rate limit")."""

    def __init__(self, points: int, *, storage_url: str = "memory://",
                 clock: Clock = time.time, window_seconds: int = WINDOW_SECONDS) -> None:
        if points <= 0:
            raise ValueError("points must be positive")
        self.points = points
        self.clock = clock
        self.window_seconds = window_seconds
        self.item = RateLimitItemPerSecond(points, window_seconds, namespace="gql_usage")
        self._local = FixedWindowRateLimiter(_ClockedMemoryStorage(clock))
        self._pool: redis.asyncio.ConnectionPool | None = None
        self._shared: FixedWindowRateLimiter | None = None
        self._store = _redacted(storage_url)
        if urlsplit(storage_url).scheme != "memory":
            # A connection the server closed (a Redis restart) is retried once, at once,
            # on a new connection; a timeout is not retried.
            self._pool = redis.asyncio.ConnectionPool.from_url(
                storage_url, socket_timeout=STORE_TIMEOUT_SECONDS,
                socket_connect_timeout=STORE_TIMEOUT_SECONDS,
                retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)))
            # The pool is redis-py's (``implementation="redispy"``), so that it can be
            # closed; ``connection_pool`` is a documented option, typed as a plain value.
            self._shared = FixedWindowRateLimiter(RedisStorage(
                "async+" + storage_url.replace("unix://", "redis+unix://", 1),
                implementation="redispy", wrap_exceptions=True,
                connection_pool=self._pool))  # type: ignore[arg-type]
        self._retry_at: float | None = None  # monotonic time; set while the store is down

    async def peek(self, key: object) -> Budget:
        ids = _identifiers(key)
        return await self._run(lambda limiter: self._budget(limiter, ids))

    async def charge(self, key: object, cost: int) -> tuple[bool, Budget]:
        """Spend ``cost`` if it fits in what is left; (charged?, budget afterwards)."""
        ids = _identifiers(key)
        return await self._run(lambda limiter: self._charge(limiter, ids, cost))

    async def check(self) -> bool:
        """Whether the shared store answers a ping (true in memory); logs if not."""
        if self._shared is None or await self._shared.storage.check():
            return True
        log.warning("rate-limit store %s unreachable; until it answers, budgets are "
                    "counted in each process's memory", self._store)
        return False

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()

    async def _charge(self, limiter: FixedWindowRateLimiter, ids: tuple[str, ...],
                      cost: int) -> tuple[bool, Budget]:
        # ``test`` refuses without writing; ``hit`` (an atomic increment) decides between
        # processes racing for the last points. A hit that overshot is given back, so a
        # refused operation is not charged.
        if await limiter.test(self.item, *ids, cost=cost):
            if await limiter.hit(self.item, *ids, cost=cost):
                return True, await self._budget(limiter, ids)
            await limiter.storage.incr(self.item.key_for(*ids), self.item.get_expiry(),
                                       amount=-cost)
        return False, await self._budget(limiter, ids)

    async def _budget(self, limiter: FixedWindowRateLimiter, ids: tuple[str, ...]) -> Budget:
        reset_at, remaining = await limiter.get_window_stats(self.item, *ids)
        used = self.points - remaining
        if used <= 0:  # no window yet: one would start now
            return Budget(self.points, 0, self.clock() + self.window_seconds)
        return Budget(self.points, used, reset_at)

    async def _run(self, op: Callable[[FixedWindowRateLimiter], Awaitable[_T]]) -> _T:
        shared = self._shared
        if shared is not None and (self._retry_at is None
                                   or time.monotonic() >= self._retry_at):
            try:
                result = await op(shared)
            except (StorageError, RedisError, OSError) as exc:
                if self._retry_at is None:
                    log.warning("rate-limit store %s unreachable (%s); counting budgets in "
                                "this process's memory, retrying every %g s", self._store,
                                exc, STORE_RETRY_SECONDS)
                self._retry_at = time.monotonic() + STORE_RETRY_SECONDS
            else:
                if self._retry_at is not None:
                    log.info("rate-limit store %s reachable again; budgets shared",
                                self._store)
                    self._retry_at = None
                return result
        return await op(self._local)


def _identifiers(key: object) -> tuple[str, ...]:
    return tuple(str(part) for part in key) if isinstance(key, tuple) else (str(key),)


def _redacted(url: str) -> str:
    """``url`` without its password (for logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username or ''}:***@{host}").geturl()


def rate_limit_headers(budget: Budget, cost: int) -> dict[str, str]:
    return {"X-RateLimit-Limit": str(budget.limit),
            "X-RateLimit-Remaining": str(budget.remaining),
            "X-RateLimit-Used": str(budget.used),
            "X-RateLimit-Reset": str(math.ceil(budget.reset_at)),
            "X-Query-Cost": str(cost)}


def viewer_key(viewer: Any) -> tuple[int, int]:
    """Rate-limit key of a viewer: account and user."""
    return (viewer.account.id, viewer.user.id)


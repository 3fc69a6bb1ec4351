"""Tortoise connected to a test database (the fixtures of tests/conftest.py use it)."""

from __future__ import annotations

from tortoise import Tortoise
from tortoise.backends.base.executor import EXECUTOR_CACHE

from gql_usage.storage.db import tortoise_config


async def connect(url: str) -> None:
    """Point Tortoise at ``url`` (closing nothing: the caller closes the previous one)."""
    # Tortoise caches per-model SQL by connection name; tests switch dialects.
    EXECUTOR_CACHE.clear()
    await Tortoise.init(config=tortoise_config(url), _enable_global_fallback=True)

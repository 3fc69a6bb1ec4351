"""A serving process's collector (``gql_usage/gc_tuning.py``): start-up's objects frozen,
the young generation collected less often, the older thresholds kept, and cyclic garbage
made afterwards still collected; an app tunes it at start-up only when told to
(``create_app(tune_gc=True)``, as ``gql-usage serve`` does)."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from support.config import make_settings

from gql_usage.app import create_app
from gql_usage.gc_tuning import YOUNG_THRESHOLD, tune_for_serving


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


def test_start_up_objects_are_frozen_and_thresholds_set(restored_collector: None) -> None:
    _, middle, oldest = gc.get_threshold()
    start_up = _Node()
    kept = weakref.ref(start_up)
    frozen_before = gc.get_freeze_count()
    tune_for_serving()
    assert gc.get_threshold() == (YOUNG_THRESHOLD, middle, oldest)
    assert gc.get_freeze_count() > frozen_before
    del start_up
    gc.collect()
    assert kept() is not None  # frozen: full collections no longer walk it


def test_garbage_made_after_tuning_is_still_collected(restored_collector: None) -> None:
    tune_for_serving()
    garbage = _Node()
    gone = weakref.ref(garbage)
    del garbage
    assert gone() is not None  # a cycle: reference counting cannot free it
    gc.collect()
    assert gone() is None


async def _started_threshold(tune_gc: bool) -> int:
    """The young threshold while an app (no database) is started through ASGI lifespan."""
    app = create_app(make_settings("sqlite://:memory:"), manage_db=False, tune_gc=tune_gc)
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sent: list[str] = []
    started = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])
        started.set()

    await inbox.put({"type": "lifespan.startup"})
    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"},
                                    "state": {}}, inbox.get, send))
    await asyncio.wait_for(started.wait(), 30)
    threshold = gc.get_threshold()[0]
    await inbox.put({"type": "lifespan.shutdown"})
    await asyncio.wait_for(task, 30)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    return threshold


async def test_only_an_app_told_so_tunes_at_start_up(restored_collector: None) -> None:
    gc.set_threshold(700, 10, 10)
    assert await _started_threshold(tune_gc=False) == 700  # the tests' apps
    assert await _started_threshold(tune_gc=True) == YOUNG_THRESHOLD  # gql-usage serve's

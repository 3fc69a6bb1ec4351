"""A serving process's collector (``gql_usage/gc_tuning.py``): start-up's objects frozen,
the young generation collected less often, the older thresholds kept, and cyclic garbage
made afterwards still collected."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

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

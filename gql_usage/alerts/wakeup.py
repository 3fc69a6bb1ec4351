"""A nudge from ingestion to this process's delivery worker: alerts were just recorded.

Delivery also polls (``GQL_USAGE_WEBHOOK_POLL_SECONDS``) for alerts recorded by other
processes; the nudge only makes this process's own alerts go out at once."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

_listeners: list[Callable[[], None]] = []


def alerts_recorded() -> None:
    """Called by ingestion after a transaction that recorded alerts committed."""
    for listener in list(_listeners):
        listener()


@contextlib.contextmanager
def listening(callback: Callable[[], None]) -> Iterator[None]:
    """``callback`` is called on every ``alerts_recorded`` within the block."""
    _listeners.append(callback)
    try:
        yield
    finally:
        _listeners.remove(callback)

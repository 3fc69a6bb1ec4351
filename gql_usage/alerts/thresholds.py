"""Alert thresholds: the account's setting, and which thresholds a total has reached.

``account.alert_thresholds`` holds a JSON list of integer percents (``[80, 100]``).
PostgreSQL ingestion reads it in SQL (``gql_usage.alerts.record``) with the same rule as
``parse_thresholds``: ``THRESHOLDS_PATTERN`` decides whether the text is a valid list.
"""

from __future__ import annotations

from gql_usage.storage.thresholds import (
    DEFAULT_TEXT,
    DEFAULT_THRESHOLDS,
    NUMBER_PATTERN,
    THRESHOLDS_PATTERN,
)
from gql_usage.storage.thresholds import parse as parse_thresholds

__all__ = ["DEFAULT_TEXT", "DEFAULT_THRESHOLDS", "NUMBER_PATTERN", "THRESHOLDS_PATTERN",
           "parse_thresholds", "reached_thresholds"]


def reached_thresholds(used: int, limit: int | None,
                       thresholds: tuple[int, ...]) -> tuple[int, ...]:
    """The thresholds (percents of ``limit``) that ``used`` credits have reached:
    ``used >= limit * threshold / 100``, in exact integers. None for a missing or zero
    limit (no pool, no budget): a percent of nothing is never reached.

    >>> reached_thresholds(800, 1000, (80, 100))
    (80,)
    """
    if limit is None or limit <= 0:
        return ()
    return tuple(t for t in thresholds if t > 0 and used * 100 >= limit * t)

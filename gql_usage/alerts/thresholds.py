"""Alert thresholds: the account's setting, and which thresholds a total has reached.

``account.alert_thresholds`` holds a JSON list of integer percents (``[80, 100]``).
PostgreSQL ingestion reads it in SQL (``gql_usage.alerts.record``) with the same rule as
``parse_thresholds``: ``THRESHOLDS_PATTERN`` decides whether the text is a valid list.
"""

from __future__ import annotations

import re

from gql_usage.storage.thresholds import DEFAULT_TEXT, DEFAULT_THRESHOLDS

__all__ = ["DEFAULT_TEXT", "DEFAULT_THRESHOLDS", "NUMBER_PATTERN", "THRESHOLDS_PATTERN",
           "parse_thresholds", "reached_thresholds"]

#: A JSON list of whole numbers of at most 5 digits (what PostgreSQL also checks, with
#: ``~``, before it reads the numbers). Text that does not match reads as
#: ``DEFAULT_THRESHOLDS``: a damaged setting never stops ingestion nor silences alerts.
#: Character classes are spelled out (``[0-9]``, not ``\d``, which PostgreSQL may match
#: with other scripts' digits that ``::int`` refuses).
_SPACE = r"[ \t\n\r]*"
_PERCENT = "[0-9]{1,5}"
THRESHOLDS_PATTERN = (rf"^{_SPACE}\[{_SPACE}({_PERCENT}{_SPACE}(,{_SPACE}{_PERCENT}{_SPACE})*)?"
                      rf"\]{_SPACE}$")
NUMBER_PATTERN = "[0-9]+"
_VALID = re.compile(THRESHOLDS_PATTERN)
_NUMBER = re.compile(NUMBER_PATTERN)


def parse_thresholds(text: str | None) -> tuple[int, ...]:
    """The percents of ``text``, ascending, each once, 0 left out (``[]``: no alerts).

    >>> parse_thresholds("[100, 80, 80, 0]")
    (80, 100)
    """
    if text is None or not _VALID.match(text):
        return DEFAULT_THRESHOLDS
    return tuple(sorted({int(n) for n in _NUMBER.findall(text)} - {0}))


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

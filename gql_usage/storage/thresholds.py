"""An account's alert thresholds: percents of its credit pool (or of a key's budget) at
which an alert is due (SPEC 6.3). Stored as JSON text in ``account.alert_thresholds``,
sorted; ``PUT /v1/accounts/{accountId}`` validates them (``alertThresholds``).

Read them with ``Account.alert_threshold_percents`` (``gql_usage.storage.models``) or
``parse``: a sorted ``tuple[int, ...]``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

#: Thresholds of an account that set none.
DEFAULT_THRESHOLDS: tuple[int, ...] = (80, 100)
#: The stored text of ``DEFAULT_THRESHOLDS`` (the column's default).
DEFAULT_TEXT = "[80, 100]"
#: Bounds of one threshold (percent) and of the list.
MIN_PERCENT = 1
MAX_PERCENT = 1000
MAX_THRESHOLDS = 10


def problem(values: Iterable[int]) -> str | None:
    """What is wrong with ``values`` as thresholds, or None (bounds, repeats, count)."""
    seen: set[int] = set()
    count = 0
    for value in values:
        count += 1
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be whole percents, not {value!r}"
        if not MIN_PERCENT <= value <= MAX_PERCENT:
            return f"{value} is not a percent from {MIN_PERCENT} to {MAX_PERCENT}"
        if value in seen:
            return f"{value} is listed twice; each percent must be listed once"
        seen.add(value)
    if count > MAX_THRESHOLDS:
        return f"at most {MAX_THRESHOLDS} thresholds, not {count}"
    return None


def dump(values: Iterable[int]) -> str:
    """The stored text of valid ``values`` (sorted); raises ``ValueError`` otherwise."""
    values = list(values)
    wrong = problem(values)
    if wrong is not None:
        raise ValueError(wrong)
    return json.dumps(sorted(values))


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


def parse(text: str | None) -> tuple[int, ...]:
    """The percents stored as ``text``, ascending, each once, 0 left out (``[]``: no
    alerts); the one reading of the setting, which ingestion's SQL mirrors
    (``gql_usage.alerts.record``).

    >>> parse("[100, 80, 80, 0]")
    (80, 100)
    """
    if text is None or not _VALID.match(text):
        return DEFAULT_THRESHOLDS
    return tuple(sorted({int(n) for n in _NUMBER.findall(text)} - {0}))

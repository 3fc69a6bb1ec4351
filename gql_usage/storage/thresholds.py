"""An account's alert thresholds: percents of its credit pool (or of a key's budget) at
which an alert is due (SPEC 6.3). Stored as JSON text in ``account.alert_thresholds``,
sorted; ``PUT /v1/accounts/{accountId}`` validates them (``alertThresholds``).

Read them with ``Account.alert_threshold_percents`` (``gql_usage.storage.models``) or
``parse``: a sorted ``tuple[int, ...]``.
"""

from __future__ import annotations

import json
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


def parse(text: str | None) -> tuple[int, ...]:
    """The thresholds stored as ``text``, sorted (``DEFAULT_THRESHOLDS`` for NULL)."""
    if text is None:
        return DEFAULT_THRESHOLDS
    values = json.loads(text)
    if not isinstance(values, list) or problem(values) is not None:
        raise ValueError(f"stored alert thresholds are not valid: {text[:100]!r}")
    return tuple(sorted(values))

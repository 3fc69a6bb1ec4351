"""Alert thresholds (``gql_usage.alerts.thresholds``): reading the account's setting, and
which thresholds a total has reached (exact integers, whatever the size)."""

from __future__ import annotations

import re

import pytest

from gql_usage.alerts.thresholds import (
    DEFAULT_THRESHOLDS,
    THRESHOLDS_PATTERN,
    parse_thresholds,
    reached_thresholds,
)


@pytest.mark.parametrize(("text", "expected"), [
    ("[80, 100]", (80, 100)),
    ("[100,80]", (80, 100)),
    (" [ 50 , 50, 75 ] ", (50, 75)),
    ("[]", ()),
    ("[0]", ()),
    ("[0, 150]", (150,)),
    ("[99999]", (99999,)),
])
def test_valid_settings(text: str, expected: tuple[int, ...]) -> None:
    assert parse_thresholds(text) == expected


@pytest.mark.parametrize("text", [
    None, "", "80", "[80, 100", "[80.5]", "[1e3]", "[-5]", "[123456]", '["80"]', "[true]",
    "[80,]", "[80]]", "[８０]",  # full-width digits are not ASCII digits
])
def test_anything_else_reads_as_the_default(text: str | None) -> None:
    assert parse_thresholds(text) == DEFAULT_THRESHOLDS == (80, 100)
    if text is not None:  # the pattern PostgreSQL checks says the same
        assert not re.match(THRESHOLDS_PATTERN, text, re.ASCII)


@pytest.mark.parametrize(("used", "limit", "expected"), [
    (0, 1000, ()),
    (799, 1000, ()),
    (800, 1000, (80,)),          # reached exactly
    (999, 1000, (80,)),
    (1000, 1000, (80, 100)),
    (5000, 1000, (80, 100)),
    (1, 3, ()),                  # 33.3 %
    (3, 3, (80, 100)),
    (100, 0, ()),                # no pool: nothing to reach
    (100, None, ()),             # no budget
])
def test_reached_thresholds(used: int, limit: int | None, expected: tuple[int, ...]) -> None:
    assert reached_thresholds(used, limit, (80, 100)) == expected


def test_reached_is_exact_past_float_precision() -> None:
    limit = 2**53 - 1                  # 80 % of it is not a whole number
    eighty = limit * 80 // 100 + 1     # the least whole number at or above 80 %
    assert reached_thresholds(eighty, limit, (80,)) == (80,)
    assert reached_thresholds(eighty - 1, limit, (80,)) == ()
    assert float(eighty - 1) * 100 >= float(limit) * 80  # what floats would get wrong


def test_thresholds_above_100_percent_alert_on_overage() -> None:
    assert reached_thresholds(1500, 1000, (80, 100, 150)) == (80, 100, 150)

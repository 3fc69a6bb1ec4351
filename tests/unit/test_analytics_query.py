"""``gql_usage.analytics.query.prepare`` with a ``WindowSpec`` (the credit pool's burn-rate
window): one statement with the query's other specs, never cached, and only for a
non-empty part of the query's range."""

from __future__ import annotations

import pytest

from gql_usage.analytics.query import _prepare, prepare
from gql_usage.analytics.specs import TotalsSpec, UsageQuery, WindowSpec, spec_order

DAY_US = 86_400 * 1_000_000
QUERY = UsageQuery(3, 1_767_225_600_000_000, 1_767_225_600_000_000 + 31 * DAY_US)
WINDOW = WindowSpec(QUERY.start_us + 12 * DAY_US + 17, QUERY.start_us + 19 * DAY_US + 17)


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
def test_window_and_totals_make_one_statement_that_is_not_cached(dialect: str) -> None:
    cache = _prepare.cache  # type: ignore[attr-defined]
    before = len(cache)
    prepared = prepare(QUERY, [TotalsSpec(), WINDOW], dialect)
    assert prepared.sql is not None
    text = prepared.sql.text
    assert text.startswith("SELECT 0 AS spec") and " UNION ALL SELECT 1 AS spec" in text
    # The window's raw edges (its microsecond bounds) are read from the events.
    assert str(WINDOW.start_us) in text and str(WINDOW.end_us) in text
    assert len(cache) == before  # the clock moves: such a statement is never reused
    prepare(QUERY, [TotalsSpec()], dialect)
    assert len(cache) == before + 1  # the pool's own statement is cached as before


@pytest.mark.parametrize("window", [
    WindowSpec(QUERY.start_us - 1, QUERY.start_us + DAY_US),
    WindowSpec(QUERY.end_us - DAY_US, QUERY.end_us + 1),
    WindowSpec(QUERY.start_us + DAY_US, QUERY.start_us + DAY_US),
])
def test_a_window_outside_the_range_or_empty_is_refused(window: WindowSpec) -> None:
    with pytest.raises(ValueError, match="non-empty part"):
        prepare(QUERY, [TotalsSpec(), window], "postgres")


def test_a_window_sorts_after_the_other_specs() -> None:
    assert sorted([WINDOW, TotalsSpec()], key=spec_order) == [TotalsSpec(), WINDOW]

"""``gql_usage.storage.thresholds``: the stored text of alert thresholds and its checks."""

from __future__ import annotations

import pytest

from gql_usage.storage.thresholds import DEFAULT_TEXT, DEFAULT_THRESHOLDS, dump, parse, problem


def test_default() -> None:
    assert parse(DEFAULT_TEXT) == DEFAULT_THRESHOLDS == (80, 100)
    assert parse(None) == (80, 100)


def test_dump_sorts_and_parse_reads_back() -> None:
    assert dump([1000, 1, 80]) == "[1, 80, 1000]"
    assert parse(dump([1000, 1, 80])) == (1, 80, 1000)
    assert parse("[]") == ()


@pytest.mark.parametrize(("values", "says"), [
    ([0], "0 is not a percent from 1 to 1000"),
    ([1001], "1001 is not a percent"),
    ([5, 5], "5 is listed twice"),
    (list(range(1, 12)), "at most 10 thresholds, not 11"),
    ([True], "must be whole percents"),
    ([1.5], "must be whole percents"),
])
def test_problems_are_named(values: list[object], says: str) -> None:
    found = problem(values)  # type: ignore[arg-type]
    assert found is not None and says in found
    with pytest.raises(ValueError, match=says):
        dump(values)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["not json", "[80, 100", '["80"]', "[80.5]"])
def test_a_damaged_stored_text_reads_as_the_default(text: str) -> None:
    """The one reading of the setting (``gql_usage.alerts.thresholds``): a damaged value
    never stops ingestion nor silences alerts."""
    assert parse(text) == DEFAULT_THRESHOLDS

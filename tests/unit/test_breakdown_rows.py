"""Breakdown rows (``gql_usage.analytics.rows``): joining groups with their items,
sorting (credits, calls, key), ties, shares, the no-user row, empty totals."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from gql_usage.analytics.dimensions import Dimension
from gql_usage.analytics.rows import BreakdownRow, breakdown_rows
from gql_usage.analytics.specs import Totals
from gql_usage.storage.models import NO_USER


@dataclass(frozen=True)
class Item:
    key: str
    name: str


def describe(item: Item) -> tuple[str, str]:
    return item.key, item.name


def test_joins_each_group_with_its_item_and_drops_unknown_ids():
    groups = {3: Totals(2, 10), 1: Totals(5, 30), 7: Totals(1, 10)}
    a, b = Item("/a", "A"), Item("/b", "B")
    rows = breakdown_rows(Dimension.ENDPOINT, groups, [a, b, None], describe)
    # Shares are of every group's credits (50), the unknown id's included.
    assert rows == [BreakdownRow("/b", "B", Totals(5, 30), 60.0, b),
                    BreakdownRow("/a", "A", Totals(2, 10), 20.0, a)]


def test_order_is_credits_then_calls_descending_then_key():
    groups = {1: Totals(1, 5), 2: Totals(3, 5), 3: Totals(3, 5), 4: Totals(9, 4),
              5: Totals(3, 5)}
    items = [Item("e", "e"), Item("b", "b"), Item("a", "a"), Item("z", "z"), Item("B", "B")]
    rows = breakdown_rows(Dimension.SOURCE, groups, items, describe)
    # Ties on credits and calls go by key in code point order ("B" < "a" < "b").
    assert [r.key for r in rows] == ["B", "a", "b", "e", "z"]


def test_calls_without_a_user_are_a_row_only_in_a_user_breakdown():
    groups = {NO_USER: Totals(4, 8), 9: Totals(1, 2)}
    u = Item("VXNlcjp1", "Una")
    rows = breakdown_rows(Dimension.USER, groups, [None, u], describe)
    assert rows == [BreakdownRow("", "No user", Totals(4, 8), 80.0, None),
                    BreakdownRow("VXNlcjp1", "Una", Totals(1, 2), 20.0, u)]
    # id 0 names nothing in any other dimension.
    assert breakdown_rows(Dimension.API_KEY, groups, [None, u], describe) == [
        BreakdownRow("VXNlcjp1", "Una", Totals(1, 2), 20.0, u)]


def test_shares_add_up_to_100():
    groups = {i: Totals(1, 1) for i in range(3)} | {9: Totals(7, 7)}
    items = [Item(str(i), str(i)) for i in (0, 1, 2, 9)]
    rows = breakdown_rows(Dimension.ENDPOINT, groups, items, describe)
    assert [r.share_of_credits for r in rows] == pytest.approx([70.0, 10.0, 10.0, 10.0])
    assert sum(r.share_of_credits for r in rows) == pytest.approx(100.0)


def test_no_credits_means_zero_shares_and_no_groups_no_rows():
    groups = {1: Totals(3, 0), 2: Totals(5, 0)}
    rows = breakdown_rows(Dimension.ENDPOINT, groups, [Item("x", "x"), Item("y", "y")],
                          describe)
    assert [(r.key, r.share_of_credits) for r in rows] == [("y", 0.0), ("x", 0.0)]
    assert breakdown_rows(Dimension.ENDPOINT, {}, [], describe) == []


def test_limit_keeps_the_first_rows_and_shares_use_the_given_total():
    """A top-N answer brings the report's total: shares are of it, not of the rows."""
    groups = {1: Totals(1, 10), 2: Totals(1, 30), 3: Totals(1, 20)}
    items = [Item("a", "a"), Item("b", "b"), Item("c", "c")]
    rows = breakdown_rows(Dimension.ENDPOINT, groups, items, describe, limit=2,
                          total_credits=200)
    assert [(r.key, r.share_of_credits) for r in rows] == [("b", 15.0), ("c", 10.0)]
    assert breakdown_rows(Dimension.ENDPOINT, groups, items, describe, limit=0) == []


def test_items_must_match_the_groups_one_to_one():
    with pytest.raises(ValueError):
        breakdown_rows(Dimension.ENDPOINT, {1: Totals(1, 1)}, [], describe)

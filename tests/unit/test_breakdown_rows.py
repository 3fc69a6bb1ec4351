"""Breakdown rows (``gql_usage.analytics.rows``): joining groups with their items,
sorting (credits, calls, key), ties, shares, the no-user row, empty totals, the Other row."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from gql_usage.analytics.dimensions import Dimension
from gql_usage.analytics.rows import BreakdownRow, breakdown_rows, other_row, with_other_row
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


def test_the_other_row_sums_what_the_rows_leave_of_every_group():
    """A top-2 answer of 5 groups (40 calls, 200 credits in all): Other holds the other 3."""
    groups = {1: Totals(10, 90), 2: Totals(5, 50)}
    items = [Item("a", "A"), Item("b", "B")]
    rows = breakdown_rows(Dimension.ENDPOINT, groups, items, describe, 2, total_credits=200)
    got = with_other_row(rows, 5, Totals(40, 200))
    assert got[:2] == rows
    assert [(r.is_other, r.group_count) for r in rows] == [(False, 1), (False, 1)]
    assert got[2] == BreakdownRow("*", "Other", Totals(25, 60), 30.0, None, is_other=True,
                                  group_count=3)
    assert sum(r.share_of_credits for r in got) == pytest.approx(100.0)


def test_no_cut_no_other_row():
    groups = {1: Totals(1, 3), 2: Totals(2, 1)}
    rows = breakdown_rows(Dimension.SOURCE, groups, [Item("a", "a"), Item("b", "b")], describe)
    assert other_row(rows, 2, Totals(3, 4)) is None
    assert with_other_row(rows, 2, Totals(3, 4)) == rows
    assert with_other_row([], 0, Totals()) == []


def test_the_other_row_of_limit_zero_is_the_whole_report_and_zero_credits_share_zero():
    assert other_row([], 4, Totals(9, 0)) == BreakdownRow(
        "*", "Other", Totals(9, 0), 0.0, None, is_other=True, group_count=4)
    assert other_row([], 4, Totals(9, 12)) == BreakdownRow(
        "*", "Other", Totals(9, 12), 100.0, None, is_other=True, group_count=4)


def test_a_group_with_no_item_is_counted_in_the_other_row():
    """A group whose id names nothing is no row, so it is part of what Other sums."""
    groups = {1: Totals(4, 40), 2: Totals(3, 30)}
    rows = breakdown_rows(Dimension.API_KEY, groups, [Item("a", "a"), None], describe, 2,
                          total_credits=100)
    assert [r.key for r in rows] == ["a"]
    other = other_row(rows, 3, Totals(10, 100))
    assert other is not None
    assert (other.totals, other.group_count, other.share_of_credits) == (Totals(6, 60), 2, 60.0)

"""Breakdown rows: groups joined with what their ids name, with shares, in the API's
order (credits, then calls, both descending, then the row's key)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from gql_usage.analytics.dimensions import Dimension
from gql_usage.analytics.specs import Totals
from gql_usage.storage.models import NO_USER

T = TypeVar("T")


@dataclass(frozen=True)
class BreakdownRow(Generic[T]):
    """One row: ``item`` is what the group's id names (None for calls without a user)."""

    key: str
    label: str
    totals: Totals
    #: Percent of the report's credits, 0..100; 0 when the report has none.
    share_of_credits: float
    item: T | None
    #: The "Other" row (``other_row``), standing for ``group_count`` groups.
    is_other: bool = False
    group_count: int = 1

#: Key and label of the "Other" row (SPEC 6.2).
OTHER_KEY = "*"
OTHER_LABEL = "Other"


def breakdown_rows(dimension: Dimension, groups: Mapping[int, Totals],
                   items: Sequence[T | None], describe: Callable[[T], tuple[str, str]],
                   limit: int | None = None,
                   total_credits: int | None = None) -> list[BreakdownRow[T]]:
    """Rows of ``groups``, whose ids name ``items`` (in the groups' order; None: unknown).

    ``describe`` gives an item's (key, label). A group whose item is unknown is left out,
    except the calls made without a user (SPEC 6.1): key "", label "No user". Shares are
    of ``total_credits`` (default: the groups' sum); ``limit`` keeps the first rows.
    """
    if total_credits is None:
        total_credits = sum(t.credits for t in groups.values())
    rows: list[BreakdownRow[T]] = []
    for item_id, item in zip(groups, items, strict=True):
        if item is not None:
            key, label = describe(item)
        elif dimension is Dimension.USER and item_id == NO_USER:
            key, label = "", "No user"
        else:
            continue
        t = groups[item_id]
        share = 100.0 * t.credits / total_credits if total_credits else 0.0
        rows.append(BreakdownRow(key, label, t, share, item))
    rows.sort(key=lambda r: (-r.totals.credits, -r.totals.calls, r.key))
    return rows if limit is None else rows[:limit]


def other_row(rows: Sequence[BreakdownRow[T]], groups: int,
              totals: Totals) -> BreakdownRow[T] | None:
    """The "Other" row after ``rows`` (the first rows of a breakdown, from ``Top``): the
    ``groups`` groups with calls less the rows shown, and ``totals`` (over every group)
    less theirs, so that the rows and it add up to the report; None when nothing is cut.

    Its share is its credits' share of ``totals``, i.e. the cut rows' shares summed."""
    cut = groups - len(rows)
    if cut <= 0:
        return None
    calls = totals.calls - sum(r.totals.calls for r in rows)
    credits = totals.credits - sum(r.totals.credits for r in rows)
    share = 100.0 * credits / totals.credits if totals.credits else 0.0
    return BreakdownRow(OTHER_KEY, OTHER_LABEL, Totals(calls, credits), share, None,
                        is_other=True, group_count=cut)


def with_other_row(rows: list[BreakdownRow[T]], groups: int,
                   totals: Totals) -> list[BreakdownRow[T]]:
    """``rows`` and, when groups were cut, their "Other" row last (``other_row``)."""
    extra = other_row(rows, groups, totals)
    return rows if extra is None else [*rows, extra]

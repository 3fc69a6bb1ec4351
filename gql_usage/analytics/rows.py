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

"""One set of specs makes one statement, whatever order the resolvers asked in."""

from __future__ import annotations

import itertools

from gql_usage.analytics.dimensions import Dimension
from gql_usage.analytics.query import prepare
from gql_usage.analytics.specs import (
    GroupSpec,
    SeriesSpec,
    TopSpec,
    TotalsSpec,
    UsageQuery,
    spec_order,
)
from gql_usage.calendar import Granularity

SPECS = [TopSpec(Dimension.API_KEY, 5), GroupSpec(Dimension.ENDPOINT),
         SeriesSpec(Granularity.DAY), TotalsSpec(), GroupSpec(Dimension.API_KEY)]
QUERY = UsageQuery(7, 1_767_225_600_000_000, 1_769_904_000_000_000, "Europe/Berlin")


def test_every_order_of_the_same_specs_sorts_alike() -> None:
    expected = [TotalsSpec(), SeriesSpec(Granularity.DAY), GroupSpec(Dimension.API_KEY),
                GroupSpec(Dimension.ENDPOINT), TopSpec(Dimension.API_KEY, 5)]
    for order in itertools.permutations(SPECS):
        assert sorted(order, key=spec_order) == expected


def test_sorted_specs_make_one_statement_text_on_both_dialects() -> None:
    for dialect in ("sqlite", "postgres"):
        texts = set()
        for order in itertools.permutations(SPECS):
            prepared = prepare(QUERY, sorted(order, key=spec_order), dialect)
            assert prepared.sql is not None
            texts.add(prepared.sql.text)
        assert len(texts) == 1

"""Several queries' specs in one statement (``gql_usage.analytics.query.prepare_many``,
used by the aggregates loader for a report and its ``previous`` period): one query alone
makes exactly ``prepare``'s statement (the benchmark's floor SQL), specs are numbered
query after query, a filter matching nothing sends no part, and the loader's order of
queries and specs makes one statement text whatever order they were asked in."""

from __future__ import annotations

import itertools
from dataclasses import replace

from gql_usage.analytics.dimensions import Dimension
from gql_usage.analytics.query import prepare, prepare_many
from gql_usage.analytics.specs import (
    GroupSpec,
    SeriesSpec,
    TopSpec,
    TotalsSpec,
    UsageQuery,
    query_order,
    spec_order,
)
from gql_usage.calendar import Granularity

MARCH = UsageQuery(7, 1_772_323_200_000_000, 1_775_001_600_000_000, "UTC")  # March 2026
FEBRUARY = replace(MARCH, start_us=1_769_904_000_000_000, end_us=MARCH.start_us)
SPECS = [TotalsSpec(), SeriesSpec(Granularity.DAY), TopSpec(Dimension.ENDPOINT, 5)]


def test_one_query_is_prepares_statement() -> None:
    for dialect in ("sqlite", "postgres"):
        one = prepare(MARCH, SPECS, dialect)
        many = prepare_many([(MARCH, SPECS)], dialect)
        assert one.sql is not None and many.sql is not None
        assert many.sql.text == one.sql.text
        assert many.sql.params == one.sql.params


def test_specs_are_numbered_query_after_query() -> None:
    prepared = prepare_many([(FEBRUARY, SPECS), (MARCH, SPECS[:2])], "postgres")
    assert prepared.sql is not None
    text = prepared.sql.text
    for index in range(5):
        assert f"SELECT {index} AS spec" in text
    assert "SELECT 5 AS spec" not in text
    assert text.count(" UNION ALL SELECT ") >= 4
    # Each series has its layout, under its own number: February's 28 days, March's 31.
    assert {i: len(layout.buckets) for i, layout in prepared.layouts.items()} == {1: 28, 4: 31}


def test_a_filter_matching_nothing_sends_no_part() -> None:
    nothing = replace(MARCH, api_key_ids=())
    prepared = prepare_many([(nothing, SPECS), (FEBRUARY, [TotalsSpec()])], "sqlite")
    assert prepared.sql is not None
    assert "SELECT 3 AS spec" in prepared.sql.text
    assert "SELECT 0 AS spec" not in prepared.sql.text
    assert 1 in prepared.layouts  # its series is still laid out (zero-filled)
    assert prepare_many([(nothing, SPECS)], "sqlite").sql is None


def test_any_order_of_queries_and_specs_makes_one_text() -> None:
    asked = [(MARCH, GroupSpec(Dimension.API_KEY)), (FEBRUARY, TotalsSpec()),
             (MARCH, TotalsSpec()), (FEBRUARY, SeriesSpec(Granularity.DAY))]
    texts = set()
    for order in itertools.permutations(asked):
        by_query: dict[UsageQuery, list] = {}
        for query, spec in order:
            by_query.setdefault(query, []).append(spec)
        batch = [(q, sorted(by_query[q], key=spec_order)) for q in sorted(by_query,
                                                                         key=query_order)]
        prepared = prepare_many(batch, "postgres")
        assert prepared.sql is not None
        texts.add(prepared.sql.text)
    assert len(texts) == 1

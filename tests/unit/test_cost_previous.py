"""The query cost (``gql_usage/graphql/limits/cost.py``) of ``UsageReport.previous`` and of
``breakdown(other: true)`` (SPEC 6.2), on parsed documents against the real schema: no
database. ``previous`` is priced as ``Account.usage`` (5 + 1) and its selection over the
previous period (its series count that period's buckets), so asking for both periods
costs about twice one; ``other`` adds the Other row a cut can add. Expected costs are
counted by hand beside each."""

from __future__ import annotations

from test_cost import assess, cost, sizes


def flt(start: str, end: str, tz: str = "UTC") -> str:
    return f'{{from: "{start}", to: "{end}", timeZone: "{tz}"}}'


WEEK = flt("2026-01-01T00:00:00Z", "2026-01-08T00:00:00Z")
MARCH = flt("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z")


def usage(usage_filter: str, selection: str) -> str:
    return f"{{ account {{ usage(filter: {usage_filter}) {{ {selection} }} }} }}"


def test_previous_costs_what_the_report_costs() -> None:
    # account 1 + usage (5 + 1) + previous (5 + 1)
    assert cost(usage(WEEK, "calls previous { calls credits }")) == 1 + 6 + 6
    one = "calls series(granularity: DAY) { start } breakdown(by: ENDPOINT, limit: 3) { key }"
    # usage 6 + series (5 + 7) + breakdown (5 + 3)
    alone = cost(usage(WEEK, one))
    assert alone == 1 + 6 + 12 + 8
    both = cost(usage(WEEK, f"{one} previous {{ {one} }}"))
    assert both == alone + 6 + 12 + 8 == 2 * alone - 1  # the account is counted once


def test_previous_series_count_the_previous_periods_buckets() -> None:
    # March (31 days) -> February (28 days): series (5 + 31) and, under previous, (5 + 28).
    query = usage(MARCH, "series(granularity: DAY) { start } "
                  "previous { series(granularity: DAY) { start } }")
    assert cost(query) == 1 + 6 + (5 + 31) + 6 + (5 + 28)
    # Twice back: January (31 days).
    query = usage(MARCH, "previous { previous { series(granularity: DAY) { start } } }")
    assert cost(query) == 1 + 6 + 6 + 6 + (5 + 31)
    # Not aligned in New York (the filter's zone): the 31 days before, 29 January 00:00Z
    # (28 January 19:00 local) to 1 March 00:00Z: local days 28 Jan .. 28 Feb, 32 buckets.
    query = usage(flt("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z", "America/New_York"),
                  "previous { series(granularity: DAY) { start } }")
    assert cost(query) == 1 + 6 + 6 + (5 + 32)


def test_previous_follows_the_default_time_zone() -> None:
    local = '{from: "2026-03-01T00:00:00", to: "2026-04-01T00:00:00"}'  # no timeZone
    query = usage(local, "previous { series(granularity: DAY) { start } }")
    # March of New York -> February of New York: 28 days.
    assert cost(query, tz="America/New_York") == 1 + 6 + 6 + (5 + 28)
    assert cost(query, tz="Asia/Kolkata") == 1 + 6 + 6 + (5 + 28)


def test_a_previous_period_before_year_one_refuses_the_operation() -> None:
    query = ("{ account { usage(filter: " + flt("0001-01-01T00:00:00Z", "0001-02-01T00:00:00Z")
             + ") { calls before: previous { calls } } } }")
    found = assess(query)
    assert found.refusal is not None
    assert found.refusal.argument == "filter.from"
    assert found.refusal.path == ("account", "usage", "before")
    assert "before the year 1" in found.refusal.detail
    # February of year 1 has a previous month.
    february = query.replace("0001-02-01", "0001-03-01").replace("0001-01-01", "0001-02-01")
    assert cost(february) == 1 + 6 + 6


def breakdown(args: str) -> str:
    return usage(WEEK, f"breakdown({args}) {{ key }}")


def test_other_adds_the_row_a_cut_can_add() -> None:
    base = 1 + 6 + 5  # account 1 + usage (5 + 1) + breakdown's own 5
    assert cost(breakdown("by: ENDPOINT, limit: 3, other: true")) == base + 4
    assert cost(breakdown("by: ENDPOINT, limit: 3, other: false")) == base + 3
    assert cost(breakdown("by: ENDPOINT, limit: 0, other: true")) == base + 1
    assert cost(breakdown("by: ENDPOINT, other: true")) == base + 100  # no limit, no cut
    many = sizes(used_endpoints=250)
    # Never more rows than the breakdown can have: 249 + Other, or 250 uncut.
    assert cost(breakdown("by: ENDPOINT, limit: 249, other: true"), sizes=many) == base + 250
    assert cost(breakdown("by: ENDPOINT, limit: 250, other: true"), sizes=many) == base + 250
    assert cost(breakdown("by: ENDPOINT, limit: 9, other: true"), sizes=many) == base + 10
    query = ("query Q($o: Boolean!) { account { usage(filter: " + WEEK + ") { "
             "breakdown(by: SOURCE, limit: 2, other: $o) { key } } } }")
    assert cost(query, {"o": True}) == base + 3
    assert cost(query, {"o": False}) == base + 2

"""The static query cost (``gql_usage/graphql/limits/cost.py``) on parsed documents against
the real schema: no database, no server. Every expected cost is counted by hand in the
comment beside it (README, 'Limits', "Query cost"): object 1, scalar 0, list
``size x (1 + element)``, usage aggregates +5, unknown list sizes 100."""

from __future__ import annotations

import time
from typing import Any

import pytest
from graphql import DocumentNode, get_operation_ast, parse, validate

from gql_usage.graphql.errors import BAD_USER_INPUT
from gql_usage.graphql.limits.assessments import _ASSESSMENTS, assess_operation
from gql_usage.graphql.limits.cost import (
    UNLIMITED,
    Assessment,
    CostCalculator,
    RefusedArgument,
)
from gql_usage.graphql.limits.expansion import expanded_fields, uses_sized_lists
from gql_usage.graphql.schema import build_schema
from gql_usage.storage.catalogue import ListSizes

SCHEMA = build_schema()._schema


def flt(start: str, end: str, tz: str = "UTC") -> str:
    return f'{{from: "{start}", to: "{end}", timeZone: "{tz}"}}'


WEEK = flt("2026-01-01T00:00:00Z", "2026-01-08T00:00:00Z")


def checked(query: str) -> DocumentNode:
    document = parse(query)
    assert validate(SCHEMA, document) == []
    return document


def assess(query: str, variables: dict[str, Any] | None = None, *, max_cost: int = UNLIMITED,
           sizes: ListSizes | None = None, tz: str = "UTC") -> Assessment:
    document = checked(query)
    operation = get_operation_ast(document)
    assert operation is not None
    found = CostCalculator.assess(SCHEMA, document, operation, variables, tz, max_cost, sizes)
    assert found is not None
    return found


def cost(query: str, variables: dict[str, Any] | None = None, **kw: Any) -> int:
    found = assess(query, variables, **kw)
    assert found.refusal is None and not found.too_costly, found
    return found.cost


def series(granularity: str, usage_filter: str, alias: str = "") -> str:
    return (f"{{ account {{ usage(filter: {usage_filter}) {{ "
            f"{alias}series(granularity: {granularity}) {{ start }} }} }} }}")


def sizes(**kw: int) -> ListSizes:
    values = dict(endpoints=0, sources=0, api_keys=0, api_keys_all=0, used_endpoints=0,
                  used_sources=0, users=0)
    values.update(kw)
    return ListSizes(**values)


# --- objects, scalars, free fields, the minimum ------------------------------------------

def test_objects_cost_one_and_scalars_nothing() -> None:
    assert cost("{ viewer { id name role } }") == 1  # viewer 1
    assert cost("{ viewer { id } account { name timeZone } }") == 2  # viewer 1 + account 1
    assert cost("{ account { creditPool { used } } }") == 2  # account 1 + creditPool 1


def test_every_operation_costs_at_least_one_and_rate_limit_is_free() -> None:
    assert cost("{ __typename }") == 1  # 0, raised to the minimum
    assert cost("{ rateLimit { cost limit remaining } }") == 1  # free, raised to 1
    assert cost("{ viewer { id } rateLimit { cost } }") == 1  # viewer 1 + rateLimit 0
    assert cost("{ __schema { queryType { name } } }") == 1  # introspection 1


def test_aggregates_add_five() -> None:
    # account 1 + usage (5 + 1)
    assert cost(f"{{ account {{ usage(filter: {WEEK}) {{ calls credits }} }} }}") == 7


def test_the_readme_example_costs_131() -> None:
    query = ("{ viewer { id } account { usage(filter: " + WEEK + ") { calls "
             "series(granularity: DAY) { start } breakdown(by: ENDPOINT, limit: 3) "
             "{ key endpoint { path } } } apiKeys { id } } }")
    # viewer 1 + account 1 + usage (5 + 1) + series (5 + 7 x 1)
    # + breakdown (5 + 3 x (1 + endpoint 1)) + apiKeys (100 x 1)
    assert cost(query) == 1 + 1 + 6 + 12 + 11 + 100 == 131


# --- series: bucket counts ---------------------------------------------------------------

@pytest.mark.parametrize(("granularity", "start", "end", "tz", "buckets"), [
    ("HOUR", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", "UTC", 24),
    ("HOUR", "2026-01-01T00:30:00Z", "2026-01-01T03:00:00Z", "UTC", 3),  # 00:30-01, 01, 02
    # 8 March 2026, New York: 02:00 is skipped, the local day has 23 hours.
    ("HOUR", "2026-03-08T00:00:00", "2026-03-09T00:00:00", "America/New_York", 23),
    # 1 November 2026, New York: 01:00-02:00 happens twice, 25 hours.
    ("HOUR", "2026-11-01T00:00:00", "2026-11-02T00:00:00", "America/New_York", 25),
    ("DAY", "2026-01-01T00:00:00Z", "2026-01-08T00:00:00Z", "UTC", 7),
    ("DAY", "2026-01-01T12:00:00Z", "2026-01-03T00:00:00Z", "UTC", 2),  # half a day, a day
    ("DAY", "2026-03-01T00:00:00", "2026-03-15T00:00:00", "America/New_York", 14),
    ("DAY", "2025-01-01T00:00:00Z", "2026-01-01T00:00:00Z", "UTC", 365),
    ("DAY", "2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z", "UTC", 366),
    # Thursday 1 January to Thursday 29 January: Mon 29 Dec (from the 1st), 5, 12, 19, 26.
    ("WEEK", "2026-01-01T00:00:00Z", "2026-01-29T00:00:00Z", "UTC", 5),
    ("WEEK", "2026-01-05T00:00:00Z", "2026-01-19T00:00:00Z", "UTC", 2),  # two whole weeks
    ("MONTH", "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z", "UTC", 12),
    ("MONTH", "2026-01-15T00:00:00Z", "2026-04-10T00:00:00Z", "UTC", 4),  # Jan..Apr, cut
    # 100 years of months.
    ("MONTH", "1950-01-01T00:00:00Z", "2050-01-01T00:00:00Z", "UTC", 1200),
])
def test_a_series_costs_its_buckets(granularity: str, start: str, end: str, tz: str,
                                    buckets: int) -> None:
    # account 1 + usage (5 + 1) + series (5 + buckets x 1)
    assert cost(series(granularity, flt(start, end, tz))) == 1 + 6 + 5 + buckets


def test_a_series_takes_the_range_of_its_usage_filter_and_the_default_time_zone() -> None:
    local = '{from: "2026-03-08T00:00:00", to: "2026-03-09T00:00:00"}'  # no timeZone
    assert cost(series("HOUR", local), tz="America/New_York") == 1 + 6 + 5 + 23
    assert cost(series("HOUR", local), tz="UTC") == 1 + 6 + 5 + 24


def test_two_thousand_buckets_pass_and_one_more_is_refused() -> None:
    # 2026-01-01 + 2,000 hours = 2026-03-25T08:00Z; + 2,001 hours = 09:00Z
    ok = series("HOUR", flt("2026-01-01T00:00:00Z", "2026-03-25T08:00:00Z"))
    assert cost(ok) == 1 + 6 + 5 + 2000
    refused = assess(series("HOUR", flt("2026-01-01T00:00:00Z", "2026-03-25T09:00:00Z"),
                            alias="hourly: "))
    assert refused.refusal is not None and not refused.too_costly
    assert refused.refusal.argument == "granularity"
    assert refused.refusal.path == ("account", "usage", "hourly")
    assert "more than 2,000 HOUR buckets" in refused.refusal.detail


def test_a_range_sure_to_be_too_long_is_refused_without_counting() -> None:
    # Years 1 to 9999 in HOUR buckets: refused by arithmetic, at once.
    query = series("HOUR", flt("0001-01-02T00:00:00Z", "9999-12-30T00:00:00Z",
                               "Pacific/Apia"))
    started = time.perf_counter()
    refused = assess(query)
    assert time.perf_counter() - started < 1.0
    assert refused.refusal is not None and refused.refusal.argument == "granularity"


# --- lists: breakdown, the account's lists, other lists -----------------------------------

def breakdown(args: str, selection: str = "key") -> str:
    return (f"{{ account {{ usage(filter: {WEEK}) {{ breakdown({args}) {{ {selection} }} }} }} }}")


def test_breakdown_costs_its_limit_or_its_rows() -> None:
    base = 1 + 6 + 5  # account 1 + usage (5 + 1) + breakdown's own 5
    assert cost(breakdown("by: ENDPOINT, limit: 3")) == base + 3
    assert cost(breakdown("by: ENDPOINT, limit: 3", "key endpoint { path }")) == base + 3 * 2
    assert cost(breakdown("by: ENDPOINT, limit: 0")) == base + 0
    assert cost(breakdown("by: ENDPOINT")) == base + 100  # rows unknown: 100
    assert cost(breakdown("by: USER, limit: 500")) == base + 100  # min(500, 100)
    many = sizes(used_endpoints=250, api_keys_all=400, used_sources=7, users=120)
    assert cost(breakdown("by: ENDPOINT"), sizes=many) == base + 250
    assert cost(breakdown("by: ENDPOINT, limit: 3"), sizes=many) == base + 3
    assert cost(breakdown("by: ENDPOINT, limit: 1000"), sizes=many) == base + 250
    assert cost(breakdown("by: API_KEY"), sizes=many) == base + 400
    assert cost(breakdown("by: USER"), sizes=many) == base + 120
    assert cost(breakdown("by: SOURCE"), sizes=many) == base + 100  # 7 counts as 100


def spikes(args: str, selection: str = "score") -> str:
    return f"{{ account {{ usage(filter: {WEEK}) {{ spikes({args}) {{ {selection} }} }} }} }}"


def test_spikes_cost_two_aggregates_and_at_most_limit_spikes_of_three_drivers() -> None:
    base = 1 + 6 + 10  # account 1 + usage (5 + 1) + spikes' own: the series, the drivers
    assert cost(spikes("granularity: DAY")) == base + 5  # limit 5 of 7 DAY buckets
    assert cost(spikes("granularity: DAY, limit: 50")) == base + 7  # at most the buckets
    assert cost(spikes("granularity: HOUR, limit: 50")) == base + 50
    assert cost(spikes("granularity: DAY, limit: 0")) == base
    # Each spike: 1 + bucket 1 + drivers 3 x (1 + row 1)
    assert cost(spikes("granularity: DAY, by: USER, limit: 2",
                       "bucket { start } drivers { row { key } }")) == base + 2 * (1 + 1 + 6)


def test_spikes_refuse_a_negative_limit_and_a_range_too_long_with_its_look_back() -> None:
    found = assess(spikes("granularity: DAY, limit: -1"))
    assert found.refusal is not None
    assert (found.refusal.argument, found.refusal.path) == ("limit", ("account", "usage",
                                                                      "spikes"))
    # 1,990 days: a series may have them, spikes' 56 days of look-back pass 2,000.
    long = flt("2020-01-01T00:00:00Z", "2025-06-13T00:00:00Z")
    assert cost(series("DAY", long)) == 1 + 6 + 5 + 1990
    found = assess(f"{{ account {{ usage(filter: {long}) {{ spikes(granularity: DAY) "
                   "{ score } } } }")
    assert found.refusal is not None and found.refusal.argument == "granularity"
    assert "look-back" in found.refusal.detail


def test_the_accounts_lists_cost_their_real_size_at_least_100() -> None:
    many = sizes(endpoints=300, sources=40, api_keys=150, api_keys_all=400)
    assert cost("{ account { apiKeys { id } } }") == 1 + 100
    assert cost("{ account { apiKeys { id } } }", sizes=many) == 1 + 150
    assert cost("{ account { apiKeys(includeRevoked: true) { id } } }", sizes=many) == 1 + 400
    assert cost("{ account { endpoints { path } } }", sizes=many) == 1 + 300
    assert cost("{ account { sources { key } } }", sizes=many) == 1 + 100  # 40 counts as 100
    # Each element's selection counts per element: 150 x (1 + usage (5 + 1)).
    query = f"{{ account {{ apiKeys {{ usage(filter: {WEEK}) {{ calls }} }} }} }}"
    assert cost(query, sizes=many) == 1 + 150 * (1 + 6)


def test_variables_set_arguments() -> None:
    query = ("query Q($limit: Int, $g: Granularity!) { account { usage(filter: " + WEEK +
             ") { breakdown(by: SOURCE, limit: $limit) { key } series(granularity: $g) "
             "{ start } } } }")
    # account 1 + usage 6 + breakdown (5 + limit) + series (5 + buckets)
    assert cost(query, {"limit": 4, "g": "DAY"}) == 1 + 6 + (5 + 4) + (5 + 7)
    assert cost(query, {"limit": None, "g": "HOUR"}) == 1 + 6 + (5 + 100) + (5 + 168)


# --- refusals -----------------------------------------------------------------------------

@pytest.mark.parametrize(("usage_filter", "argument"), [
    (flt("2026-01-01T00:00:00Z", "2026-01-08T00:00:00Z", "Mars/Olympus"), "filter.timeZone"),
    (flt("2026-01-08T00:00:00Z", "2026-01-01T00:00:00Z"), "filter.from"),
    (flt("2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z"), "filter.from"),
    ('{from: "2026-01-01T00:00:00Z", to: "2026-01-08T00:00:00Z", apiKeyIds: ["nope"]}',
     "filter.apiKeyIds[0]"),
])
def test_a_wrong_filter_refuses_the_operation_naming_the_argument(usage_filter: str,
                                                                   argument: str) -> None:
    query = ("{ viewer { id }\n  account { apiKeys { mine: usage(filter: " + usage_filter +
             ") { calls } } } }")
    found = assess(query)
    assert found.refusal is not None
    assert found.refusal.argument == argument
    assert found.refusal.path == ("account", "apiKeys", "mine")
    assert found.refusal.locations == ((2, 35),)  # the `filter:` argument
    error = found.refusal.error()
    assert error.extensions == {"code": BAD_USER_INPUT, "argument": argument}
    assert error.path == ["account", "apiKeys", "mine"]
    assert error.message.startswith(f"account.apiKeys.mine({argument}): ")


def test_a_negative_limit_is_refused_also_through_a_variable() -> None:
    found = assess(breakdown("by: ENDPOINT, limit: -1"))
    assert found.refusal is not None
    assert (found.refusal.argument, found.refusal.detail) == ("limit", "must be 0 or more")
    query = ("query Q($n: Int) { account { usage(filter: " + WEEK + ") { top: breakdown("
             "by: USER, limit: $n) { key } } } }")
    found = assess(query, {"n": -5})
    assert found.refusal is not None
    assert (found.refusal.argument, found.refusal.path) == ("limit", ("account", "usage",
                                                                       "top"))
    document = checked(query)
    operation = get_operation_ast(document)
    assert operation is not None
    with pytest.raises(RefusedArgument, match=r"^account\.usage\.top\(limit\): must be 0"):
        CostCalculator.for_operation(SCHEMA, document, operation, {"n": -5}, "UTC")
    assert CostCalculator.for_operation(SCHEMA, document, operation, {"n": 2}, "UTC") == \
        1 + 6 + 5 + 2


def test_a_skipped_field_is_neither_checked_nor_charged() -> None:
    query = ("query Q($skip: Boolean!) { viewer { id } account { usage(filter: " + WEEK +
             ") { breakdown(by: ENDPOINT, limit: -1) @skip(if: $skip) { key } } } }")
    assert cost(query, {"skip": True}) == 1 + 1 + 6  # viewer, account, usage
    assert assess(query, {"skip": False}).refusal is not None
    query = "{ viewer { id } account @include(if: false) { apiKeys { id } } }"
    assert cost(query) == 1


def test_variables_that_do_not_coerce_are_left_to_execution() -> None:
    document = checked("query Q($n: Int) { account { usage(filter: " + WEEK +
                       ") { breakdown(by: USER, limit: $n) { key } } } }")
    operation = get_operation_ast(document)
    assert operation is not None
    assert CostCalculator.assess(SCHEMA, document, operation, {"n": "many"}, "UTC",
                                 UNLIMITED) is None


# --- the early stop -----------------------------------------------------------------------

def test_the_pass_stops_once_past_the_maximum() -> None:
    query = ("{ a: account { apiKeys { id } } b: account { endpoints { path } } "
             "c: viewer { id } }")
    assert cost(query) == 101 + 101 + 1
    # a (101) fits in 150; b passes it: 101 + 101 reported, c never counted.
    found = assess(query, max_cost=150)
    assert (found.cost, found.too_costly, found.refusal) == (202, True, None)
    # A wrong argument after the field that passes the maximum is not reached.
    bad = ("{ a: account { apiKeys { id } } b: account { usage(filter: " +
           flt("2026-01-01T00:00:00Z", "2026-01-08T00:00:00Z", "Nowhere/Zone") +
           ") { calls } } }")
    assert assess(bad).refusal is not None
    found = assess(bad, max_cost=50)
    assert found.too_costly and found.refusal is None and found.cost == 101


def test_a_long_series_is_too_costly_by_its_bound_alone() -> None:
    # 59 days of hours: 1,416 buckets; account 1 + usage 6 + series (5 + 1,416) = 1,428.
    query = series("HOUR", flt("2026-01-01T00:00:00Z", "2026-03-01T00:00:00Z"))
    assert cost(query) == 1428
    found = assess(query, max_cost=100)
    assert (found.cost, found.too_costly) == (1428, True)
    # 6 aliased series of 1,200 MONTH buckets (5 + 1,200 each). With a maximum of 2,500,
    # two fit (2,410); the third is stopped by its bound, not counted: 36,525 days less 4
    # days of slack, over 31-day months, is at least 1,178 buckets.
    months = flt("1950-01-01T00:00:00Z", "2050-01-01T00:00:00Z")
    copies = " ".join(f"s{i}: series(granularity: MONTH) {{ start }}" for i in range(6))
    query = f"{{ account {{ usage(filter: {months}) {{ {copies} }} }} }}"
    assert cost(query) == 1 + 6 + 6 * 1205
    found = assess(query, max_cost=2500)
    assert (found.cost, found.too_costly) == (1 + 6 + 2 * 1205 + (5 + 1178), True)


# --- fragments ----------------------------------------------------------------------------

def test_fragments_are_followed_and_merged_fields_count_once() -> None:
    keys = "fragment K on Account { apiKeys { id } }"
    assert cost("{ account { ...K } } " + keys) == 1 + 100
    assert cost("{ account { ...K ...K apiKeys { name } } } " + keys) == 1 + 100
    assert cost("{ a: account { ...K } b: account { ...K } } " + keys) == 2 * 101
    assert cost("{ account { ... on Account { endpoints { path } } } }") == 1 + 100


def test_an_interface_costs_its_dearest_type() -> None:
    query = ('{ node(id: "x") { id ... on Account { apiKeys { id } } '
             "... on User { name } } }")
    assert cost(query) == 1 + 100  # node 1 + Account's apiKeys 100
    assert cost('{ node(id: "x") { ... on User { name } } }') == 1


def test_fragment_cycles_are_not_entered_twice() -> None:
    # Invalid (validation refuses it), but the pass must end: the cycle is cut.
    document = parse("{ viewer { ...A } } fragment A on User { ...B id } "
                     "fragment B on User { ...A name }")
    operation = get_operation_ast(document)
    assert operation is not None
    assert CostCalculator.for_operation(SCHEMA, document, operation, None, "UTC") == 1


def fanout(levels: int) -> str:
    """F0 spreads F1 twice, ..., F(levels) is `{ id }`: 2^levels expanded fields."""
    fragments = " ".join(f"fragment F{i} on User {{ ...F{i + 1} ...F{i + 1} }}"
                         for i in range(levels))
    return f"{{ viewer {{ ...F0 }} }} {fragments} fragment F{levels} on User {{ id }}"


def test_expanded_fields_count_every_spread_up_to_the_cap() -> None:
    assert expanded_fields(parse(fanout(0))) == 1 + 1  # viewer + id
    assert expanded_fields(parse(fanout(5))) == 1 + 32
    assert expanded_fields(parse(fanout(13))) == 1 + 8192  # under 10,000
    assert expanded_fields(parse(fanout(14))) > 10_000  # 16,385: past the cap
    assert expanded_fields(parse(fanout(5)), cap=10) > 10
    # The largest operation counts; fragments alone count nothing.
    two = parse("query A { viewer { id } } query B { viewer { id name } account { id } }")
    assert expanded_fields(two) == 5
    assert expanded_fields(parse("fragment K on User { id name }")) == 0
    started = time.perf_counter()
    assert expanded_fields(parse(fanout(60))) > 10_000  # 2^60, memoised per fragment
    assert time.perf_counter() - started < 1.0


def test_sized_lists_are_found_in_operations_and_fragments() -> None:
    assert not uses_sized_lists(parse("{ viewer { id } account { name } }"))
    assert uses_sized_lists(parse("{ account { ...K } } fragment K on Account { sources "
                                  "{ key } }"))
    assert uses_sized_lists(parse("{ account { ... on Account { endpoints { path } } } }"))
    assert uses_sized_lists(parse(breakdown("by: USER")))


# --- the cached assessment ----------------------------------------------------------------

def test_assess_operation_caches_by_text_variables_and_sizes() -> None:
    query = ("query Q($n: Int) { account { usage(filter: " + WEEK +
             ") { breakdown(by: ENDPOINT, limit: $n) { key } } } }")
    document = checked(query)
    operation = get_operation_ast(document)
    assert operation is not None

    def run(n: int, s: ListSizes | None = None) -> Assessment | None:
        return assess_operation(SCHEMA, document, operation, {"n": n}, "UTC", UNLIMITED,
                                query, "Q", s)

    before = _ASSESSMENTS.hits
    first = run(7)
    assert first == Assessment(1 + 6 + 5 + 7)
    assert run(7) == first and _ASSESSMENTS.hits == before + 1
    assert run(8) == Assessment(1 + 6 + 5 + 8)  # other variables: computed
    assert run(700, sizes(used_endpoints=300)) == Assessment(1 + 6 + 5 + 300)
    assert _ASSESSMENTS.hits == before + 1
    refused = run(-1)
    assert refused is not None and refused.refusal is not None
    assert run(-1) == refused and _ASSESSMENTS.hits == before + 2

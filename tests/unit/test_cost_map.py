"""The cost model's schema names, checked when the schema is built
(``gql_usage/graphql/limits/cost_map.py``): a renamed type, field, argument or enum value
stops the start-up, naming the stale entry, instead of silently changing a cost."""

from __future__ import annotations

import re
from pathlib import Path

import graphql
import pytest

from gql_usage.app import create_app
from gql_usage.graphql.limits import cost_map
from gql_usage.graphql.limits.cost_map import COST_MAP, CostMap, StaleCostMap, validate_cost_map
from gql_usage.graphql.schema import build_schema
from gql_usage.settings import Settings

SDL = (Path(__file__).parents[2] / "schema.graphql").read_text()
SCHEMA = build_schema()._schema
NOTHING: frozenset[str] = frozenset()


def test_the_real_schema_has_every_name_the_cost_model_reads() -> None:
    validate_cost_map(SCHEMA)
    validate_cost_map(graphql.build_schema(SDL))  # the published schema too
    assert dict(COST_MAP.fields) == {
        ("Account", "usage"): {"filter"},
        ("ApiKey", "usage"): {"filter"},
        ("Endpoint", "usage"): {"filter"},
        ("UsageReport", "series"): {"granularity"},
        ("UsageReport", "breakdown"): {"by", "limit", "other"},
        ("UsageReport", "previous"): NOTHING,
        ("UsageReport", "spikes"): {"granularity", "limit"},
        ("UsageSpike", "drivers"): NOTHING,
        ("Account", "apiKeys"): {"includeRevoked"},
        ("Account", "alerts"): {"first"},
        ("Account", "endpoints"): NOTHING,
        ("Account", "sources"): NOTHING,
        ("Query", "rateLimit"): NOTHING,
        ("CreditPool", "forecast"): NOTHING,
        ("ApiKey", "budget"): NOTHING,
    }
    assert dict(COST_MAP.enums) == {
        (("UsageReport", "series"), "granularity"): {"HOUR", "DAY", "WEEK", "MONTH"},
        (("UsageReport", "breakdown"), "by"): {"ENDPOINT", "API_KEY", "SOURCE", "USER"},
        (("UsageReport", "spikes"), "granularity"): {"HOUR", "DAY", "WEEK", "MONTH"},
    }


@pytest.mark.parametrize(("entry", "message"), [
    ((("Acount", "usage"), NOTHING), "names Acount.usage, but the schema has no type Acount"),
    ((("UsageFilter", "from"), NOTHING), "names UsageFilter.from, but UsageFilter is not an "
                                         "object type"),
    ((("Account", "usages"), NOTHING), "names Account.usages, but Account has no field "
                                       "usages"),
    ((("UsageReport", "breakdown"), frozenset({"by", "limt"})),
     "reads UsageReport.breakdown(limt:), but the field has no argument limt"),
    ((("Account", "apiKeys"), frozenset({"revoked"})),
     "reads Account.apiKeys(revoked:), but the field has no argument revoked"),
])
def test_a_stale_field_entry_is_named(entry: tuple[tuple[str, str], frozenset[str]],
                                      message: str) -> None:
    fields = {**COST_MAP.fields, entry[0]: entry[1]}
    with pytest.raises(StaleCostMap, match=re.escape(message)):
        validate_cost_map(SCHEMA, CostMap(fields))


@pytest.mark.parametrize(("entry", "priced", "message"), [
    ((("UsageReport", "series"), "granularity"), frozenset({"HOUR", "DAY", "WEEK"}),
     "unpriced ['MONTH'], stale []"),
    ((("UsageReport", "series"), "granularity"),
     frozenset({"HOUR", "DAY", "WEEK", "MONTH", "YEAR"}), "unpriced [], stale ['YEAR']"),
    ((("UsageReport", "breakdown"), "by"), frozenset({"ENDPOINT", "APIKEY", "SOURCE", "USER"}),
     "prices UsageReport.breakdown(by:) for APIKEY, ENDPOINT, SOURCE, USER, but the enum "
     "UsageDimension has API_KEY, ENDPOINT, SOURCE, USER: unpriced ['API_KEY'], "
     "stale ['APIKEY']"),
    ((("UsageReport", "breakdown"), "limit"), frozenset({"1"}),
     "prices the values of UsageReport.breakdown(limit:), but the argument's type Int is "
     "not an enum"),
    ((("UsageReport", "breakdown"), "groupBy"), frozenset({"USER"}),
     "prices the values of UsageReport.breakdown(groupBy:), but the schema has no such "
     "argument"),
])
def test_a_stale_enum_entry_is_named(entry: tuple[tuple[str, str], str], priced: frozenset[str],
                                     message: str) -> None:
    with pytest.raises(StaleCostMap, match=re.escape(message)):
        validate_cost_map(SCHEMA, CostMap(COST_MAP.fields, {**COST_MAP.enums, entry: priced}))


@pytest.mark.parametrize(("old", "new", "message"), [
    ("UsageReport", "UsageSummary", "the schema has no type UsageReport"),  # everywhere
    ("  sources: [Source!]!", "  origins: [Source!]!", "Account has no field sources"),
    ("apiKeys(includeRevoked:", "apiKeys(withRevoked:", "Account.apiKeys(includeRevoked:)"),
    ("series(granularity:", "series(grain:", "UsageReport.series(granularity:)"),
    ("""(batched with every other's).\"\"\"\n  usage(filter:""",
     """(batched with every other's).\"\"\"\n  usage(where:""", "Endpoint.usage(filter:)"),
    ("  API_KEY\n", "  KEY\n", "unpriced ['KEY'], stale ['API_KEY']"),
    ("  MONTH\n", "  MONTH\n  YEAR\n", "unpriced ['YEAR'], stale []"),
])
def test_a_renamed_schema_name_is_caught(old: str, new: str, message: str) -> None:
    assert old in SDL, old
    renamed = graphql.build_schema(SDL.replace(old, new))
    with pytest.raises(StaleCostMap, match=re.escape(message)):
        validate_cost_map(renamed)


def test_building_the_schema_or_the_app_stops_on_a_stale_entry(
        monkeypatch: pytest.MonkeyPatch) -> None:
    stale = CostMap({**COST_MAP.fields, ("UsageReport", "topRows"): NOTHING}, COST_MAP.enums)
    monkeypatch.setattr(cost_map, "COST_MAP", stale)
    message = "the cost model names UsageReport.topRows, but UsageReport has no field topRows"
    with pytest.raises(StaleCostMap, match=re.escape(message)):
        build_schema()
    settings = Settings.model_construct(jwt_secret="x" * 32, service_token="y" * 32)
    with pytest.raises(StaleCostMap, match=re.escape(message)):
        create_app(settings, manage_db=False)

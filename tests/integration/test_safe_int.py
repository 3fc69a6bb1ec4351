"""Numbers past 2^31 (SPEC 6.1): ``SafeInt``, a whole number in ±(2^53 − 1).

An account whose events add up past 2,147,483,647 credits reads its totals exactly, on
both databases, through every field that counts: the report's totals, its series and
breakdowns, the credit pool, ``ApiKey.usage`` and ``Endpoint.usage``. Past 2^53 − 1 a
number cannot be sent exactly: it is a coded error, never a rounded number. The fast
execution of plain objects answers exactly like graphql-core's own for SafeInt values.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import graphql
import pytest
import strawberry
from strawberry.schema.config import StrawberryConfig
from support.helpers import event, gid, gql, ingest, make_account

from gql_usage.analytics.dimensions import Dimension
from gql_usage.analytics.query import aggregate
from gql_usage.analytics.specs import (
    GroupSpec,
    SeriesPoint,
    SeriesSpec,
    SpikeDriversSpec,
    Top,
    TopSpec,
    Totals,
    TotalsSpec,
    UsageQuery,
    WindowSpec,
)
from gql_usage.calendar import Granularity, to_us
from gql_usage.graphql import scalars
from gql_usage.graphql.execution import FastExecutionContext
from gql_usage.graphql.scalars import MAX_SAFE_INT, SCALAR_MAP, SafeInt
from gql_usage.storage.cube import compact_all
from gql_usage.storage.models import Account

FILTER = '{from: "2026-01-01T00:00:00Z", to: "2026-02-01T00:00:00Z"}'
GRANTED = 5_000_000_007  # itself past 2^31
#: (id, key, endpoint, credits, occurred at): two events of 1.2 billion and more.
EVENTS = [
    ("e1", "k1", "/v2/person", 1_200_000_001, "2026-01-03T10:00:00Z"),
    ("e2", "k1", "/v2/person", 1_200_000_002, "2026-01-03T11:00:00Z"),
    ("e3", "k2", "/v2/company", 2_147_483_647, "2026-01-04T09:00:00Z"),
    ("e4", "k2", "/v2/person", 999_999_999_999, "2026-01-20T23:59:59Z"),
    ("e5", "k1", "/v2/company", 7, "2026-01-31T12:00:00Z"),
]


def _sum(**where: str) -> dict[str, int]:
    columns = {"key": 1, "endpoint": 2}
    chosen = [e for e in EVENTS if all(e[columns[k]] == v for k, v in where.items())]
    return {"calls": len(chosen), "credits": sum(e[3] for e in chosen)}


async def _setup(client: Any, granted: int = GRANTED) -> None:
    await make_account(client, "acme", keys=["k1", "k2"], users=[("admin", "ADMIN")],
                       granted=granted)
    result = await ingest(client, [event(i, "acme", k, "admin", ep, "api", c, at)
                                   for i, k, ep, c, at in EVENTS])
    assert result == {"accepted": len(EVENTS), "duplicates": 0, "rejected": []}


def test_the_data_really_is_past_32_bits():
    """Sanity check: the totals below cannot be a GraphQL Int."""
    assert _sum()["credits"] > 2**32 and _sum(key="k1")["credits"] > 2**31
    assert _sum(endpoint="/v2/person")["credits"] > 2**31 and GRANTED > 2**32


async def test_usage_totals_series_and_breakdowns_are_exact(client):
    await _setup(client)
    body = await gql(client, f"""{{ account {{ usage(filter: {FILTER}) {{ calls credits
        series(granularity: DAY) {{ start calls credits }}
        byEndpoint: breakdown(by: ENDPOINT) {{ key calls credits }}
        byKey: breakdown(by: API_KEY) {{ key calls credits }} }} }} }}""")
    assert "errors" not in body, body
    usage = body["data"]["account"]["usage"]
    assert {"calls": usage["calls"], "credits": usage["credits"]} == _sum()
    days: dict[str, dict[str, int]] = {}
    for _i, _k, _ep, credits, at in EVENTS:
        day = days.setdefault(f"{at[:10]}T00:00:00+00:00", {"calls": 0, "credits": 0})
        day["calls"] += 1
        day["credits"] += credits
    nonzero = {b["start"]: {"calls": b["calls"], "credits": b["credits"]}
               for b in usage["series"] if b["calls"]}
    assert nonzero == days
    assert len(usage["series"]) == 31
    by_endpoint = [{"key": p, **_sum(endpoint=p)} for p in ("/v2/person", "/v2/company")]
    assert usage["byEndpoint"] == sorted(by_endpoint, key=lambda r: -r["credits"])
    by_key = [{"key": gid("ApiKey", k), **_sum(key=k)} for k in ("k1", "k2")]
    assert usage["byKey"] == sorted(by_key, key=lambda r: -r["credits"])
    # The numbers travel as JSON integers, not strings or floats.
    assert all(type(r["credits"]) is int for r in usage["byKey"])


async def test_every_aggregate_is_a_python_int_raw_and_cubed(client):
    """The analytics statement's sums arrive as ``int`` (PostgreSQL sums a BIGINT column
    as NUMERIC: a ``Decimal`` that compares equal but is not an int), for every kind of
    answer, both while the account is answered from raw events and once it is cubed."""
    await _setup(client)
    account = await Account.get(external_id="acme")
    start = to_us(datetime(2026, 1, 1, tzinfo=UTC))
    end = to_us(datetime(2026, 2, 1, tzinfo=UTC))
    day = 86_400 * 1_000_000
    query = UsageQuery(account.id, start, end)
    specs = [TotalsSpec(), SeriesSpec(Granularity.DAY), GroupSpec(Dimension.ENDPOINT),
             TopSpec(Dimension.API_KEY, 1), WindowSpec(start + 2 * day, start + 4 * day),
             SpikeDriversSpec(Dimension.ENDPOINT, ((start + 2 * day, start + 3 * day),
                                                   (start + 3 * day, start + 4 * day)),
                              ((1, (0,)),), 2)]

    def numbers(answer: object) -> list[object]:
        if isinstance(answer, Totals):
            return [answer.calls, answer.credits]
        if isinstance(answer, Top):
            return [answer.groups, *numbers(answer.totals),
                    *(n for t in answer.rows.values() for n in numbers(t))]
        if isinstance(answer, dict):
            return [n for v in answer.values() for n in numbers(v)]
        if isinstance(answer, list):
            return [n for v in answer for n in
                    ([v.calls, v.credits] if isinstance(v, SeriesPoint) else numbers(v))]
        if isinstance(answer, tuple):  # a driver's (calls, credits)
            return list(answer)
        raise AssertionError(f"unexpected answer {answer!r}")

    for cube_after_events in (None, 0):
        if cube_after_events is not None:
            await compact_all(cube_after_events=cube_after_events)
        answers = await aggregate(query, specs)
        values = [n for a in answers for n in numbers(a)]
        assert values and all(type(n) is int for n in values), answers
        totals, _, by_endpoint, top, window, _ = answers
        assert (totals.calls, totals.credits) == tuple(_sum().values())
        assert top.totals == totals and top.groups == 2
        assert window == Totals(3, 1_200_000_001 + 1_200_000_002 + 2_147_483_647)  # e1-e3
        assert sum(t.credits for t in by_endpoint.values()) == _sum()["credits"]


async def test_credit_pool_is_exact(client):
    await _setup(client)
    body = await gql(client, "{ account { creditPool { granted used remaining overage } } }")
    used = _sum()["credits"]
    assert body == {"data": {"account": {"creditPool": {
        "granted": GRANTED, "used": used, "remaining": max(GRANTED - used, 0),
        "overage": max(used - GRANTED, 0)}}}}
    assert used > GRANTED  # overage is past 2^31 as well


async def test_per_key_and_per_endpoint_usage_are_exact(client):
    await _setup(client)
    body = await gql(client, f"""{{ account {{
        apiKeys {{ id usage(filter: {FILTER}) {{ calls credits }} }}
        endpoints {{ path usage(filter: {FILTER}) {{ calls credits }} }} }}
        node(id: "{gid("ApiKey", "k2")}") {{ ... on ApiKey {{
            usage(filter: {FILTER}) {{ calls credits }} }} }} }}""")
    assert "errors" not in body, body
    assert body["data"]["account"]["apiKeys"] == [
        {"id": gid("ApiKey", k), "usage": _sum(key=k)} for k in ("k1", "k2")]
    endpoints = {e["path"]: e["usage"] for e in body["data"]["account"]["endpoints"]
                 if e["usage"]["calls"]}
    assert endpoints == {p: _sum(endpoint=p) for p in ("/v2/company", "/v2/person")}
    assert body["data"]["node"] == {"usage": _sum(key="k2")}


async def test_a_total_past_2_53_is_a_coded_error_never_a_rounded_number(client):
    """9,008 events of 10^12 credits (ingestion's cap per event) add up past 2^53 − 1:
    the credits cannot be sent exactly, so the field is an error coded
    NUMBER_OUT_OF_RANGE (the report is nulled), never a float or a wrapped number; the
    call count, far below the limit, is still answered on its own."""
    await make_account(client, "acme", keys=["k1"], users=[("admin", "ADMIN")])
    n = MAX_SAFE_INT // 10**12 + 1
    assert n * 10**12 > MAX_SAFE_INT >= (n - 1) * 10**12
    result = await ingest(client, [event(f"big{i}", "acme", "k1", "admin", "/v2/person",
                                         "api", 10**12, "2026-01-10T00:00:00Z")
                                   for i in range(n)])
    assert result["accepted"] == n
    body = await gql(client, f"""{{ viewer {{ name }} account {{
        usage(filter: {FILTER}) {{ calls credits }} }}
        calls: account {{ usage(filter: {FILTER}) {{ calls }} }} }}""")
    assert body["data"] == {"viewer": {"name": "User admin"}, "account": {"usage": None},
                            "calls": {"usage": {"calls": n}}}
    assert [(e["path"], e["extensions"]["code"]) for e in body["errors"]] == [
        (["account", "usage", "credits"], "NUMBER_OUT_OF_RANGE")]
    assert str(n * 10**12) in body["errors"][0]["message"]


# --- The scalar itself, and fast execution ----------------------------------------------

@pytest.mark.parametrize("value", [0, 1, -1, 2**31, 2**32 + 5, MAX_SAFE_INT, -MAX_SAFE_INT])
def test_whole_numbers_in_range_are_themselves(value):
    assert scalars.serialize(value) == value and type(scalars.serialize(value)) is int
    assert scalars.parse_value(value) == value
    assert scalars.parse_literal(graphql.parse_value(str(value))) == value


@pytest.mark.parametrize("value", [MAX_SAFE_INT + 1, -MAX_SAFE_INT - 1, 2**63, 10**30])
def test_numbers_out_of_range_are_refused(value):
    with pytest.raises(scalars.NumberOutOfRange, match=str(value)):
        scalars.serialize(value)
    with pytest.raises(ValueError, match="outside SafeInt's range"):
        scalars.parse_value(value)
    with pytest.raises(ValueError, match="outside SafeInt's range"):
        scalars.parse_literal(graphql.parse_value(str(value)))


@pytest.mark.parametrize("value", [True, 1.5, "12", None, float(2**60)])
def test_non_integers_are_refused(value):
    with pytest.raises((TypeError, ValueError)):
        scalars.serialize(value)
    with pytest.raises((TypeError, ValueError)):
        scalars.parse_value(value)


@strawberry.type
class Figure:
    label: str
    amount: SafeInt


AMOUNTS = {
    "small": [1, 2, 3],
    "past 32 bits": [2**31, 2**40 + 1, MAX_SAFE_INT, -MAX_SAFE_INT],
    "past 53 bits": [5, MAX_SAFE_INT + 1, 7],
    "a float": [5, 2.0**40, 7],
    "a bool": [True, 1],
}


@strawberry.type
class Query:
    @strawberry.field
    def figures(self, kind: str) -> list[Figure]:
        return [Figure(label=f"f{i}", amount=a) for i, a in enumerate(AMOUNTS[kind])]

    @strawberry.field
    def echo(self, amount: SafeInt) -> SafeInt:
        return amount


def _answer(schema: strawberry.Schema, document: str,
            variables: dict[str, Any] | None = None) -> tuple[object, list[tuple[str, object]]]:
    result = schema.execute_sync(document, variable_values=variables)
    return result.data, [(e.message, e.path) for e in result.errors or []]


@pytest.mark.parametrize("kind", list(AMOUNTS))
def test_fast_execution_answers_like_graphql_core(kind):
    """A SafeInt in range is its own output value on the fast path; anything else takes
    the general path, which answers (or refuses) exactly as graphql-core does."""
    config = StrawberryConfig(scalar_map=SCALAR_MAP)
    plain = strawberry.Schema(query=Query, config=config)
    fast = strawberry.Schema(query=Query, config=config,
                             execution_context_class=FastExecutionContext)
    document = f'{{ figures(kind: "{kind}") {{ label amount }} }}'
    assert _answer(fast, document) == _answer(plain, document)
    data, errors = _answer(fast, document)
    if kind in ("small", "past 32 bits"):
        assert errors == [] and data == {"figures": [
            {"label": f"f{i}", "amount": a} for i, a in enumerate(AMOUNTS[kind])]}
    else:
        assert data is None and errors, kind


def test_safe_int_arguments():
    """As an argument: integer literals and variables in range; anything else is a
    validation or variable error naming SafeInt."""
    schema = strawberry.Schema(query=Query, config=StrawberryConfig(scalar_map=SCALAR_MAP))
    assert _answer(schema, f"{{ echo(amount: {MAX_SAFE_INT}) }}") == (
        {"echo": MAX_SAFE_INT}, [])
    assert _answer(schema, "query($a: SafeInt!) { echo(amount: $a) }",
                   {"a": 2**40}) == ({"echo": 2**40}, [])
    for literal in (str(MAX_SAFE_INT + 1), "1.5", '"3"'):
        data, errors = _answer(schema, f"{{ echo(amount: {literal}) }}")
        assert data is None and errors and "SafeInt" in errors[0][0], literal
    data, errors = _answer(schema, "query($a: SafeInt!) { echo(amount: $a) }",
                           {"a": 2**53})
    assert data is None and errors and "SafeInt" in errors[0][0]
